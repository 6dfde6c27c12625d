/* Internal to the CUDA backend: per-context state, error helpers, the stage functions that
 * cuda_backend.c puts in moe_cuda_backend_ops. */
#ifndef MOE_BACKEND_CUDA_CUDA_BACKEND_H
#define MOE_BACKEND_CUDA_CUDA_BACKEND_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "core/status.h"

typedef struct {
  int device;
  cublasHandle_t cublas;  /* for comparisons in tests / bench; the forward path does not use it */
  int sm_count;
  int cc_major, cc_minor;
  size_t smem_per_block_optin;
} moeCudaState;

/* Turns a failing CUDA call into moeErrorCuda with "what: <CUDA's text>". */
#define MOE_CUDA_TRY(expr, what)                                                          \
  do {                                                                                    \
    cudaError_t moe_cuda_err_ = (expr);                                                   \
    if (moe_cuda_err_ != cudaSuccess)                                                     \
      return moe_error(moeErrorCuda, "%s: %s", (what), cudaGetErrorString(moe_cuda_err_)); \
  } while (0)

static inline cudaStream_t moe_cuda_stream(moeContext_t ctx, moeStream_t stream) {
  return (cudaStream_t)moe_stream_or_default(ctx, stream);
}

size_t moe_cuda_scratch_bytes(const moeLayer *layer, int64_t T);
moeStatus_t moe_cuda_route(const moeLayer *layer, const moeRouteArgs *args, moeScratch scratch,
                           moeStream_t stream);
moeStatus_t moe_cuda_permute(const moeLayer *layer, const moePermuteArgs *args,
                             moeScratch scratch, moeStream_t stream);
moeStatus_t moe_cuda_experts(const moeLayer *layer, const moeExpertsArgs *args,
                             moeScratch scratch, moeStream_t stream);
moeStatus_t moe_cuda_shared_experts(const moeLayer *layer, const moeSharedArgs *args,
                                    moeScratch scratch, moeStream_t stream);
moeStatus_t moe_cuda_combine(const moeLayer *layer, const moeCombineArgs *args,
                             moeStream_t stream);
moeStatus_t moe_cuda_project(const moeLayer *layer, const moeProjectArgs *args,
                             moeScratch scratch, moeStream_t stream);
moeStatus_t moe_cuda_update_selection_bias(const moeLayer *layer, const int64_t *expert_counts,
                                           float rate, moeStream_t stream);

#endif
