/* The context: which backend computes, on which device and stream, with whose allocator. */
#ifndef MOE_CORE_CONTEXT_H
#define MOE_CORE_CONTEXT_H

#include "core/tuning.h"
#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

struct moeBackendOps;

struct moeContext_s {
  moeBackend_t backend;             /* resolved: never moeBackendAuto */
  int device;                       /* CUDA ordinal; -1 on the CPU backend */
  moeStream_t stream;               /* default stream for enqueued work */
  moeAllocator_t allocator;         /* user callbacks, or all NULL */
  int num_threads;                  /* CPU backend; 0 = OpenMP default */
  const struct moeBackendOps *ops;  /* the backend's stage implementations */
  void *backend_state;              /* owned by the backend (cuBLAS handle, events, ...) */
  moeTuningTable tuning;            /* GEMM kernel choices; empty = the heuristic */
  int32_t gemm_kernel;              /* moeGemmKernel forced by MOE_GEMM_KERNEL, else AUTO */
};

/* Backend memory through the user's allocator when one is set, else the backend's own. */
moeStatus_t moe_backend_alloc(moeContext_t ctx, size_t bytes, void **ptr);
void moe_backend_free(moeContext_t ctx, void *ptr);

/* The stream work goes to: the call's stream, else the context's. */
static inline moeStream_t moe_stream_or_default(moeContext_t ctx, moeStream_t stream) {
  return stream ? stream : ctx->stream;
}

#ifdef __cplusplus
}
#endif
#endif
