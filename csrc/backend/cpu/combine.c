/* Combine stage of the CPU backend: y[t] = sum_j w[t, j] * expert_out[pair_rows[t * K + j]]
 * (+ shared_out[t]), in fp32, slots in order j = 0..K-1, the shared output last, stored in the
 * layer's dtype. Input-scaled routing (Llama-4) sums with weight 1: its weights were applied to
 * the expert's input. Each token row is produced by one thread: deterministic. */
#include "backend/cpu/cpu_internal.h"

#define COLS 256 /* columns per chunk: the fp32 accumulators live on the stack */

moeStatus_t moe_cpu_combine(const moeLayer *L, const moeCombineArgs *a, moeStream_t stream) {
  const int64_t T = a->T, K = L->K, Hr = L->Hr;
  const moeDtype_t dt = L->cfg.dtype;
  const int unit = L->cfg.routing == moeRoutingSigmoidTop1InputScale;
  if (T <= 0) return moeSuccess;
  const int64_t TK = T * K;
  const size_t es = moe_dtype_size(dt);
  if (!unit && a->weights == NULL)
    return moe_error(moeErrorInvalidArgument, "combine: weights must not be NULL for this routing");
  /* pair_rows index expert_out; the reference refuses rows it cannot hold (< T * K) */
  for (int64_t p = 0; p < TK; ++p)
    if (a->pair_rows[p] < -1 || a->pair_rows[p] >= TK)
      return moe_error(moeErrorInvalidArgument,
                       "combine: pair_rows[%lld] = %lld outside [-1, T * K = %lld)", (long long)p,
                       (long long)a->pair_rows[p], (long long)TK);
#pragma omp parallel for schedule(static) \
    num_threads(moe_cpu_threads(L)) if (TK * Hr >= MOE_CPU_PAR_MIN)
  for (int64_t t = 0; t < T; ++t) {
    float acc[COLS], row[COLS];
    for (int64_t c0 = 0; c0 < Hr; c0 += COLS) {
      const int64_t nc = Hr - c0 < COLS ? Hr - c0 : COLS;
      for (int64_t c = 0; c < nc; ++c) acc[c] = 0.0f;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t r = a->pair_rows[t * K + j];
        if (r < 0) continue;
        const float w = unit ? 1.0f : a->weights[t * K + j];
        moe_cpu_rows_to_f32(
            row, (const char *)a->expert_out + ((size_t)r * (size_t)Hr + (size_t)c0) * es, dt, 0, 1,
            nc);
        for (int64_t c = 0; c < nc; ++c) acc[c] += w * row[c];
      }
      const size_t ybase = (size_t)t * (size_t)Hr + (size_t)c0;
      if (a->shared_out) {
        moe_cpu_rows_to_f32(row, (const char *)a->shared_out + ybase * es, dt, 0, 1, nc);
        for (int64_t c = 0; c < nc; ++c) acc[c] += row[c];
      }
      for (int64_t c = 0; c < nc; ++c) moe_store_f32(a->y, dt, ybase + c, acc[c]);
    }
  }
  return moeSuccess;
}
