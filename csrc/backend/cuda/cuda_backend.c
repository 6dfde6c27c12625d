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

/* Device properties, kernel attributes and the cuBLAS handle of device dev, which is current. */
static moeStatus_t context_init_current(moeContext_t ctx, int dev) {
  struct cudaDeviceProp prop;
  MOE_CUDA_TRY(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  if (prop.major < 8)
    return moe_error(moeErrorBackendUnavailable,
                     "CUDA device %d (%s) has compute capability %d.%d; libmoe needs >= 8.0",
                     dev, prop.name, prop.major, prop.minor);
  cudaError_t kerr = moe_grouped_gemm_init();
  if (kerr != cudaSuccess)
    return moe_error(moeErrorCuda, "kernel attributes (cudaFuncSetAttribute): %s",
                     cudaGetErrorString(kerr));
  moeCudaState *st = (moeCudaState *)calloc(1, sizeof(moeCudaState));
  if (!st) return moe_error(moeErrorOutOfMemory, "CUDA backend state: out of host memory");
  st->device = dev;
  st->sm_count = prop.multiProcessorCount;
  st->cc_major = prop.major;
  st->cc_minor = prop.minor;
  st->smem_per_block_optin = prop.sharedMemPerBlockOptin;
  cublasStatus_t cs = cublasCreate(&st->cublas);
  if (cs != CUBLAS_STATUS_SUCCESS) {
    free(st);
    return moe_error(moeErrorCublas, "cublasCreate failed with status %d", (int)cs);
  }
  ctx->device = dev;
  ctx->backend_state = st;
  return moeSuccess;
}

/* Kernel attributes and the cuBLAS handle belong to the context's device: it is made current
 * for the init and the caller's current device is restored after, success or not, as every op
 * below does (moeContextCreate must not move the calling thread to another GPU). */
static moeStatus_t cuda_context_init(moeContext_t ctx) {
  int previous = 0;
  MOE_CUDA_TRY(cudaGetDevice(&previous), "cudaGetDevice");
  const int dev = ctx->device < 0 ? previous : ctx->device;
  int count = moe_cuda_device_count();
  if (dev >= count)
    return moe_error(moeErrorInvalidConfig, "config.device = %d but only %d CUDA device(s) are visible",
                     dev, count);
  if (dev != previous) MOE_CUDA_TRY(cudaSetDevice(dev), "cudaSetDevice");
  moeStatus_t status = context_init_current(ctx, dev);
  if (dev != previous) (void)cudaSetDevice(previous);
  return status;
}

static void cuda_context_fini(moeContext_t ctx) {
  moeCudaState *st = (moeCudaState *)ctx->backend_state;
  if (!st) return;
  int previous = -1; /* the handle belongs to the context's device: destroy it there */
  if (cudaGetDevice(&previous) == cudaSuccess && previous != ctx->device)
    (void)cudaSetDevice(ctx->device);
  if (st->cublas) cublasDestroy(st->cublas);
  if (previous >= 0 && previous != ctx->device) (void)cudaSetDevice(previous);
  free(st);
  ctx->backend_state = NULL;
}

static moeStatus_t cuda_mem_alloc(moeContext_t ctx, size_t bytes, void **ptr) {
  *ptr = NULL;
  if (bytes == 0) return moeSuccess;
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

/* ---- every op runs on the context's device ------------------------------------------------
 * A context is bound to one device, but the calling thread's current device is its own: each op
 * below switches to the context's device when it differs and switches back after, so a context
 * on device 1 used from a thread on device 0 neither launches on the wrong GPU nor changes the
 * caller's current device. cudaGetDevice/cudaSetDevice are legal during stream capture. */
typedef struct {
  int previous;
  int switched;
} DeviceGuard;

static moeStatus_t device_enter(moeContext_t ctx, DeviceGuard *g) {
  g->switched = 0;
  MOE_CUDA_TRY(cudaGetDevice(&g->previous), "cudaGetDevice");
  if (g->previous != ctx->device) {
    MOE_CUDA_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
    g->switched = 1;
  }
  return moeSuccess;
}

static void device_leave(const DeviceGuard *g) {
  if (g->switched) (void)cudaSetDevice(g->previous);
}

/* Defines NAME_on_device(PARAMS), which calls FN(ARGS) on the device of CTX. */
#define ON_DEVICE(name, fn, ctx_of, params, args)        \
  static moeStatus_t name##_on_device params {           \
    DeviceGuard guard;                                   \
    MOE_TRY(device_enter(ctx_of, &guard));               \
    moeStatus_t status = fn args;                        \
    device_leave(&guard);                                \
    return status;                                       \
  }

ON_DEVICE(mem_alloc, cuda_mem_alloc, ctx, (moeContext_t ctx, size_t bytes, void **ptr), (ctx, bytes, ptr))
ON_DEVICE(upload, cuda_upload, ctx, (moeContext_t ctx, void *dst, const void *src, size_t bytes),
          (ctx, dst, src, bytes))
ON_DEVICE(download, cuda_download, ctx, (moeContext_t ctx, void *dst, const void *src, size_t bytes),
          (ctx, dst, src, bytes))
ON_DEVICE(memset_zero, cuda_memset_zero, ctx,
          (moeContext_t ctx, void *dst, size_t bytes, moeStream_t stream), (ctx, dst, bytes, stream))
ON_DEVICE(synchronize, cuda_synchronize, ctx, (moeContext_t ctx, moeStream_t stream), (ctx, stream))
ON_DEVICE(route, moe_cuda_route, L->ctx,
          (const moeLayer *L, const moeRouteArgs *a, moeScratch s, moeStream_t st), (L, a, s, st))
ON_DEVICE(permute, moe_cuda_permute, L->ctx,
          (const moeLayer *L, const moePermuteArgs *a, moeScratch s, moeStream_t st), (L, a, s, st))
ON_DEVICE(experts, moe_cuda_experts, L->ctx,
          (const moeLayer *L, const moeExpertsArgs *a, moeScratch s, moeStream_t st), (L, a, s, st))
ON_DEVICE(shared_experts, moe_cuda_shared_experts, L->ctx,
          (const moeLayer *L, const moeSharedArgs *a, moeScratch s, moeStream_t st), (L, a, s, st))
ON_DEVICE(combine, moe_cuda_combine, L->ctx,
          (const moeLayer *L, const moeCombineArgs *a, moeStream_t st), (L, a, st))
ON_DEVICE(project, moe_cuda_project, L->ctx,
          (const moeLayer *L, const moeProjectArgs *a, moeScratch s, moeStream_t st), (L, a, s, st))
ON_DEVICE(update_selection_bias, moe_cuda_update_selection_bias, L->ctx,
          (const moeLayer *L, const int64_t *counts, float rate, moeStream_t st), (L, counts, rate, st))

static void mem_free_on_device(moeContext_t ctx, void *ptr) {
  DeviceGuard guard;
  if (device_enter(ctx, &guard) != moeSuccess) return;
  cuda_mem_free(ctx, ptr);
  device_leave(&guard);
}

const moeBackendOps moe_cuda_backend_ops = {
    .name = "cuda",
    .context_init = cuda_context_init,
    .context_fini = cuda_context_fini,
    .mem_alloc = mem_alloc_on_device,
    .mem_free = mem_free_on_device,
    .upload = upload_on_device,
    .download = download_on_device,
    .memset_zero = memset_zero_on_device,
    .synchronize = synchronize_on_device,
    .scratch_bytes = moe_cuda_scratch_bytes,
    .route = route_on_device,
    .permute = permute_on_device,
    .experts = experts_on_device,
    .shared_experts = shared_experts_on_device,
    .combine = combine_on_device,
    .project = project_on_device,
    .update_selection_bias = update_selection_bias_on_device,
};
