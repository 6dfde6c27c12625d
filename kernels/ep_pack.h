/* Expert-parallel pack/unpack kernels: the GPU path of csrc/ep/layout.h (same layout arrays).
 * Launchers are asynchronous on the given stream and return the launch error (0 = success). */
#ifndef MOE_KERNELS_EP_PACK_H
#define MOE_KERNELS_EP_PACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst row i = src row idx[i] for i < n; rows of row_bytes bytes (any size; 16-byte vectors
 * when row_bytes and both pointers allow). Returns: a cudaError_t as int. */
int moe_ep_gather_rows_cuda(void *dst, const void *src, const int64_t *idx, int64_t n,
                            size_t row_bytes, void *stream);

/* y[t] = sum_{i in [tok_ptr[t], tok_ptr[t+1])} back[tok_rows[i]] (fp32, in that order)
 * + shared[t] (if not NULL), rows of H elements of dtype (0 f32, 1 f16, 2 bf16, as moeDtype_t).
 * Deterministic: one thread per (t, h), no atomics. Returns: a cudaError_t as int. */
int moe_ep_reduce_rows_cuda(void *y, const void *back, const void *shared, const int64_t *tok_ptr,
                            const int64_t *tok_rows, int64_t T, int64_t H, int dtype,
                            void *stream);

#ifdef __cplusplus
}
#endif
#endif
