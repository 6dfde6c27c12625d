/* Permutation: a stable sort of the T * K routing selections by local expert.
 * Enqueue-only (no host synchronization), graph-capturable. */
#ifndef MOE_KERNELS_PERMUTE_H
#define MOE_KERNELS_PERMUTE_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int64_t T;
  int32_t K;
  int32_t expert_begin, E_local; /* local experts [expert_begin, expert_begin + E_local) */
  const int32_t *expert_ids;     /* [T, K] global ids, -1 = none */
  int64_t *expert_offsets;       /* [E_local + 1] out */
  int64_t *sorted_pairs;         /* [T * K] out */
  int64_t *pair_rows;            /* [T * K] out, -1 for selections not held here */
  void *scratch;
  size_t scratch_bytes;
} moePermuteParams;

cudaError_t moe_permute_scratch_bytes(int64_t T, int32_t K, int32_t E_local, size_t *bytes);
cudaError_t moe_launch_permute(const moePermuteParams *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
