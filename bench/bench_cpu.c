/* moe-bench, CPU mode: host buffers, clock_gettime around each call, median over iterations. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench.h"
#include "report.h"
#include "roofline.h"


/* Host buffers of one preset, sized for the largest T. */
typedef struct {
  void *x, *y, *expert_out, *shared_out, *workspace;
  float *x_f32, *weights;
  int32_t *ids;
  int64_t *offsets, *sorted, *pair_rows;
  size_t workspace_bytes;
  int64_t counts_e[4096], dropped_e[4096];
  float prob_mean[4096];
} cpuBuffers;

static void *aligned(size_t bytes) {
  size_t n = (bytes + 255) / 256 * 256;
  void *p = aligned_alloc(256, n ? n : 256);
  if (!p) {
    fprintf(stderr, "moe-bench: out of host memory (%zu bytes)\n", bytes);
    exit(1);
  }
  return p;
}

static void alloc_buffers(cpuBuffers *b, moeLayer_t layer, const benchDims *d, int32_t K,
                          int64_t Tmax, size_t es) {
  const int64_t Tr = Tmax * d->heads; /* (sub-)tokens the router sees */
  b->x = aligned((size_t)(Tmax * d->H) * es);
  b->y = aligned((size_t)(Tmax * d->H) * es);
  b->x_f32 = aligned((size_t)(Tmax * d->H) * sizeof(float));
  b->shared_out = aligned((size_t)(Tmax * d->H) * es);
  b->expert_out = aligned((size_t)(Tr * K * d->Hr) * es);
  b->ids = aligned((size_t)(Tr * K) * sizeof(int32_t));
  b->weights = aligned((size_t)(Tr * K) * sizeof(float));
  b->offsets = aligned((size_t)(d->E + 1) * sizeof(int64_t));
  b->sorted = aligned((size_t)(Tr * K) * sizeof(int64_t));
  b->pair_rows = aligned((size_t)(Tr * K) * sizeof(int64_t));
  /* Sized in tokens: it already covers the Tr sub-tokens that the stages called alone see. */
  bench_check_status(moeLayerGetWorkspaceSize(layer, Tmax, &b->workspace_bytes), "moeLayerGetWorkspaceSize");
  b->workspace = aligned(b->workspace_bytes);
}

static void free_buffers(cpuBuffers *b) {
  void *p[] = {b->x, b->y, b->x_f32, b->shared_out, b->expert_out, b->ids, b->weights,
               b->offsets, b->sorted, b->pair_rows, b->workspace};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; ++i) free(p[i]);
}

/* One pass of the stages, each timed; t[] receives microseconds (shared: < 0 if none). */
static void run_stages(moeLayer_t layer, const benchDims *d, int64_t T, cpuBuffers *b, double t[]) {
  const int64_t Tr = T * d->heads;
  const int shared = d->S > 0 && d->heads == 1;
  double t0 = bench_now_us();
  bench_check_status(moeLayerRoute(layer, Tr, b->x, b->ids, b->weights, NULL, b->workspace,
                                   b->workspace_bytes, NULL), "moeLayerRoute");
  double t1 = bench_now_us();
  bench_check_status(moeLayerPermute(layer, Tr, b->ids, b->offsets, b->sorted, b->pair_rows,
                                     b->workspace, b->workspace_bytes, NULL), "moeLayerPermute");
  double t2 = bench_now_us();
  bench_check_status(moeLayerExperts(layer, Tr, b->x, b->weights, b->offsets, b->sorted,
                                     b->expert_out, b->workspace, b->workspace_bytes, NULL),
                     "moeLayerExperts");
  double t3 = bench_now_us();
  if (shared)
    bench_check_status(moeLayerSharedExperts(layer, T, b->x, b->shared_out, b->workspace,
                                             b->workspace_bytes, NULL), "moeLayerSharedExperts");
  double t4 = bench_now_us();
  bench_check_status(moeLayerCombine(layer, Tr, b->expert_out, b->pair_rows, b->weights,
                                     shared ? b->shared_out : NULL, b->y, NULL), "moeLayerCombine");
  double t5 = bench_now_us();
  t[BENCH_STAGE_ROUTE] = t1 - t0;
  t[BENCH_STAGE_PERMUTE] = t2 - t1;
  t[BENCH_STAGE_EXPERTS] = t3 - t2;
  t[BENCH_STAGE_SHARED] = shared ? t4 - t3 : -1.0;
  t[BENCH_STAGE_COMBINE] = t5 - t4;
}

static double forward_us(moeLayer_t layer, int64_t T, cpuBuffers *b, const moeRouterStats_t *stats) {
  double t0 = bench_now_us();
  bench_check_status(moeLayerForward(layer, T, b->x, b->y, stats, b->workspace, b->workspace_bytes,
                                     NULL), "moeLayerForward");
  return bench_now_us() - t0;
}

static void bench_one(const benchOptions *opt, benchReport *rep, benchSource *p,
                      moeLayer_t layer, const moeLayerConfig_t *cfg, const benchDims *d, int32_t K,
                      int scale, int64_t T, cpuBuffers *b) {
  benchRow row;
  memset(&row, 0, sizeof row);
  snprintf(row.preset, sizeof row.preset, "%s", p->name);
  snprintf(row.backend, sizeof row.backend, "cpu");
  snprintf(row.dtype, sizeof row.dtype, "%s", bench_dtype_name(cfg->dtype));
  snprintf(row.routing, sizeof row.routing, "%s", bench_routing_name(cfg->routing));
  row.scale = scale;
  row.T = T, row.H = d->H, row.I = d->I, row.Is = d->S ? d->Is : 0;
  row.E = d->E, row.K = K, row.S = d->S, row.heads = d->heads;
  row.input_buffers = 1;
  row.floor_us = row.roofline_frac = -1.0;
  for (int s = 0; s < BENCH_NUM_STAGES; ++s) row.stage_us[s] = -1.0;

  bench_make_tokens(T, d->H, cfg->dtype, opt->seed + (uint64_t)T, b->x_f32, b->x);
  /* Poison y (all-ones bytes are NaN in every dtype): an element forward never writes fails
   * --check instead of passing on a stale value. */
  memset(b->y, 0xff, (size_t)(T * d->H) * bench_dtype_size(cfg->dtype));

  /* Warm-up; the first call also sizes the automatic iteration count (about 1 s per T). */
  double first = forward_us(layer, T, b, NULL);
  for (int i = 1; i < (opt->warmup > 0 ? opt->warmup : 1); ++i) forward_us(layer, T, b, NULL);
  int iters = opt->iters;
  if (iters <= 0) {
    iters = (int)((opt->max_time > 0 ? opt->max_time : 1.0) * 1e6 / (first > 1.0 ? first : 1.0));
    iters = iters < 3 ? 3 : iters > 100 ? 100 : iters;
  }
  double *times = bench_xmalloc((size_t)iters * sizeof(double));
  for (int i = 0; i < iters; ++i) times[i] = forward_us(layer, T, b, NULL);
  row.iters = iters;
  row.median_us = bench_median(times, iters);
  row.min_us = times[0];
  row.max_us = times[iters - 1];

  /* --check on the output of the last timed forward. */
  if (opt->check) bench_reference_check(cfg, p, opt->seed, T, b->x_f32, b->y, opt->check_tokens, &row);

  /* Stages one by one (same inputs), then the routing output for experts hit. */
  if (opt->stages) {
    int sit = iters < 20 ? iters : 20;
    double *st = bench_xmalloc((size_t)sit * BENCH_NUM_STAGES * sizeof(double));
    double one[BENCH_NUM_STAGES];
    for (int i = 0; i < sit; ++i) {
      run_stages(layer, d, T, b, one);
      for (int s = 0; s < BENCH_NUM_STAGES; ++s) st[s * sit + i] = one[s];
    }
    for (int s = 0; s < BENCH_NUM_STAGES; ++s)
      row.stage_us[s] = one[s] < 0 ? -1.0 : bench_median(st + s * sit, sit);
    free(st);
  } else {
    bench_check_status(moeLayerRoute(layer, T * d->heads, b->x, b->ids, b->weights, NULL,
                                     b->workspace, b->workspace_bytes, NULL), "moeLayerRoute");
  }
  int64_t sel = 0;
  row.experts_hit = bench_count_hit(b->ids, T * d->heads * K, d->E, &sel);
  row.selections = (double)sel;

  benchWork w;
  bench_work(cfg, T, row.selections, row.experts_hit, &w);
  row.flops = w.flops;
  row.bytes = w.bytes;
  row.tokens_per_s = (double)T / (row.median_us * 1e-6);
  row.flop_rate = w.flops / (row.median_us * 1e-6);
  row.byte_rate = w.bytes / (row.median_us * 1e-6);

  if (opt->stats) {
    float scalars[moeStatScalarCount];
    moeRouterStats_t stats = MOE_ROUTER_STATS_INIT;
    stats.expert_counts = b->counts_e;
    stats.dropped_counts = b->dropped_e;
    stats.expert_prob_mean = b->prob_mean;
    stats.scalars = scalars;
    memset(b->dropped_e, 0, sizeof b->dropped_e);
    forward_us(layer, T, b, &stats);
    bench_fill_stats(&row, d->E, b->counts_e, b->dropped_e, scalars);
  }
  free(times);
  bench_report_add(rep, &row);
}

int bench_run_cpu(const benchOptions *opt, benchReport *rep) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  cc.num_threads = opt->threads;
  moeContext_t ctx = NULL;
  bench_check_status(moeContextCreate(&ctx, &cc), "moeContextCreate(cpu)");

  snprintf(rep->env.mode, sizeof rep->env.mode, "cpu");
#ifdef _OPENMP
  rep->env.threads = opt->threads > 0 ? opt->threads : omp_get_max_threads();
#else
  rep->env.threads = 1;
#endif
  if (!opt->quiet) bench_report_print_env(rep);

  const int64_t *Ts;
  int64_t Tmax;
  const int nT = bench_token_counts(opt, 0, &Ts, &Tmax);

  for (int pi = 0; pi < bench_source_count(opt); ++pi) {
    benchSource src;
    char err[320];
    if (bench_source_open(opt, pi, 0, &src, err, sizeof err) != 0) {
      fprintf(stderr, "moe-bench: %s\n", err);
      exit(2);
    }
    const benchSource *p = &src;
    const int scale = src.scale;
    moeLayer_t layer = NULL;
    double t0 = bench_now_us();
    bench_check_status(bench_source_create_layer(&src, ctx, opt, &layer), "creating the layer");
    double upload_s = (bench_now_us() - t0) * 1e-6;
    moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
    bench_check_status(moeLayerGetConfig(layer, &cfg), "moeLayerGetConfig");
    int32_t K = 0;
    bench_check_status(moeLayerGetRouteWidth(layer, &K), "moeLayerGetRouteWidth");
    benchDims d;
    bench_dims(&cfg, &d);

    cpuBuffers b;
    memset(&b, 0, sizeof b);
    alloc_buffers(&b, layer, &d, K, Tmax, bench_dtype_size(cfg.dtype));
    if (!opt->quiet) {
      bench_report_begin_preset(rep, p->name, &cfg, scale);
      (void)upload_s;
    }
    for (int i = 0; i < nT; ++i) bench_one(opt, rep, &src, layer, &cfg, &d, K, scale, Ts[i], &b);
    free_buffers(&b);
    moeLayerDestroy(layer);
    bench_source_close(&src);
  }
  moeContextDestroy(ctx);
  return rep->failures ? 1 : 0;
}
