/* CUDA stages: routed experts (grouped GEMM1 + activation, grouped GEMM2), shared experts,
 * combine, and the multi-head projections. Enqueue-only, graph-capturable. */
#include "backend/cuda/cuda_backend.h"
#include "combine.h"
#include "core/tuning.h"
#include "grouped_gemm.h"

#define ALIGN_UP(v) (((v) + (size_t)255) & ~(size_t)255)

typedef struct {
  size_t sched, h, total;
} ExpertsPlan;

static void experts_plan(const moeLayer *L, int64_t T, ExpertsPlan *p) {
  const size_t rows = (size_t)(T > 0 ? T : 0) * (size_t)L->K;
  size_t off = 0;
  p->sched = off; off += ALIGN_UP(MOE_GEMM_SCHEDULE_SCRATCH_BYTES(L->E_local));
  p->h = off; off += ALIGN_UP(rows * (size_t)L->I * moe_layer_elem_size(L));
  p->total = off;
}

typedef struct {
  size_t h, acc, total;
} SharedPlan;

static void shared_plan(const moeLayer *L, int64_t T, SharedPlan *p) {
  const size_t t = (size_t)(T > 0 ? T : 0);
  size_t off = 0;
  p->h = off; off += ALIGN_UP(t * (size_t)L->Is * moe_layer_elem_size(L));
  p->acc = off;
  if (L->S > 1) off += ALIGN_UP(t * (size_t)L->H * sizeof(float));
  p->total = off;
}

size_t moe_cuda_ffn_scratch_bytes(const moeLayer *L, int64_t T) {
  ExpertsPlan ep;
  SharedPlan sp;
  experts_plan(L, T, &ep);
  shared_plan(L, T, &sp);
  return ep.total > sp.total ? ep.total : sp.total;
}

static moeGemmParams gemm_defaults(const moeLayer *L) {
  moeGemmParams g;
  g.dtype = (int32_t)L->cfg.dtype;
  g.M = g.N = g.K = 0;
  g.num_groups = 0;
  g.group_offsets = NULL;
  g.schedule_scratch = NULL;
  g.A = NULL;
  g.lda = 0;
  g.gather = NULL;
  g.gather_div = 1;
  g.gather_limit = 0;
  g.row_scale = NULL;
  g.B = NULL;
  g.b_group_stride = 0;
  g.bias = NULL;
  g.bias_group_stride = 0;
  g.act = MOE_GEMM_ACT_NONE;
  g.gated = 0;
  g.alpha = L->cfg.swiglu_alpha;
  g.limit = L->cfg.swiglu_limit;
  g.accum_in = NULL;
  g.add = NULL;
  g.C = NULL;
  g.ldc = 0;
  g.c_f32 = 0;
  g.kernel = MOE_GEMM_KERNEL_AUTO;
  return g;
}

/* MOE_GEMM_KERNEL (the context's override), else the context's tuning table decides the kernel
 * of g's shape, else the heuristic (AUTO). The rows per group are the average the host can know
 * without a synchronization: M / groups. The wgmma kernel exists for compute capability 9.x
 * only (sm_90a); elsewhere that choice runs as tiled. AUTO never picks wgmma: it becomes the
 * default once a GPU has measured it (bench/NOTES.md). */
static void choose_kernel(const moeLayer *L, moeGemmParams *g) {
  const int64_t groups = g->group_offsets ? g->num_groups : 1;
  const int64_t rows = (g->M + groups - 1) / groups;
  int32_t k = L->ctx->gemm_kernel;
  if (k == MOE_GEMM_KERNEL_AUTO)
    k = (int32_t)moe_tuning_lookup(&L->ctx->tuning, g->dtype, g->N, g->K, rows);
  const moeCudaState *st = (const moeCudaState *)L->ctx->backend_state;
  if (k == MOE_GEMM_KERNEL_WGMMA && (!st || st->cc_major != 9)) k = MOE_GEMM_KERNEL_TILED;
  g->kernel = k;
}

moeStatus_t moe_cuda_experts(const moeLayer *L, const moeExpertsArgs *a, moeScratch s,
                             moeStream_t stream) {
  const int64_t T = a->T;
  if (T <= 0 || L->E_local <= 0) return moeSuccess;
  cudaStream_t st = moe_cuda_stream(L->ctx, stream);
  ExpertsPlan ep;
  experts_plan(L, T, &ep);
  if (s.bytes < ep.total || !s.ptr)
    return moe_error(moeErrorInvalidArgument, "experts: scratch of %zu bytes, %zu needed", s.bytes,
                     ep.total);
  char *base = (char *)s.ptr;
  void *h = base + ep.h;
  const int64_t rows = T * L->K;

  /* GEMM1: h[r] = act(s_r * x[sorted_pairs[r] / K] W_gate_up^T + b), rows grouped by expert.
   * expert_offsets and sorted_pairs are not checked here (that needs a host synchronization):
   * the grouped GEMM keeps every value of them inside the buffers (grouped_gemm.h). */
  moeGemmParams g1 = gemm_defaults(L);
  g1.M = rows;
  g1.N = L->GI;
  g1.K = L->Hr;
  g1.num_groups = L->E_local;
  g1.group_offsets = a->expert_offsets;
  g1.schedule_scratch = base + ep.sched;
  g1.A = a->x;
  g1.lda = L->Hr;
  g1.gather = a->sorted_pairs;
  g1.gather_div = L->K;
  g1.gather_limit = rows; /* pairs t * K + j of x [T, Hr] and weights [T, K] */
  g1.row_scale = (L->cfg.routing == moeRoutingSigmoidTop1InputScale) ? a->weights : NULL;
  g1.B = L->w_gate_up;
  g1.b_group_stride = L->GI * L->Hr;
  g1.bias = L->b_gate_up;
  g1.bias_group_stride = L->GI;
  g1.act = (int32_t)L->cfg.activation;
  g1.gated = L->gated;
  g1.C = h;
  g1.ldc = L->I;
  choose_kernel(L, &g1);
  MOE_CUDA_TRY(moe_launch_grouped_gemm(&g1, st), "experts: grouped GEMM1 (gate/up + activation)");

  /* GEMM2: expert_out[r] = h[r] W_down^T + b_down. */
  moeGemmParams g2 = gemm_defaults(L);
  g2.M = rows;
  g2.N = L->Hr;
  g2.K = L->I;
  g2.num_groups = L->E_local;
  g2.group_offsets = a->expert_offsets;
  g2.schedule_scratch = base + ep.sched;
  g2.A = h;
  g2.lda = L->I;
  g2.B = L->w_down;
  g2.b_group_stride = L->Hr * L->I;
  g2.bias = L->b_down;
  g2.bias_group_stride = L->Hr;
  g2.C = a->expert_out;
  g2.ldc = L->Hr;
  choose_kernel(L, &g2);
  MOE_CUDA_TRY(moe_launch_grouped_gemm(&g2, st), "experts: grouped GEMM2 (down)");
  return moeSuccess;
}

moeStatus_t moe_cuda_shared_experts(const moeLayer *L, const moeSharedArgs *a, moeScratch s,
                                    moeStream_t stream) {
  const int64_t T = a->T;
  if (T <= 0 || L->S <= 0) return moeSuccess;
  cudaStream_t st = moe_cuda_stream(L->ctx, stream);
  SharedPlan sp;
  shared_plan(L, T, &sp);
  if (s.bytes < sp.total || !s.ptr)
    return moe_error(moeErrorInvalidArgument, "shared experts: scratch of %zu bytes, %zu needed",
                     s.bytes, sp.total);
  char *base = (char *)s.ptr;
  void *h = base + sp.h;
  float *acc = (float *)(base + sp.acc);
  const size_t es = moe_layer_elem_size(L);
  for (int32_t e = 0; e < L->S; ++e) {
    moeGemmParams g1 = gemm_defaults(L);
    g1.M = T;
    g1.N = L->GIs;
    g1.K = L->H;
    g1.A = a->x;
    g1.lda = L->H;
    g1.B = (const char *)L->shared_gate_up + (size_t)e * (size_t)L->GIs * (size_t)L->H * es;
    g1.act = (int32_t)L->cfg.activation;
    g1.gated = L->gated;
    g1.C = h;
    g1.ldc = L->Is;
    choose_kernel(L, &g1);
    MOE_CUDA_TRY(moe_launch_grouped_gemm(&g1, st), "shared experts: GEMM1");

    /* Shared experts are summed in fp32 (acc) and rounded once, by the last one. */
    moeGemmParams g2 = gemm_defaults(L);
    g2.M = T;
    g2.N = L->H;
    g2.K = L->Is;
    g2.A = h;
    g2.lda = L->Is;
    g2.B = (const char *)L->shared_down + (size_t)e * (size_t)L->H * (size_t)L->Is * es;
    g2.ldc = L->H;
    g2.accum_in = e > 0 ? acc : NULL;
    if (e == L->S - 1) {
      g2.C = a->shared_out;
    } else {
      g2.C = acc;
      g2.c_f32 = 1;
    }
    choose_kernel(L, &g2);
    MOE_CUDA_TRY(moe_launch_grouped_gemm(&g2, st), "shared experts: GEMM2");
  }
  return moeSuccess;
}

moeStatus_t moe_cuda_combine(const moeLayer *L, const moeCombineArgs *a, moeStream_t stream) {
  moeCombineParams p;
  p.T = a->T;
  p.K = L->K;
  p.Hr = L->Hr;
  p.dtype = (int32_t)L->cfg.dtype;
  p.unit_weights = L->cfg.routing == moeRoutingSigmoidTop1InputScale;
  p.expert_out = a->expert_out;
  p.rows = a->T * (int64_t)L->K;
  p.pair_rows = a->pair_rows;
  p.weights = a->weights;
  p.shared_out = a->shared_out;
  p.y = a->y;
  MOE_CUDA_TRY(moe_launch_combine(&p, moe_cuda_stream(L->ctx, stream)), "combine");
  return moeSuccess;
}

moeStatus_t moe_cuda_project(const moeLayer *L, const moeProjectArgs *a, moeScratch s,
                             moeStream_t stream) {
  (void)s;
  if (a->T <= 0) return moeSuccess;
  moeGemmParams g = gemm_defaults(L);
  g.M = a->T;
  g.N = L->H;
  g.K = L->H;
  g.A = a->x;
  g.lda = L->H;
  g.B = a->weight;
  g.bias = a->bias;
  g.add = a->add;
  g.C = a->out;
  g.ldc = L->H;
  choose_kernel(L, &g);
  MOE_CUDA_TRY(moe_launch_grouped_gemm(&g, moe_cuda_stream(L->ctx, stream)), "project");
  return moeSuccess;
}
