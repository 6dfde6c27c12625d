/* moe-bench --check: y against the naive by-definition forward in double
 * (tests/reference/naive_moe.h) on a subset of the tokens, and --stats bookkeeping. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "moe/moe_io.h"
#include "naive_moe.h"

/* Work the naive reference may spend (double FLOPs); it runs at roughly 1 GFLOP/s. */
#define CHECK_FLOP_BUDGET 6e9

typedef struct {
  moeNaiveLayer n;
  float *bufs[12];
  int nbufs;
} naiveHolder;

static float *hold(naiveHolder *h, size_t numel) {
  /* calloc: large arrays are mapped lazily, so experts never filled cost no memory. */
  float *p = bench_xcalloc(numel, sizeof(float));
  h->bufs[h->nbufs++] = p;
  return p;
}

static void holder_free(naiveHolder *h) {
  for (int i = 0; i < h->nbufs; ++i) free(h->bufs[i]);
  h->nbufs = 0;
}

/* The naive view of the layer's weights: router parts, shared and head weights filled; routed
 * experts allocated and filled later (only those needed). */
static void build_naive(naiveHolder *h, const moeLayerConfig_t *cfg, uint64_t seed, int router_bias,
                        const benchDims *d) {
  memset(h, 0, sizeof *h);
  h->n.cfg = *cfg;
  float *rw = hold(h, bench_tensor_numel(d, BENCH_T_ROUTER_W));
  bench_gen_tensor(cfg, seed, BENCH_T_ROUTER_W, 0, rw, NULL);
  h->n.router_weight = rw;
  if (router_bias) {
    float *rb = hold(h, (size_t)d->E);
    bench_gen_tensor(cfg, seed, BENCH_T_ROUTER_B, 0, rb, NULL);
    h->n.router_bias = rb;
  }
  if (cfg->routing == moeRoutingSigmoidGroupTopK) {
    float *sb = hold(h, (size_t)d->E);
    bench_gen_tensor(cfg, seed, BENCH_T_SELECTION_BIAS, 0, sb, NULL);
    h->n.selection_bias = sb;
  }
  h->n.gate_up = hold(h, bench_tensor_numel(d, BENCH_T_GATE_UP) * (size_t)d->E);
  h->n.down = hold(h, bench_tensor_numel(d, BENCH_T_DOWN) * (size_t)d->E);
  if (cfg->expert_bias) {
    h->n.gate_up_bias = hold(h, (size_t)d->GI * (size_t)d->E);
    h->n.down_bias = hold(h, (size_t)d->Hr * (size_t)d->E);
  }
  if (d->S > 0) {
    size_t ngu = bench_tensor_numel(d, BENCH_T_SHARED_GATE_UP), ndn = bench_tensor_numel(d, BENCH_T_SHARED_DOWN);
    float *gu = hold(h, ngu * (size_t)d->S), *dn = hold(h, ndn * (size_t)d->S);
    for (int32_t s = 0; s < d->S; ++s) {
      bench_gen_tensor(cfg, seed, BENCH_T_SHARED_GATE_UP, s, gu + (size_t)s * ngu, NULL);
      bench_gen_tensor(cfg, seed, BENCH_T_SHARED_DOWN, s, dn + (size_t)s * ndn, NULL);
    }
    h->n.shared_gate_up = gu;
    h->n.shared_down = dn;
  }
  if (d->heads > 1) {
    size_t nh = bench_tensor_numel(d, BENCH_T_HEAD);
    float *head = hold(h, nh), *merge = hold(h, nh);
    bench_gen_tensor(cfg, seed, BENCH_T_HEAD, 0, head, NULL);
    bench_gen_tensor(cfg, seed, BENCH_T_MERGE, 0, merge, NULL);
    h->n.head = head;
    h->n.merge = merge;
  }
}

static void fill_expert(naiveHolder *h, const moeLayerConfig_t *cfg, uint64_t seed,
                        const benchDims *d, int32_t e) {
  size_t ngu = bench_tensor_numel(d, BENCH_T_GATE_UP), ndn = bench_tensor_numel(d, BENCH_T_DOWN);
  bench_gen_tensor(cfg, seed, BENCH_T_GATE_UP, e, (float *)h->n.gate_up + (size_t)e * ngu, NULL);
  bench_gen_tensor(cfg, seed, BENCH_T_DOWN, e, (float *)h->n.down + (size_t)e * ndn, NULL);
  if (cfg->expert_bias) {
    bench_gen_tensor(cfg, seed, BENCH_T_GATE_UP_BIAS, e, (float *)h->n.gate_up_bias + (size_t)e * d->GI, NULL);
    bench_gen_tensor(cfg, seed, BENCH_T_DOWN_BIAS, e, (float *)h->n.down_bias + (size_t)e * d->Hr, NULL);
  }
}

static double tolerance(moeDtype_t dtype) { return dtype == moeFloat32 ? 1e-5 : 1e-2; }

/* The naive view of a checkpoint's fp32 weights (read once per source, every expert). */
static int checkpoint_naive(const moeLayerConfig_t *cfg, benchSource *src, moeNaiveLayer *n,
                            benchRow *row) {
  if (!src->ckpt_weights) {
    moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
    o.dtype_override = 1;
    o.dtype = cfg->dtype; /* rounded as the layer stores them */
    moeCheckpointWeights_t *w = NULL;
    if (moeCheckpointReadWeights(src->ckpt_dir, src->ckpt_layer, &o, &w) != moeSuccess) {
      snprintf(row->check_note, sizeof row->check_note, "reading the checkpoint: %.60s",
               moeGetLastErrorMessage());
      return -1;
    }
    src->ckpt_weights = w;
  }
  const moeCheckpointWeights_t *w = (const moeCheckpointWeights_t *)src->ckpt_weights;
  memset(n, 0, sizeof *n);
  n->cfg = *cfg;
  n->router_weight = w->router_weight;
  n->router_bias = w->router_bias;
  n->selection_bias = w->selection_bias;
  n->gate_up = w->gate_up;
  n->down = w->down;
  n->gate_up_bias = w->gate_up_bias;
  n->down_bias = w->down_bias;
  n->shared_gate_up = w->shared_gate_up;
  n->shared_down = w->shared_down;
  return 0;
}

void bench_reference_check(const moeLayerConfig_t *cfg, benchSource *src, uint64_t seed,
                           int64_t T, const float *x, const void *y, int max_tokens,
                           benchRow *row) {
  const int router_bias = src->router_bias;
  benchDims d;
  bench_dims(cfg, &d);
  row->tol = tolerance(cfg->dtype);
  row->checked = -1;
  if (T <= 0) {
    snprintf(row->check_note, sizeof row->check_note, "no tokens");
    return;
  }
  /* Routing that looks at the whole batch (expert choice, capacity) cannot be checked on a
   * subset of the tokens. */
  const int whole_batch = cfg->routing == moeRoutingExpertChoice || cfg->capacity_factor > 0;
  const int32_t K = moe_naive_route_width(cfg);
  const double per_token = 2.0 * (double)K * ((double)d.GI * d.Hr + (double)d.Hr * d.I) +
                           2.0 * d.S * ((double)d.GIs * d.H + (double)d.H * d.Is) +
                           (d.heads > 1 ? 4.0 * (double)d.H * d.H : 0.0);
  int64_t n = T;
  if (!whole_batch) {
    int64_t by_budget = (int64_t)(CHECK_FLOP_BUDGET / (per_token > 1 ? per_token : 1));
    if (n > max_tokens) n = max_tokens;
    if (n > by_budget) n = by_budget > 1 ? by_budget : 1;
  } else if ((double)T * per_token > 4 * CHECK_FLOP_BUDGET) {
    snprintf(row->check_note, sizeof row->check_note,
             "batch-dependent routing: the naive reference would need all %lld tokens", (long long)T);
    return;
  }

  /* The tokens checked: evenly spaced rows. */
  int64_t *rows = bench_xmalloc((size_t)n * sizeof(int64_t));
  float *xs = bench_xmalloc((size_t)n * (size_t)d.H * sizeof(float));
  for (int64_t i = 0; i < n; ++i) {
    rows[i] = n == T ? i : i * T / n;
    memcpy(xs + i * d.H, x + rows[i] * d.H, (size_t)d.H * sizeof(float));
  }

  naiveHolder h;
  memset(&h, 0, sizeof h);
  if (src->ckpt_dir) {
    if (checkpoint_naive(cfg, src, &h.n, row) != 0) {
      free(xs);
      free(rows);
      return;
    }
  } else {
    build_naive(&h, cfg, seed, router_bias, &d);
  }
  /* Routed experts: with one head, route the checked tokens first and build only the experts
   * they reach (DeepSeek-V3 at full size holds 45 GB of fp32 experts); else build them all. */
  unsigned char *need = bench_xcalloc((size_t)d.E, 1);
  if (src->ckpt_dir) {
    /* every expert is already there */
  } else if (d.heads == 1) {
    int32_t *ids = bench_xmalloc((size_t)n * (size_t)K * sizeof(int32_t));
    double *w = bench_xmalloc((size_t)n * (size_t)K * sizeof(double));
    if (moe_naive_route(&h.n, n, xs, ids, w, NULL) != 0) {
      memset(need, 1, (size_t)d.E);
    } else {
      for (int64_t i = 0; i < n * K; ++i)
        if (ids[i] >= 0 && ids[i] < d.E) need[ids[i]] = 1;
    }
    free(ids);
    free(w);
  } else {
    memset(need, 1, (size_t)d.E);
  }
  for (int32_t e = 0; e < d.E && !src->ckpt_dir; ++e)
    if (need[e]) fill_expert(&h, cfg, seed, &d, e);
  free(need);

  double *ref = bench_xmalloc((size_t)n * (size_t)d.H * sizeof(double));
  if (moe_naive_forward(&h.n, n, xs, ref, NULL) != 0) {
    snprintf(row->check_note, sizeof row->check_note, "the naive reference cannot evaluate this config");
  } else {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < d.H; ++c) {
        double got = (double)bench_load(y, cfg->dtype, (size_t)(rows[i] * d.H + c));
        double r = ref[i * d.H + c];
        num += (got - r) * (got - r);
        den += r * r;
      }
    double err = den > 0 ? sqrt(num / den) : sqrt(num);
    if (err != err) err = INFINITY; /* NaN never passes */
    row->checked = 1;
    row->check_tokens = (int)n;
    row->rel_err = err;
    row->pass = err <= row->tol;
  }
  free(ref);
  holder_free(&h);
  free(xs);
  free(rows);
}

void bench_fill_stats(benchRow *row, int32_t E, const int64_t *counts, const int64_t *dropped,
                      const float *scalars) {
  row->have_stats = 1;
  memcpy(row->stat_scalars, scalars, sizeof row->stat_scalars);
  int64_t mn = INT64_MAX, mx = 0, sum = 0, drop = 0;
  for (int32_t e = 0; e < E; ++e) {
    if (counts[e] < mn) mn = counts[e];
    if (counts[e] > mx) mx = counts[e];
    sum += counts[e];
    drop += dropped[e];
  }
  row->count_min = E ? mn : 0;
  row->count_max = mx;
  row->count_mean = E ? (double)sum / E : 0.0;
  row->dropped_total = drop;
}
