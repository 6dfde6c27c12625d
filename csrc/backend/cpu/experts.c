/* Expert stages of the CPU backend: routed experts (gathered by the permutation), shared experts
 * (every token, summed in fp32 in shared-expert order) and the multi-head projections.
 *
 * Rows are processed in passes of at most pass_rows rows so that scratch stays bounded for any
 * T: a pass gathers its input rows to fp32 (X32), runs each expert's FFN over its segment of the
 * pass with the intermediate in H32, and stores outputs directly. Splitting into passes changes
 * no result: every row is computed independently in the canonical order. */
#include <omp.h>

#include "backend/cpu/cpu_internal.h"

/* Bytes of fp32 row buffers a pass aims for: large enough that every weight block converted
 * to fp32 is reused across hundreds of rows, small enough for a host workspace. */
#ifndef MOE_CPU_PASS_BYTES
#define MOE_CPU_PASS_BYTES ((int64_t)64 << 20)
#endif
#define PASS_BYTES MOE_CPU_PASS_BYTES
#define PASS_MIN_ROWS 16

static int64_t pass_rows(int64_t rows, int64_t floats_per_row) {
  int64_t cap = PASS_BYTES / (4 * (floats_per_row > 0 ? floats_per_row : 1));
  if (cap < PASS_MIN_ROWS) cap = PASS_MIN_ROWS;
  return rows < cap ? rows : cap;
}

float *moe_cpu_take_tiles(moeCpuArena *a, int64_t tile_floats, int want, int *nth) {
  size_t one = moe_cpu_bytes((uint64_t)tile_floats, sizeof(float));
  size_t left = a->bytes > a->used + MOE_CPU_ALIGN ? a->bytes - a->used - MOE_CPU_ALIGN : 0;
  int64_t fit = one ? (int64_t)(left / one) : 0;
  int n = want < fit ? want : (int)fit;
  if (n < 1) return NULL;
  *nth = n;
  return (float *)moe_cpu_take(a, (uint64_t)tile_floats * (uint64_t)n, sizeof(float));
}

static moeCpuFfnShape routed_shape(const moeLayer *L) {
  moeCpuFfnShape s = {
      L->cfg.dtype,       L->Hr, L->I, L->gated, L->cfg.activation, L->cfg.swiglu_alpha,
      L->cfg.swiglu_limit};
  return s;
}

static moeCpuFfnShape shared_shape(const moeLayer *L) {
  moeCpuFfnShape s = {
      L->cfg.dtype,       L->H, L->Is, L->gated, L->cfg.activation, L->cfg.swiglu_alpha,
      L->cfg.swiglu_limit};
  return s;
}

/* ---- routed experts ------------------------------------------------------------------------ */

size_t moe_cpu_experts_scratch(const moeLayer *L, int64_t T) {
  const moeCpuFfnShape sh = routed_shape(L);
  const int64_t P = pass_rows(T * L->K, L->Hr + L->I);
  size_t b = moe_cpu_bytes((uint64_t)P * (uint64_t)L->Hr, 4);
  b = moe_cpu_add(b, moe_cpu_bytes((uint64_t)P * (uint64_t)L->I, 4));
  b = moe_cpu_add(b, moe_cpu_bytes((uint64_t)L->E_local + 1, sizeof(moeCpuFfnSeg)));
  b = moe_cpu_add(b, moe_cpu_mul(moe_cpu_bytes((uint64_t)moe_cpu_ffn_tile_floats(&sh), 4),
                                 (size_t)moe_cpu_threads(L)));
  return moe_cpu_add(b, 2 * MOE_CPU_ALIGN);
}

moeStatus_t moe_cpu_experts(const moeLayer *L, const moeExpertsArgs *a, moeScratch scratch,
                            moeStream_t stream) {
  const int64_t T = a->T, K = L->K, Hr = L->Hr, I = L->I, TK = T * K;
  const int32_t El = L->E_local;
  const int64_t *off = a->expert_offsets;
  if (T <= 0) return moeSuccess;
  /* The offsets and pairs are data the GPU would trust; the reference checks them. */
  if (off[0] < 0 || off[El] > TK)
    return moe_error(moeErrorInvalidArgument,
                     "experts: expert_offsets span [%lld, %lld), outside [0, T * K = %lld]",
                     (long long)off[0], (long long)off[El], (long long)TK);
  for (int32_t e = 0; e < El; ++e)
    if (off[e + 1] < off[e])
      return moe_error(moeErrorInvalidArgument,
                       "experts: expert_offsets[%d] = %lld < expert_offsets[%d] = %lld "
                       "(offsets must not decrease)",
                       e + 1, (long long)off[e + 1], e, (long long)off[e]);
  for (int64_t r = off[0]; r < off[El]; ++r)
    if (a->sorted_pairs[r] < 0 || a->sorted_pairs[r] >= TK)
      return moe_error(moeErrorInvalidArgument,
                       "experts: sorted_pairs[%lld] = %lld outside [0, T * K = %lld)", (long long)r,
                       (long long)a->sorted_pairs[r], (long long)TK);
  const int64_t total = off[El] - off[0];
  if (total == 0) return moeSuccess;

  const moeCpuFfnShape sh = routed_shape(L);
  const int64_t P = pass_rows(TK, Hr + I);
  moeCpuArena ar = moe_cpu_arena(scratch);
  float *X32 = moe_cpu_take(&ar, (uint64_t)P * (uint64_t)Hr, 4);
  float *H32 = moe_cpu_take(&ar, (uint64_t)P * (uint64_t)I, 4);
  moeCpuFfnSeg *segs = moe_cpu_take(&ar, (uint64_t)El + 1, sizeof(moeCpuFfnSeg));
  int nth = 1;
  float *tiles = (X32 && H32 && segs) ? moe_cpu_take_tiles(&ar, moe_cpu_ffn_tile_floats(&sh),
                                                           moe_cpu_threads(L), &nth)
                                      : NULL;
  if (!tiles)
    return moe_error(moeErrorInvalidArgument,
                     "experts: scratch of %zu bytes is too small for T = %lld (needs %zu)",
                     scratch.bytes, (long long)T, moe_cpu_experts_scratch(L, T));

  const size_t es = moe_dtype_size(L->cfg.dtype);
  const int scale = L->cfg.routing == moeRoutingSigmoidTop1InputScale && a->weights != NULL;
  for (int64_t p0 = off[0]; p0 < off[El]; p0 += P) {
    const int64_t n = off[El] - p0 < P ? off[El] - p0 : P;
    int64_t nseg = 0;
    for (int32_t e = 0; e < El; ++e) {
      const int64_t lo = off[e] > p0 ? off[e] : p0;
      const int64_t hi = off[e + 1] < p0 + n ? off[e + 1] : p0 + n;
      if (hi <= lo) continue;
      moeCpuFfnSeg *g = &segs[nseg++];
      g->w1 = (const char *)L->w_gate_up + (size_t)e * (size_t)L->GI * (size_t)Hr * es;
      g->b1 = L->b_gate_up ? L->b_gate_up + (size_t)e * (size_t)L->GI : NULL;
      g->w2 = (const char *)L->w_down + (size_t)e * (size_t)Hr * (size_t)I * es;
      g->b2 = L->b_down ? L->b_down + (size_t)e * (size_t)Hr : NULL;
      g->row0 = lo - p0;
      g->rows = hi - lo;
      g->out_row0 = lo;
    }
#pragma omp parallel for schedule(static) num_threads(nth) if (n * Hr >= MOE_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pair = a->sorted_pairs[p0 + i];
      float *row = X32 + i * Hr;
      moe_cpu_rows_to_f32(row, a->x, L->cfg.dtype, pair / K, 1, Hr);
      if (scale) {
        const float w = a->weights[pair];
        for (int64_t c = 0; c < Hr; ++c) row[c] *= w;
      }
    }
    moe_cpu_ffn_run(&sh, segs, nseg, X32, H32, a->expert_out, NULL, moeCpuStore, tiles, nth);
  }
  return moeSuccess;
}

/* ---- shared experts ------------------------------------------------------------------------ */

static int64_t shared_pass_rows(const moeLayer *L, int64_t T) {
  return pass_rows(T, L->H + L->Is + (L->S > 1 ? L->H : 0));
}

size_t moe_cpu_shared_scratch(const moeLayer *L, int64_t T) {
  if (L->S <= 0) return 0;
  const moeCpuFfnShape sh = shared_shape(L);
  const int64_t P = shared_pass_rows(L, T);
  size_t b = moe_cpu_bytes((uint64_t)P * (uint64_t)L->H, 4);
  b = moe_cpu_add(b, moe_cpu_bytes((uint64_t)P * (uint64_t)L->Is, 4));
  if (L->S > 1) b = moe_cpu_add(b, moe_cpu_bytes((uint64_t)P * (uint64_t)L->H, 4));
  b = moe_cpu_add(b, moe_cpu_mul(moe_cpu_bytes((uint64_t)moe_cpu_ffn_tile_floats(&sh), 4),
                                 (size_t)moe_cpu_threads(L)));
  return moe_cpu_add(b, 2 * MOE_CPU_ALIGN);
}

moeStatus_t moe_cpu_shared_experts(const moeLayer *L, const moeSharedArgs *a, moeScratch scratch,
                                   moeStream_t stream) {
  const int64_t T = a->T, H = L->H, Is = L->Is;
  const int32_t S = L->S;
  if (T <= 0 || S <= 0) return moeSuccess;
  const moeCpuFfnShape sh = shared_shape(L);
  const int64_t P = shared_pass_rows(L, T);
  moeCpuArena ar = moe_cpu_arena(scratch);
  float *X32 = moe_cpu_take(&ar, (uint64_t)P * (uint64_t)H, 4);
  float *H32 = moe_cpu_take(&ar, (uint64_t)P * (uint64_t)Is, 4);
  float *A32 = S > 1 ? moe_cpu_take(&ar, (uint64_t)P * (uint64_t)H, 4) : NULL;
  int nth = 1;
  float *tiles =
      (X32 && H32 && (S == 1 || A32))
          ? moe_cpu_take_tiles(&ar, moe_cpu_ffn_tile_floats(&sh), moe_cpu_threads(L), &nth)
          : NULL;
  if (!tiles)
    return moe_error(moeErrorInvalidArgument,
                     "shared_experts: scratch of %zu bytes is too small for T = %lld (needs %zu)",
                     scratch.bytes, (long long)T, moe_cpu_shared_scratch(L, T));
  const size_t es = moe_dtype_size(L->cfg.dtype);
  for (int64_t t0 = 0; t0 < T; t0 += P) {
    const int64_t n = T - t0 < P ? T - t0 : P;
#pragma omp parallel for schedule(static) num_threads(nth) if (n * H >= MOE_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; ++i)
      moe_cpu_rows_to_f32(X32 + i * H, a->x, L->cfg.dtype, t0 + i, 1, H);
    for (int32_t s = 0; s < S; ++s) {
      moeCpuFfnSeg g = {
          (const char *)L->shared_gate_up + (size_t)s * (size_t)L->GIs * (size_t)H * es,
          NULL,
          (const char *)L->shared_down + (size_t)s * (size_t)H * (size_t)Is * es,
          NULL,
          0,
          n,
          t0};
      const moeCpuOutMode mode = S == 1       ? moeCpuStore
                                 : s == 0     ? moeCpuAccFirst
                                 : s == S - 1 ? moeCpuAccLast
                                              : moeCpuAccAdd;
      moe_cpu_ffn_run(&sh, &g, 1, X32, H32, a->shared_out, A32, mode, tiles, nth);
    }
  }
  return moeSuccess;
}

/* ---- head / merge projection ------------------------------------------------------------------
 */

size_t moe_cpu_project_scratch(const moeLayer *L, int64_t T) {
  if (L->heads <= 1) return 0;
  const int64_t P = pass_rows(T, L->H);
  size_t b = moe_cpu_bytes((uint64_t)P * (uint64_t)L->H, 4);
  b = moe_cpu_add(b, moe_cpu_mul(moe_cpu_bytes((uint64_t)moe_cpu_linear_tile_floats(L->H), 4),
                                 (size_t)moe_cpu_threads(L)));
  return moe_cpu_add(b, 2 * MOE_CPU_ALIGN);
}

moeStatus_t moe_cpu_project(const moeLayer *L, const moeProjectArgs *a, moeScratch scratch,
                            moeStream_t stream) {
  const int64_t T = a->T, H = L->H;
  if (T <= 0) return moeSuccess;
  const int64_t P = pass_rows(T, H);
  moeCpuArena ar = moe_cpu_arena(scratch);
  float *X32 = moe_cpu_take(&ar, (uint64_t)P * (uint64_t)H, 4);
  int nth = 1;
  float *tiles =
      X32 ? moe_cpu_take_tiles(&ar, moe_cpu_linear_tile_floats(H), moe_cpu_threads(L), &nth) : NULL;
  if (!tiles)
    return moe_error(moeErrorInvalidArgument,
                     "project: scratch of %zu bytes is too small for T = %lld (needs %zu)",
                     scratch.bytes, (long long)T, moe_cpu_project_scratch(L, T));
  /* Rows of a pass are read into X32 before any of them is written, so out may alias x. */
  for (int64_t t0 = 0; t0 < T; t0 += P) {
    const int64_t n = T - t0 < P ? T - t0 : P;
#pragma omp parallel for schedule(static) num_threads(nth) if (n * H >= MOE_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; ++i)
      moe_cpu_rows_to_f32(X32 + i * H, a->x, L->cfg.dtype, t0 + i, 1, H);
    moe_cpu_linear_run(L->cfg.dtype, X32, n, H, a->weight, H, a->bias, a->add, t0, a->out, t0,
                       tiles, nth);
  }
  return moeSuccess;
}
