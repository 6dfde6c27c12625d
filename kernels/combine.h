/* Combine: y[t] = sum_j w[t,j] * expert_out[pair_rows[t*K+j]] (+ shared_out[t]), fp32 sums in
 * slot order j = 0..K-1, one block per token, no atomics: bitwise deterministic. pair_rows is
 * caller data the host cannot check without a synchronization: a row outside [0, rows) is
 * skipped like -1, so no value of it reads outside expert_out. */
#ifndef MOE_KERNELS_COMBINE_H
#define MOE_KERNELS_COMBINE_H

#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int64_t T;
  int32_t K;
  int64_t Hr;
  int32_t dtype;
  int32_t unit_weights;          /* input-scaled routing: every kept selection sums with 1 */
  const void *expert_out;        /* [rows, Hr] sorted */
  int64_t rows;                  /* rows of expert_out (T * K) */
  const int64_t *pair_rows;      /* [T * K], -1 (or anything outside [0, rows)) = no row */
  const float *weights;          /* [T, K] */
  const void *shared_out;        /* [T, Hr] or NULL */
  void *y;                       /* [T, Hr] */
} moeCombineParams;

cudaError_t moe_launch_combine(const moeCombineParams *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
