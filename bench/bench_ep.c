/* moe-bench --ep: expert parallelism over MPI (CPU backend) or NCCL (CUDA backend). */
#include "bench_ep.h"

#include <stdio.h>

/* Entered from bench/main.c when the command line holds --ep. */

#ifndef MOE_WITH_MPI
int moe_bench_ep_run(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "moe-bench --ep: built without MPI\n");
  return 2;
}
#else

#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe.h"
#include "moe/moe_ep.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include "bench.h"
#include "options.h"

/* Bad usage: exit status 2, as for the rest of moe-bench. */
static int usage(int rank, const char *why) {
  if (rank == 0) fprintf(stderr, "moe-bench --ep: %s\nTry 'moe-bench --help'.\n", why);
  return 2;
}

/* ---- deterministic weights: value = f(seed, tensor, expert, index), the same on every rank -- */
static float rnd(uint64_t seed, uint64_t tensor, uint64_t expert, uint64_t i) {
  uint64_t z = seed ^ (tensor * 0x9E3779B97F4A7C15ull) ^ (expert * 0xBF58476D1CE4E5B9ull) ^
               (i * 0x94D049BB133111EBull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void fill(float *v, size_t n, float scale, uint64_t seed, int tensor, int expert) {
  for (size_t i = 0; i < n; ++i) v[i] = scale * rnd(seed, (uint64_t)tensor, (uint64_t)expert, i);
}

static moeStatus_t upload(moeEpLayer_t ep, const moeLayerConfig_t *c, uint64_t seed, int rbias) {
  moeLayer_t l = NULL;
  int32_t begin = 0, count = 0;
  moeStatus_t st = moeEpLayerGetLocalLayer(ep, &l);
  if (st == moeSuccess) st = moeEpLayerGetExpertRange(ep, &begin, &count);
  const int64_t H = c->hidden, I = c->intermediate, E = c->num_experts;
  const int64_t Is = c->shared_intermediate ? c->shared_intermediate : I;
  const int gated = c->activation == moeActivationSwiGLU || c->activation == moeActivationSwiGLUClamped;
  const int64_t big = (I > Is ? I : Is) * H;
  float *a = (float *)malloc((size_t)(E * H > big ? E * H : big) * 4);
  float *b = (float *)malloc((size_t)big * 4), *d = (float *)malloc((size_t)big * 4);
  float *bias = (float *)malloc((size_t)(2 * I + H + E) * 4);
  if (!a || !b || !d || !bias) st = moeErrorOutOfMemory;
  if (st == moeSuccess) {
    fill(a, (size_t)(E * H), 1.0f / sqrtf((float)H), seed, 0, 0);
    fill(bias, (size_t)E, 0.1f, seed, 1, 0);
    st = moeLayerSetRouterWeights(l, a, rbias ? bias : NULL, moeFloat32);
  }
  for (int32_t e = begin; e < begin + count && st == moeSuccess; ++e) {
    fill(a, (size_t)(I * H), 1.0f / sqrtf((float)H), seed, 2, e);
    fill(b, (size_t)(I * H), 1.0f / sqrtf((float)H), seed, 3, e);
    fill(d, (size_t)(H * I), 1.0f / sqrtf((float)I), seed, 4, e);
    st = moeLayerSetExpertWeights(l, e, gated ? a : NULL, b, d, moeFloat32);
    if (st == moeSuccess && c->expert_bias) {
      fill(bias, (size_t)(2 * I + H), 0.1f, seed, 5, e);
      st = moeLayerSetExpertBiases(l, e, bias, bias + 2 * I, moeFloat32);
    }
  }
  for (int32_t s = 0; s < c->num_shared_experts && st == moeSuccess; ++s) {
    fill(a, (size_t)(Is * H), 1.0f / sqrtf((float)H), seed, 6, s);
    fill(b, (size_t)(Is * H), 1.0f / sqrtf((float)H), seed, 7, s);
    fill(d, (size_t)(H * Is), 1.0f / sqrtf((float)Is), seed, 8, s);
    st = moeLayerSetSharedExpertWeights(l, s, gated ? a : NULL, b, d, moeFloat32);
  }
  free(a);
  free(b);
  free(d);
  free(bias);
  return st;
}

static int make_config(const benchOptions *o, moeLayerConfig_t *cfg, int *router_bias, int rank) {
  const benchPreset *p = bench_preset_find(o->presets[0]);
  if (!p) return usage(rank, "unknown --preset (moe-bench --list shows them)");
  bench_preset_config(p, o->scale, o->dtype, cfg);
  *router_bias = p->router_bias;
  return 0;
}

static double median(double *v, int n) {
  for (int i = 1; i < n; ++i)
    for (int j = i; j > 0 && v[j - 1] > v[j]; --j) {
      double t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  return n ? (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])) : 0.0;
}

enum { NST = 6 }; /* route, layout, dispatch, experts, combine, total */
static const char *const kStage[NST] = {"route", "layout", "dispatch", "experts", "combine", "total"};

/* Every rank passes every CHECK, so that a step failing on one rank only (an upload, an
 * allocation) sends all of them to the teardown together instead of leaving the others in the
 * next collective (the forward loop's barrier, MPI_Gather, MPI_Comm_free), where they would
 * wait forever. The agreement is an MPI_Allreduce per step; none of it is inside a timed region
 * (the stage times come from moeEpLayerGetTimings). */
#define CHECK(st, what)                                                                     \
  do {                                                                                      \
    const moeStatus_t st_ = (st);                                                           \
    int bad_ = st_ != moeSuccess, any_ = 0;                                                 \
    if (bad_)                                                                               \
      fprintf(stderr, "moe-bench --ep: rank %d: %s: %s: %s\n", rank, what,                 \
              moeGetErrorString(st_), moeGetLastErrorMessage());                            \
    MPI_Allreduce(&bad_, &any_, 1, MPI_INT, MPI_MAX, world);                                \
    if (any_) {                                                                             \
      rc = 1;                                                                               \
      goto done;                                                                            \
    }                                                                                       \
  } while (0)

int moe_bench_ep_run(int argc, char **argv) {
  int inited = 0, rank = 0, size = 1, rc = 0, own_mpi = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    MPI_Init(&argc, &argv);
    own_mpi = 1;
  }
  MPI_Comm world = MPI_COMM_WORLD;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  /* The options of the whole tool, and only those --ep takes (options.c); rank 0 reports. */
  benchOptions o;
  bench_options_defaults(&o);
  FILE *err = rank == 0 ? stderr : NULL;
  if ((rc = bench_parse_options(argc, argv, &o, err)) != 0) goto finish;
  if (o.help || o.version) {
    if (rank == 0 && o.help) bench_print_help(stdout);
    if (rank == 0 && o.version) {
      const int v = moeGetVersion();
      printf("moe-bench (libmoe %d.%d.%d)\n", v / 10000, v / 100 % 100, v % 100);
    }
    goto finish;
  }
  if ((rc = bench_options_finish_ep(&o, err)) != 0) goto finish;
  const int cuda = o.backend == moeBackendCuda;
  if (o.ep != size) {
    char why[128];
    snprintf(why, sizeof why, "--ep %d but %d MPI ranks: launch with mpirun -np %d", o.ep, size,
             o.ep);
    rc = usage(rank, why);
    goto finish;
  }
  {
    moeContext_t ctx = NULL;
    moeEpComm_t comm = NULL;
    moeEpLayer_t ep = NULL;
    void *x = NULL, *y = NULL;
    double *t = NULL, *all = NULL;
    moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
    int router_bias = 0;
    if ((rc = make_config(&o, &cfg, &router_bias, rank)) != 0) goto finish;
    moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
    cc.backend = cuda ? moeBackendCuda : moeBackendCpu;
    if (cuda) CHECK(moeEpGetLocalDevice(&world, &cc.device), "moeEpGetLocalDevice");
    CHECK(moeContextCreate(&ctx, &cc), "moeContextCreate");
    CHECK(moeEpCommCreateMpi(&comm, ctx, &world), "moeEpCommCreateMpi");
    moeEpLayerConfig_t epc = MOE_EP_LAYER_CONFIG_INIT;
    epc.collect_timings = 1;
    CHECK(moeEpLayerCreate(&ep, comm, &cfg, &epc), "moeEpLayerCreate");
    CHECK(upload(ep, &cfg, o.seed, router_bias), "weights");
    const int64_t T = o.tokens[0], H = cfg.hidden;
    const size_t es = cfg.dtype == moeFloat32 ? 4 : 2, xb = (size_t)(T * H) * es;
    /* tokens: a function of (seed, rank), stored in the layer's dtype */
    {
      float *xf = (float *)malloc((size_t)(T * H) * 4);
      uint16_t *h16 = (uint16_t *)malloc(xb);
      moeStatus_t bst = xf && h16 ? moeSuccess : moeErrorOutOfMemory;
      if (bst == moeSuccess) fill(xf, (size_t)(T * H), 1.0f, o.seed, 100, rank);
      for (int64_t i = 0; bst == moeSuccess && i < T * H && es == 2; ++i)
        bench_store(h16, cfg.dtype, (size_t)i, xf[i]);
      const void *host = es == 4 ? (const void *)xf : (const void *)h16;
      if (bst == moeSuccess && cuda) {
#ifdef MOE_WITH_CUDA
        if (cudaMalloc(&x, xb + 4) != cudaSuccess || cudaMalloc(&y, xb + 4) != cudaSuccess ||
            cudaMemcpy(x, host, xb, cudaMemcpyHostToDevice) != cudaSuccess)
          bst = moeErrorCuda;
#else
        bst = moeErrorNotSupported;
#endif
      } else if (bst == moeSuccess) {
        x = malloc(xb + 4);
        y = malloc(xb + 4);
        if (x && y) memcpy(x, host, xb);
        else bst = moeErrorOutOfMemory;
      }
      free(xf);
      free(h16);
      CHECK(bst, "token buffers");
    }
    t = (double *)calloc((size_t)NST * (size_t)o.iters, sizeof(double));
    CHECK(t ? moeSuccess : moeErrorOutOfMemory, "timings");
    moeEpTimings_t tm = MOE_EP_TIMINGS_INIT;
    for (int it = -o.warmup; it < o.iters; ++it) {
      MPI_Barrier(world);
      CHECK(moeEpLayerForward(ep, T, x, y, NULL, NULL, 0, NULL), "moeEpLayerForward");
      CHECK(moeEpLayerGetTimings(ep, &tm), "moeEpLayerGetTimings");
      if (it < 0) continue;
      const double s[NST] = {tm.route_s, tm.layout_s, tm.dispatch_s, tm.experts_s, tm.combine_s,
                             tm.total_s};
      for (int k = 0; k < NST; ++k) t[k * o.iters + it] = s[k];
    }
    /* per rank: medians of the stages, then bytes and rows of the last forward */
    enum { NV = NST + 8 };
    double mine[NV];
    for (int k = 0; k < NST; ++k) mine[k] = median(t + k * o.iters, o.iters);
    mine[NST + 0] = (double)tm.tokens_sent;
    mine[NST + 1] = (double)tm.tokens_received;
    mine[NST + 2] = (double)tm.tokens_self;
    mine[NST + 3] = (double)tm.dispatch_bytes_sent;
    mine[NST + 4] = (double)tm.dispatch_bytes_received;
    mine[NST + 5] = (double)tm.combine_bytes_sent;
    mine[NST + 6] = (double)tm.combine_bytes_received;
    mine[NST + 7] = (double)tm.messages;
    all = (double *)malloc(sizeof mine * (size_t)size);
    CHECK(all ? moeSuccess : moeErrorOutOfMemory, "gather");
    MPI_Gather(mine, NV, MPI_DOUBLE, all, NV, MPI_DOUBLE, 0, world);
    if (rank == 0) {
      printf("moe-bench --ep %d: preset %s scale %d (H=%lld I=%lld E=%d k=%d shared=%d) %s, "
             "%lld tokens per rank, %s backend, median of %d\n", size, o.presets[0], o.scale,
             (long long)cfg.hidden, (long long)cfg.intermediate, cfg.num_experts, cfg.top_k,
             cfg.num_shared_experts, bench_dtype_name(cfg.dtype),
             (long long)T, cuda ? "cuda/nccl" : "cpu/mpi", o.iters);
      printf("%4s %8s %8s %6s", "rank", "sent", "recv", "self");
      for (int k = 0; k < NST; ++k) printf(" %10s", kStage[k]);
      printf(" %11s %11s %9s %9s %10s\n", "disp_MB", "comb_MB", "algbw", "busbw", "deepep");
      printf("%4s %8s %8s %6s", "", "rows", "rows", "rows");
      for (int k = 0; k < NST; ++k) printf(" %10s", "ms");
      printf(" %11s %11s %9s %9s %10s\n", "sent", "sent", "GB/s", "GB/s", "GB/s");
      for (int r = 0; r < size; ++r) {
        const double *v = all + (size_t)r * NV;
        /* nccl-tests alltoall: algbw = bytes / time, busbw = algbw * (n - 1) / n, with bytes the
         * data one rank sends (dispatch + combine) over the exchange time. DeepEP: bytes of token
         * rows actually received from other ranks in dispatch over the dispatch time. */
        const double xbytes = v[NST + 3] + v[NST + 5], xtime = v[2] + v[4];
        const double algbw = xtime > 0 ? xbytes / xtime / 1e9 : 0;
        const double busbw = algbw * (size - 1) / size;
        const double row_b = v[NST + 1] > 0 ? v[NST + 4] / v[NST + 1] : 0;
        const double remote_recv = (v[NST + 1] - v[NST + 2]) * row_b; /* self rows excluded */
        const double deepep = v[2] > 0 ? remote_recv / v[2] / 1e9 : 0;
        printf("%4d %8.0f %8.0f %6.0f", r, v[NST], v[NST + 1], v[NST + 2]);
        for (int k = 0; k < NST; ++k) printf(" %10.3f", v[k] * 1e3);
        printf(" %11.3f %11.3f %9.3f %9.3f %10.3f\n", v[NST + 3] / 1e6, v[NST + 5] / 1e6, algbw,
               busbw, deepep);
      }
      printf("cost model (uniform routing, NVLink %.0f GB/s/dir, IB %.0f GB/s/dir per GPU, 8 GPUs "
             "per node), %lld tokens per rank:\n", 450.0, 50.0, (long long)T);
      printf("%6s %8s %12s %12s %12s %12s %10s %10s %10s\n", "GPUs", "ranks/tok", "disp_NVL_MB",
             "disp_IB_MB", "comb_NVL_MB", "comb_IB_MB", "disp_us", "comb_us", "total_us");
      const int32_t proj[4] = {size, 8, 16, 64};
      for (int i = 0; i < 4; ++i) {
        if (i > 0 && proj[i] == size) continue;
        if (cfg.num_experts % proj[i]) continue;
        moeEpCost_t c = MOE_EP_COST_INIT;
        if (moeEpCostModel(NULL, proj[i], T, cfg.hidden, cfg.num_experts, cfg.top_k, cfg.dtype,
                           &c) != moeSuccess)
          continue;
        printf("%6d %8.2f %12.3f %12.3f %12.3f %12.3f %10.1f %10.1f %10.1f%s\n", proj[i],
               c.ranks_per_token, c.dispatch_bytes_nvlink / 1e6, c.dispatch_bytes_ib / 1e6,
               c.combine_bytes_nvlink / 1e6, c.combine_bytes_ib / 1e6, c.dispatch_s * 1e6,
               c.combine_s * 1e6, c.total_s * 1e6, i == 0 ? "  (this run's size)" : "");
      }
    }
  done:
    free(t);
    free(all);
#ifdef MOE_WITH_CUDA
    if (cuda) {
      cudaFree(x);
      cudaFree(y);
      x = y = NULL;
    }
#endif
    free(x);
    free(y);
    moeEpLayerDestroy(ep);
    moeEpCommDestroy(comm);
    moeContextDestroy(ctx);
    int any = 0;
    MPI_Allreduce(&rc, &any, 1, MPI_INT, MPI_MAX, world);
    rc = any;
  }
finish:
  if (own_mpi) MPI_Finalize();
  return rc;
}
#endif
