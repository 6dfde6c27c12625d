/* The CUDA backend: context, memory, and the ops table. The stages live in cuda_route.c
 * (route, permute, selection bias) and cuda_ffn.c (experts, shared experts, combine, project). */
#include "backend/cuda/cuda_backend.h"

#include <stdlib.h>

#include "grouped_gemm.h"

int moe_cuda_device_count(void) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError(); /* e.g. cudaErrorInsufficientDriver (35): no GPU here */
    return 0;
  }
  return n;
}

static moeStatus_t cuda_context_init(moeContext_t ctx) {
  int dev = ctx->device;
  if (dev < 0) {
    MOE_CUDA_TRY(cudaGetDevice(&dev), "cudaGetDevice");
  }
  MOE_CUDA_TRY(cudaSetDevice(dev), "cudaSetDevice");
  struct cudaDeviceProp prop;
  MOE_CUDA_TRY(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  moeCudaState *st = (moeCudaState *)calloc(1, sizeof(moeCudaState));
  if (!st) return moe_error(moeErrorOutOfMemory, "CUDA backend state: out of host memory");
  st->device = dev;
  st->sm_count = prop.multiProcessorCount;
  st->cc_major = prop.major;
  st->cc_minor = prop.minor;
  st->smem_per_block_optin = prop.sharedMemPerBlockOptin;
  if (prop.major < 8) {
    free(st);
    return moe_error(moeErrorBackendUnavailable,
                     "CUDA device %d (%s) has compute capability %d.%d; libmoe needs >= 8.0",
                     dev, prop.name, prop.major, prop.minor);
  }
  cudaError_t kerr = moe_grouped_gemm_init();
  if (kerr != cudaSuccess) {
    free(st);
    return moe_error(moeErrorCuda, "kernel attributes (cudaFuncSetAttribute): %s",
                     cudaGetErrorString(kerr));
  }
  cublasStatus_t cs = cublasCreate(&st->cublas);
  if (cs != CUBLAS_STATUS_SUCCESS) {
    free(st);
    return moe_error(moeErrorCublas, "cublasCreate failed with status %d", (int)cs);
  }
  ctx->device = dev;
  ctx->backend_state = st;
  return moeSuccess;
}

static void cuda_context_fini(moeContext_t ctx) {
  moeCudaState *st = (moeCudaState *)ctx->backend_state;
  if (!st) return;
  if (st->cublas) cublasDestroy(st->cublas);
  free(st);
  ctx->backend_state = NULL;
}

static moeStatus_t cuda_mem_alloc(moeContext_t ctx, size_t bytes, void **ptr) {
  *ptr = NULL;
  if (bytes == 0) return moeSuccess;
  MOE_CUDA_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  cudaError_t err = cudaMalloc(ptr, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    *ptr = NULL;
    return moe_error(err == cudaErrorMemoryAllocation ? moeErrorOutOfMemory : moeErrorCuda,
                     "cudaMalloc(%zu bytes): %s", bytes, cudaGetErrorString(err));
  }
  return moeSuccess;
}

static void cuda_mem_free(moeContext_t ctx, void *ptr) {
  (void)ctx;
  if (ptr) (void)cudaFree(ptr);
}

/* Copies go on the context's stream and are waited for: ordered after the work already
 * enqueued there (e.g. alloc_zeroed's cudaMemsetAsync of a bias that is uploaded right after),
 * and complete on return. A plain cudaMemcpy runs on the legacy stream, which a non-blocking
 * context stream does not order against, and from pageable memory it may return before the
 * data has reached the device. */
static moeStatus_t cuda_upload(moeContext_t ctx, void *dst, const void *host_src, size_t bytes) {
  if (bytes == 0) return moeSuccess;
  cudaStream_t st = moe_cuda_stream(ctx, NULL);
  MOE_CUDA_TRY(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, st),
               "upload (cudaMemcpyAsync)");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "upload (cudaStreamSynchronize)");
  return moeSuccess;
}

static moeStatus_t cuda_download(moeContext_t ctx, void *host_dst, const void *src, size_t bytes) {
  if (bytes == 0) return moeSuccess;
  cudaStream_t st = moe_cuda_stream(ctx, NULL);
  MOE_CUDA_TRY(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, st),
               "download (cudaMemcpyAsync)");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "download (cudaStreamSynchronize)");
  return moeSuccess;
}

static moeStatus_t cuda_memset_zero(moeContext_t ctx, void *dst, size_t bytes, moeStream_t stream) {
  if (bytes == 0) return moeSuccess;
  MOE_CUDA_TRY(cudaMemsetAsync(dst, 0, bytes, moe_cuda_stream(ctx, stream)), "cudaMemsetAsync");
  return moeSuccess;
}

static moeStatus_t cuda_synchronize(moeContext_t ctx, moeStream_t stream) {
  MOE_CUDA_TRY(cudaStreamSynchronize(moe_cuda_stream(ctx, stream)), "cudaStreamSynchronize");
  return moeSuccess;
}

const moeBackendOps moe_cuda_backend_ops = {
    .name = "cuda",
    .context_init = cuda_context_init,
    .context_fini = cuda_context_fini,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .memset_zero = cuda_memset_zero,
    .synchronize = cuda_synchronize,
    .scratch_bytes = moe_cuda_scratch_bytes,
    .route = moe_cuda_route,
    .permute = moe_cuda_permute,
    .experts = moe_cuda_experts,
    .shared_experts = moe_cuda_shared_experts,
    .combine = moe_cuda_combine,
    .project = moe_cuda_project,
    .update_selection_bias = moe_cuda_update_selection_bias,
};
