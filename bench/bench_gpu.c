/* moe-bench, CUDA mode: device buffers, ceilings measured in the same run (device-to-device
 * copy, cuBLAS bf16 GEMM), the forward captured into CUDA graphs (one per rotating input
 * buffer) and timed with events over replays; per-stage times with events around each call. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "report.h"
#include "roofline.h"

int bench_gpu_available(void) {
  int n = 0;
  if (moeGetCudaDeviceCount(&n) != moeSuccess) return 0;
  return n > 0;
}

#ifndef MOE_WITH_CUDA

int bench_run_gpu(const benchOptions *opt, benchReport *rep) {
  (void)opt;
  (void)rep;
  fprintf(stderr, "moe-bench: this build has no CUDA backend (configure with -DMOE_WITH_CUDA=ON)\n");
  return 1;
}

#else /* MOE_WITH_CUDA */

#include <cublas_v2.h>
#include <cuda_runtime.h>


#define CU(call) cu_check((call), #call, __LINE__)
static void cu_check(cudaError_t e, const char *what, int line) {
  if (e == cudaSuccess) return;
  fprintf(stderr, "moe-bench: %s failed (bench_gpu.c:%d): %s\n", what, line, cudaGetErrorString(e));
  exit(1);
}

static float event_ms(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0.0f;
  CU(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

/* Device-to-device copy bandwidth, counting read + write bytes, on a buffer far above L2. */
static double measure_copy_bw(cudaStream_t s, size_t bytes) {
  void *a = NULL, *b = NULL;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaFree(a);
    cudaGetLastError();
    return -1.0;
  }
  CU(cudaMemsetAsync(a, 1, bytes, s));
  enum { N = 20 };
  cudaEvent_t ev[N + 1];
  for (int i = 0; i <= N; ++i) CU(cudaEventCreate(&ev[i]));
  for (int i = 0; i < 3; ++i) CU(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
  CU(cudaEventRecord(ev[0], s));
  for (int i = 0; i < N; ++i) {
    CU(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
    CU(cudaEventRecord(ev[i + 1], s));
  }
  CU(cudaStreamSynchronize(s));
  double t[N];
  for (int i = 0; i < N; ++i) t[i] = event_ms(ev[i], ev[i + 1]) * 1e-3;
  double med = bench_median(t, N);
  for (int i = 0; i <= N; ++i) cudaEventDestroy(ev[i]);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * (double)bytes / med;
}

/* Dense bf16 GEMM rate of cuBLAS (fp32 accumulate) at n x n x n on random data. */
static double measure_gemm(cudaStream_t s, int n) {
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return -1.0;
  cublasSetStream(h, s);
  const size_t elems = (size_t)n * n, bytes = elems * 2;
  void *A = NULL, *B = NULL, *C = NULL;
  double rate = -1.0;
  if (cudaMalloc(&A, bytes) == cudaSuccess && cudaMalloc(&B, bytes) == cudaSuccess &&
      cudaMalloc(&C, bytes) == cudaSuccess) {
    void *host = bench_xmalloc(bytes);
    bench_make_tokens(n, n, moeBFloat16, 7, NULL, host);
    CU(cudaMemcpy(A, host, bytes, cudaMemcpyHostToDevice));
    bench_make_tokens(n, n, moeBFloat16, 8, NULL, host);
    CU(cudaMemcpy(B, host, bytes, cudaMemcpyHostToDevice));
    CU(cudaDeviceSynchronize()); /* pageable copies may still be in flight on the legacy stream */
    free(host);
    const float alpha = 1.0f, beta = 0.0f;
    enum { N = 20 };
    cudaEvent_t ev[N + 1];
    for (int i = 0; i <= N; ++i) CU(cudaEventCreate(&ev[i]));
    int ok = 1;
    for (int i = 0; i < N + 3 && ok; ++i) {
      if (i >= 3) CU(cudaEventRecord(ev[i - 3], s));
      ok = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, A, CUDA_R_16BF, n, B,
                        CUDA_R_16BF, n, &beta, C, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
    }
    CU(cudaEventRecord(ev[N], s));
    CU(cudaStreamSynchronize(s));
    if (ok) {
      double t[N];
      for (int i = 0; i < N; ++i) t[i] = event_ms(ev[i], ev[i + 1]) * 1e-3;
      rate = 2.0 * (double)n * n * n / bench_median(t, N);
    }
    for (int i = 0; i <= N; ++i) cudaEventDestroy(ev[i]);
  }
  cudaGetLastError();
  cudaFree(A);
  cudaFree(B);
  cudaFree(C);
  cublasDestroy(h);
  return rate;
}

/* The kernel driver's version ("580.159.04") from /proc, or "" where that file is absent. */
static void kernel_driver_version(char *out, size_t n) {
  out[0] = '\0';
  FILE *f = fopen("/proc/driver/nvidia/version", "r");
  if (!f) return;
  char line[512];
  if (fgets(line, sizeof line, f)) {
    /* "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Tue ..." */
    const char *m = strstr(line, "Module");
    if (m) {
      m += strlen("Module");
      while (*m == ' ') ++m;
      size_t len = strcspn(m, " \n");
      if (len && len < n) {
        memcpy(out, m, len);
        out[len] = '\0';
      }
    }
  }
  fclose(f);
}

static void fill_env(benchEnv *env, cudaStream_t s) {
  int dev = 0, drv = 0, rt = 0;
  struct cudaDeviceProp prop;
  CU(cudaGetDevice(&dev));
  CU(cudaGetDeviceProperties(&prop, dev));
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  snprintf(env->mode, sizeof env->mode, "cuda");
  snprintf(env->device, sizeof env->device, "%.96s (sm_%d%d; %d SMs)", prop.name, prop.major,
           prop.minor, prop.multiProcessorCount);
  char kver[24];
  kernel_driver_version(kver, sizeof kver);
  snprintf(env->driver, sizeof env->driver, "%s%sCUDA %d.%d", kver, kver[0] ? ", " : "",
           drv / 1000, drv % 1000 / 10);
  snprintf(env->runtime, sizeof env->runtime, "%d.%d", rt / 1000, rt % 1000 / 10);
  env->l2_bytes = (double)prop.l2CacheSize;
  env->mem_bytes = (double)prop.totalGlobalMem;
  if (strstr(prop.name, "emulated")) { /* tests/emulator: the code paths run, times mean nothing */
    env->copy_bw = env->gemm_rate = -1.0;
    env->gemm_n = 0;
    fprintf(stderr, "moe-bench: %s is the CPU emulation of a GPU: no ceilings measured, and "
                    "every time below is meaningless\n", prop.name);
    return;
  }
  size_t copy_bytes = (size_t)1 << 30;
  if ((double)copy_bytes * 8 > env->mem_bytes) copy_bytes = (size_t)(env->mem_bytes / 16);
  env->copy_bw = measure_copy_bw(s, copy_bytes);
  env->gemm_n = 8192;
  env->gemm_rate = measure_gemm(s, env->gemm_n);
}

static void *dmalloc(size_t bytes) {
  void *p = NULL;
  if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
    cudaGetLastError();
    return NULL;
  }
  return p;
}

/* Everything one T needs on the device. */
typedef struct {
  int nbuf;
  void *x[32], *y[32];
  void *expert_out, *shared_out;
  int32_t *ids;
  float *weights;
  int64_t *offsets, *sorted, *pair_rows;
  cudaGraphExec_t exec[32];
} gpuT;

static void free_gpu_t(gpuT *g) {
  for (int i = 0; i < g->nbuf; ++i) {
    cudaFree(g->x[i]);
    cudaFree(g->y[i]);
    if (g->exec[i]) cudaGraphExecDestroy(g->exec[i]);
  }
  void *p[] = {g->expert_out, g->shared_out, g->ids, g->weights, g->offsets, g->sorted, g->pair_rows};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; ++i) cudaFree(p[i]);
}

/* Captures forward(x[i] -> y[i]) into a graph. Returns 0, or -1 when the forward cannot be
 * captured (then the caller times plain launches). */
static int capture(moeLayer_t layer, int64_t T, gpuT *g, int i, void *ws, size_t wsb, cudaStream_t s) {
  cudaGraph_t graph = NULL;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return -1;
  moeStatus_t st = moeLayerForward(layer, T, g->x[i], g->y[i], NULL, ws, wsb, s);
  cudaError_t e = cudaStreamEndCapture(s, &graph);
  if (st != moeSuccess || e != cudaSuccess || !graph) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    return -1;
  }
  e = cudaGraphInstantiateWithFlags(&g->exec[i], graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) {
    g->exec[i] = NULL;
    cudaGetLastError();
    return -1;
  }
  return 0;
}

static void launch(moeLayer_t layer, int64_t T, gpuT *g, int i, int graphs, void *ws, size_t wsb,
                   cudaStream_t s) {
  if (graphs) CU(cudaGraphLaunch(g->exec[i], s));
  else bench_check_status(moeLayerForward(layer, T, g->x[i], g->y[i], NULL, ws, wsb, s), "moeLayerForward");
}

static void bench_one(const benchOptions *opt, benchReport *rep, benchSource *p,
                      moeLayer_t layer, const moeLayerConfig_t *cfg, const benchDims *d, int32_t K,
                      int64_t T, void *ws, size_t wsb, cudaStream_t s, const char *variant) {
  const size_t es = bench_dtype_size(cfg->dtype);
  const size_t xbytes = (size_t)(T * d->H) * es;
  const int64_t Tr = T * d->heads;
  benchRow row;
  memset(&row, 0, sizeof row);
  snprintf(row.preset, sizeof row.preset, "%s%s%s", p->name, variant ? "/" : "",
           variant ? variant : "");
  snprintf(row.backend, sizeof row.backend, "cuda");
  snprintf(row.dtype, sizeof row.dtype, "%s", bench_dtype_name(cfg->dtype));
  snprintf(row.routing, sizeof row.routing, "%s", bench_routing_name(cfg->routing));
  row.scale = p->scale;
  row.T = T, row.H = d->H, row.I = d->I, row.Is = d->S ? d->Is : 0;
  row.E = d->E, row.K = K, row.S = d->S, row.heads = d->heads;
  for (int st = 0; st < BENCH_NUM_STAGES; ++st) row.stage_us[st] = -1.0;

  /* Rotating inputs: enough buffers that together they exceed L2 twice (4..32); each routes
   * differently, so consecutive replays also read different experts. */
  gpuT g;
  memset(&g, 0, sizeof g);
  double need = 2.0 * rep->env.l2_bytes / (double)(xbytes ? xbytes : 1);
  g.nbuf = need > 32 ? 32 : need < 4 ? 4 : (int)ceil(need);
  int ok = 1;
  for (int i = 0; i < g.nbuf && ok; ++i) ok = (g.x[i] = dmalloc(xbytes)) && (g.y[i] = dmalloc(xbytes));
  ok = ok && (g.expert_out = dmalloc((size_t)(Tr * K * d->Hr) * es)) && (g.shared_out = dmalloc(xbytes)) &&
       (g.ids = dmalloc((size_t)(Tr * K) * 4)) && (g.weights = dmalloc((size_t)(Tr * K) * 4)) &&
       (g.offsets = dmalloc((size_t)(d->E + 1) * 8)) && (g.sorted = dmalloc((size_t)(Tr * K) * 8)) &&
       (g.pair_rows = dmalloc((size_t)(Tr * K) * 8));
  if (!ok) {
    fprintf(stderr, "moe-bench: %s T=%lld: out of device memory, skipped\n", p->name, (long long)T);
    free_gpu_t(&g);
    return;
  }
  float *x0 = bench_xmalloc(xbytes / es * sizeof(float));
  void *host = bench_xmalloc(xbytes);
  for (int i = 0; i < g.nbuf; ++i) {
    bench_make_tokens(T, d->H, cfg->dtype, opt->seed + (uint64_t)T * 1000 + (uint64_t)i, i ? NULL : x0, host);
    CU(cudaMemcpy(g.x[i], host, xbytes, cudaMemcpyHostToDevice));
    /* NaN in every dtype: unwritten output fails --check. On s: a plain cudaMemset runs on the
     * legacy stream, which the non-blocking s does not wait for. */
    CU(cudaMemsetAsync(g.y[i], 0xff, xbytes, s));
  }
  row.input_buffers = g.nbuf;
  /* A pageable cudaMemcpy may return before its DMA is done, on the legacy stream that the
   * non-blocking s does not wait for. */
  CU(cudaDeviceSynchronize());

  /* One plain call first, so lazy initialization in the library (handles, tables) happens
   * outside the capture; then one graph per input buffer. */
  bench_check_status(moeLayerForward(layer, T, g.x[0], g.y[0], NULL, ws, wsb, s), "moeLayerForward");
  CU(cudaStreamSynchronize(s));
  int graphs = 1;
  for (int i = 0; i < g.nbuf && graphs; ++i) graphs = capture(layer, T, &g, i, ws, wsb, s) == 0;
  if (!graphs) fprintf(stderr, "moe-bench: %s T=%lld: forward not capturable; timing plain launches\n",
                       p->name, (long long)T);
  row.graph = graphs;

  /* Warm-up, timed as a whole: it sizes the automatic iteration count so that one T takes
   * about --max-time seconds of replays (10..200), whatever the speed of the backend. */
  const int warmup = opt->warmup_set ? opt->warmup : 10;
  cudaEvent_t w0, w1;
  CU(cudaEventCreate(&w0));
  CU(cudaEventCreate(&w1));
  CU(cudaEventRecord(w0, s));
  for (int i = 0; i < warmup; ++i) launch(layer, T, &g, i % g.nbuf, graphs, ws, wsb, s);
  CU(cudaEventRecord(w1, s));
  CU(cudaStreamSynchronize(s));
  double per_us = warmup > 0 ? event_ms(w0, w1) * 1e3 / warmup : 0.0;
  cudaEventDestroy(w0);
  cudaEventDestroy(w1);
  int iters = opt->iters;
  if (iters <= 0) {
    const double budget_us = (opt->max_time > 0 ? opt->max_time : 2.0) * 1e6;
    iters = per_us > 0 ? (int)(budget_us / per_us) : 100;
    iters = iters < 10 ? 10 : iters > 200 ? 200 : iters;
  }
  const int nev = 2 * iters > BENCH_NUM_STAGES + 1 ? 2 * iters : BENCH_NUM_STAGES + 1;
  cudaEvent_t *ev = bench_xmalloc((size_t)nev * sizeof(cudaEvent_t));
  for (int i = 0; i < nev; ++i) CU(cudaEventCreate(&ev[i]));
  for (int i = 0; i < iters; ++i) {
    CU(cudaEventRecord(ev[2 * i], s));
    launch(layer, T, &g, i % g.nbuf, graphs, ws, wsb, s);
    CU(cudaEventRecord(ev[2 * i + 1], s));
  }
  CU(cudaStreamSynchronize(s));
  double *t = bench_xmalloc((size_t)iters * sizeof(double));
  for (int i = 0; i < iters; ++i) t[i] = event_ms(ev[2 * i], ev[2 * i + 1]) * 1e3;
  row.iters = iters;
  row.median_us = bench_median(t, iters);
  row.min_us = t[0];
  row.max_us = t[iters - 1];

  /* --check: y of buffer 0 (every replay of graph 0 writes the same values). */
  if (opt->check) {
    CU(cudaMemcpy(host, g.y[0], xbytes, cudaMemcpyDeviceToHost));
    bench_reference_check(cfg, p, opt->seed, T, x0, host, opt->check_tokens, &row);
  }

  /* Stages one by one on buffer 0, events around each call. */
  if (opt->stages) {
    const int shared = d->S > 0 && d->heads == 1;
    const int sit = iters < 50 ? iters : 50;
    double *st = bench_xmalloc((size_t)sit * BENCH_NUM_STAGES * sizeof(double));
    for (int i = 0; i < sit; ++i) {
      CU(cudaEventRecord(ev[0], s));
      bench_check_status(moeLayerRoute(layer, Tr, g.x[0], g.ids, g.weights, NULL, ws, wsb, s), "moeLayerRoute");
      CU(cudaEventRecord(ev[1], s));
      bench_check_status(moeLayerPermute(layer, Tr, g.ids, g.offsets, g.sorted, g.pair_rows, ws, wsb, s),
                         "moeLayerPermute");
      CU(cudaEventRecord(ev[2], s));
      bench_check_status(moeLayerExperts(layer, Tr, g.x[0], g.weights, g.offsets, g.sorted, g.expert_out,
                                         ws, wsb, s), "moeLayerExperts");
      CU(cudaEventRecord(ev[3], s));
      if (shared)
        bench_check_status(moeLayerSharedExperts(layer, T, g.x[0], g.shared_out, ws, wsb, s),
                           "moeLayerSharedExperts");
      CU(cudaEventRecord(ev[4], s));
      bench_check_status(moeLayerCombine(layer, Tr, g.expert_out, g.pair_rows, g.weights,
                                         shared ? g.shared_out : NULL, g.y[0], s), "moeLayerCombine");
      CU(cudaEventRecord(ev[5], s));
      CU(cudaStreamSynchronize(s));
      for (int k = 0; k < BENCH_NUM_STAGES; ++k) st[k * sit + i] = event_ms(ev[k], ev[k + 1]) * 1e3;
    }
    for (int k = 0; k < BENCH_NUM_STAGES; ++k)
      row.stage_us[k] = k == BENCH_STAGE_SHARED && !shared ? -1.0 : bench_median(st + k * sit, sit);
    free(st);
  }

  /* Distinct experts hit and kept selections, from the routing output of every buffer (after
   * timing, so the copies do not disturb it). */
  int32_t *ids = bench_xmalloc((size_t)(Tr * K) * sizeof(int32_t));
  double hit = 0.0, sel = 0.0;
  for (int i = 0; i < g.nbuf; ++i) {
    bench_check_status(moeLayerRoute(layer, Tr, g.x[i], g.ids, g.weights, NULL, ws, wsb, s), "moeLayerRoute");
    CU(cudaMemcpyAsync(ids, g.ids, (size_t)(Tr * K) * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
    int64_t n = 0;
    hit += bench_count_hit(ids, Tr * K, d->E, &n);
    sel += (double)n;
  }
  free(ids);
  row.experts_hit = hit / g.nbuf;
  row.selections = sel / g.nbuf;

  benchWork w;
  bench_work(cfg, T, row.selections, row.experts_hit, &w);
  row.flops = w.flops;
  row.bytes = w.bytes;
  row.tokens_per_s = (double)T / (row.median_us * 1e-6);
  row.flop_rate = w.flops / (row.median_us * 1e-6);
  row.byte_rate = w.bytes / (row.median_us * 1e-6);
  row.floor_us = bench_floor_us(w.flops, w.bytes, rep->env.copy_bw, rep->env.gemm_rate);
  row.roofline_frac = row.floor_us > 0 ? row.floor_us / row.median_us : -1.0;

  if (opt->stats) {
    /* One device block: counts [E], dropped [E], prob mean [E], scalars. */
    size_t nb = (size_t)d->E * 8 * 2 + (size_t)d->E * 4 + moeStatScalarCount * 4;
    char *dev = dmalloc(nb), *hst = bench_xmalloc(nb);
    if (dev) {
      CU(cudaMemsetAsync(dev, 0, nb, s));
      moeRouterStats_t stats = MOE_ROUTER_STATS_INIT;
      stats.expert_counts = (int64_t *)dev;
      stats.dropped_counts = (int64_t *)(dev + (size_t)d->E * 8);
      stats.expert_prob_mean = (float *)(dev + (size_t)d->E * 16);
      stats.scalars = (float *)(dev + (size_t)d->E * 20);
      bench_check_status(moeLayerForward(layer, T, g.x[0], g.y[0], &stats, ws, wsb, s), "moeLayerForward(stats)");
      CU(cudaMemcpyAsync(hst, dev, nb, cudaMemcpyDeviceToHost, s));
      CU(cudaStreamSynchronize(s));
      bench_fill_stats(&row, d->E, (int64_t *)hst, (int64_t *)(hst + (size_t)d->E * 8),
                       (float *)(hst + (size_t)d->E * 20));
      cudaFree(dev);
    }
    free(hst);
  }

  for (int i = 0; i < nev; ++i) cudaEventDestroy(ev[i]);
  free(ev);
  free(t);
  free(x0);
  free(host);
  free_gpu_t(&g);
  bench_report_add(rep, &row);
}

/* ---- --tune: every GEMM kernel choice per T, the fastest written as a tuning table ---- */

/* wgmma: the sm_90a kernel, tried on compute capability 9.x only (elsewhere it runs as tiled). */
static const char *const kTuneKernels[] = {"tiled", "skinny", "wgmma"};
#define TUNE_CHOICES 3

typedef struct {
  char *text;
  size_t len, cap;
} tuneTable;

static void tune_append(tuneTable *t, const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (t->len + (size_t)n + 1 > t->cap) {
    t->cap = (t->len + (size_t)n + 1) * 2;
    char *grown = realloc(t->text, t->cap);
    if (!grown) {
      fprintf(stderr, "moe-bench: out of host memory\n");
      exit(1);
    }
    t->text = grown;
  }
  memcpy(t->text + t->len, line, (size_t)n + 1);
  t->len += (size_t)n;
}

/* The table lines of this layer's grouped GEMMs for one T (rows: the groups' average). */
static void tune_entries(tuneTable *t, const moeLayerConfig_t *cfg, const benchDims *d, int32_t K,
                         int64_t T, const char *kernel) {
  const char *dt = bench_dtype_name(cfg->dtype);
  const int64_t routed_rows = (T * d->heads * K + d->E - 1) / d->E;
  tune_append(t, "%s %lld %lld %lld %s\n", dt, (long long)d->GI, (long long)d->Hr,
              (long long)routed_rows, kernel);
  tune_append(t, "%s %lld %lld %lld %s\n", dt, (long long)d->Hr, (long long)d->I,
              (long long)routed_rows, kernel);
  if (d->S > 0 && d->heads == 1) {
    tune_append(t, "%s %lld %lld %lld %s\n", dt, (long long)d->GIs, (long long)d->H, (long long)T,
                kernel);
    tune_append(t, "%s %lld %lld %lld %s\n", dt, (long long)d->H, (long long)d->Is, (long long)T,
                kernel);
  }
}

/* Times every T under each kernel choice (forced through a table that covers every row count
 * of this layer's shapes), and appends the fastest choice per T to out. */
static void tune_preset(const benchOptions *opt, benchReport *rep, benchSource *p, moeContext_t ctx,
                        moeLayer_t layer, const moeLayerConfig_t *cfg, const benchDims *d,
                        int32_t K, const int64_t *Ts, int nT, void *ws, size_t wsb, cudaStream_t s,
                        tuneTable *out) {
  char force_path[1100]; /* a temporary file: not next to --tune FILE, which may be "-" */
  if (bench_temp_file(force_path, sizeof force_path, "moe-bench-tune")) exit(1);
  tune_append(out, "# %s\n", p->name);
  for (int i = 0; i < nT; ++i) {
    double best_us = -1.0;
    int best = -1;
    for (int c = 0; c < TUNE_CHOICES; ++c) {
      if (!strcmp(kTuneKernels[c], "wgmma")) {
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
            major != 9)
          continue;
      }
      tuneTable force = {NULL, 0, 0};
      tune_entries(&force, cfg, d, K, (int64_t)1 << 40, kTuneKernels[c]);
      FILE *f = fopen(force_path, "w");
      if (!f || fputs(force.text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "moe-bench: cannot write %s\n", force_path);
        exit(1);
      }
      free(force.text);
      bench_check_status(moeContextLoadTuning(ctx, force_path), "moeContextLoadTuning");
      const int before = rep->num_rows;
      bench_one(opt, rep, p, layer, cfg, d, K, Ts[i], ws, wsb, s, kTuneKernels[c]);
      if (rep->num_rows == before) continue; /* skipped (out of memory) */
      const double us = rep->rows[rep->num_rows - 1].median_us;
      if (best < 0 || us < best_us) best_us = us, best = c;
    }
    if (best >= 0) {
      tune_append(out, "# T = %lld: %s %.1f us\n", (long long)Ts[i], kTuneKernels[best], best_us);
      tune_entries(out, cfg, d, K, Ts[i], kTuneKernels[best]);
    }
  }
  remove(force_path);
  bench_check_status(moeContextLoadTuning(ctx, NULL), "moeContextLoadTuning(NULL)");
}

int bench_run_gpu(const benchOptions *opt, benchReport *rep) {
  cudaStream_t s;
  CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  fill_env(&rep->env, s);
  if (!opt->quiet) bench_report_print_env(rep);

  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCuda;
  cc.stream = s;
  moeContext_t ctx = NULL;
  bench_check_status(moeContextCreate(&ctx, &cc), "moeContextCreate(cuda)");

  const int64_t *Ts;
  int64_t Tmax;
  const int nT = bench_token_counts(opt, 1, &Ts, &Tmax);
  tuneTable tune = {NULL, 0, 0};
  if (opt->tune_path)
    tune_append(&tune, "# libmoe GEMM tuning table (moe-bench --tune), format: csrc/core/tuning.h\n"
                       "# device: %s, driver %s, commit %s, %s\n",
                rep->env.device, rep->env.driver, rep->env.commit, rep->env.date);

  for (int pi = 0; pi < bench_source_count(opt); ++pi) {
    benchSource src;
    char err[320];
    if (bench_source_open(opt, pi, 1, &src, err, sizeof err) != 0) {
      fprintf(stderr, "moe-bench: %s\n", err);
      exit(2);
    }
    benchSource *p = &src;
    const int scale = src.scale;
    moeLayer_t layer = NULL;
    double t0 = bench_now_us();
    moeStatus_t st = bench_source_create_layer(&src, ctx, opt, &layer);
    if (st == moeErrorOutOfMemory) {
      fprintf(stderr, "moe-bench: %s: the weights do not fit on this device, skipped\n", p->name);
      bench_source_close(&src);
      continue;
    }
    bench_check_status(st, "creating the layer");
    CU(cudaDeviceSynchronize()); /* weight uploads done, whichever stream they used */
    const double upload_s = (bench_now_us() - t0) * 1e-6;
    moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
    bench_check_status(moeLayerGetConfig(layer, &cfg), "moeLayerGetConfig");
    int32_t K = 0;
    bench_check_status(moeLayerGetRouteWidth(layer, &K), "moeLayerGetRouteWidth");
    benchDims d;
    bench_dims(&cfg, &d);
    size_t wsb = 0;
    /* Sized in tokens: it already covers the T * heads sub-tokens the stages alone see. */
    bench_check_status(moeLayerGetWorkspaceSize(layer, Tmax, &wsb), "moeLayerGetWorkspaceSize");
    void *ws = dmalloc(wsb);
    if (!ws) {
      fprintf(stderr, "moe-bench: %s: no device memory for a %zu-byte workspace, skipped\n", p->name, wsb);
      moeLayerDestroy(layer);
      bench_source_close(&src);
      continue;
    }
    if (!opt->quiet) {
      bench_report_begin_preset(rep, p->name, &cfg, scale);
      fprintf(stderr, "(%s: layer created and weights set in %.1f s)\n", p->name, upload_s);
    }
    if (opt->tune_path)
      tune_preset(opt, rep, p, ctx, layer, &cfg, &d, K, Ts, nT, ws, wsb, s, &tune);
    else
      for (int i = 0; i < nT; ++i) bench_one(opt, rep, p, layer, &cfg, &d, K, Ts[i], ws, wsb, s, NULL);
    cudaFree(ws);
    moeLayerDestroy(layer);
    bench_source_close(&src);
  }
  moeContextDestroy(ctx);
  if (opt->tune_path) { /* its path was checked before the run (main.c) */
    const int bad = bench_output_write_once(opt->tune_path, bench_write_text, tune.text ? tune.text : "");
    free(tune.text);
    if (bad) return 1;
    if (!opt->quiet) fprintf(stderr, "moe-bench: tuning table written to %s\n", opt->tune_path);
  }
  cudaStreamDestroy(s);
  return rep->failures ? 1 : 0;
}

#endif /* MOE_WITH_CUDA */
