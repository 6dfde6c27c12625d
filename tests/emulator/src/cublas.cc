// The cuBLAS subset of the emulated device: the one GEMM bench/ measures its dense ceiling with
// (cublasGemmEx), run on the host in stream order like every emulated kernel. Part of
// libmoe_cuda_emu.so with runtime.cc.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "moe_emu/emu.h"

#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

struct cublasContext {
  cudaStream_t stream = nullptr;
};

EMU_EXPORT cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
  if (!h) return CUBLAS_STATUS_INVALID_VALUE;
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
EMU_EXPORT cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
EMU_EXPORT cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}

namespace {
float load_elem(const void *p, cudaDataType t, size_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float *>(p)[i];
    case CUDA_R_16F: return __half2float(static_cast<const __half *>(p)[i]);
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    default: return 0.f;
  }
}
void store_elem(void *p, cudaDataType t, size_t i, float v) {
  switch (t) {
    case CUDA_R_32F: static_cast<float *>(p)[i] = v; break;
    case CUDA_R_16F: static_cast<__half *>(p)[i] = __float2half_rn(v); break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v); break;
    default: break;
  }
}
bool supported(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }
}  // namespace

// Column-major C = alpha op(A) op(B) + beta C with fp32 accumulation (alpha, beta are floats
// for the fp32 compute types libmoe uses).
EMU_EXPORT cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                       int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                       const void *B, cudaDataType bt, int ldb, const void *beta, void *C,
                                       cudaDataType ct, int ldc, cublasComputeType_t compute,
                                       cublasGemmAlgo_t algo) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!supported(at) || !supported(bt) || !supported(ct)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
  const bool tra = ta != CUBLAS_OP_N, trb = tb != CUBLAS_OP_N;
  const cudaError_t e = moe_emu::enqueue_host(h->stream, [=]() {
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        float s = 0.f;
        for (int p = 0; p < k; ++p) {
          const size_t ai = tra ? size_t(i) * lda + p : size_t(p) * lda + i;
          const size_t bi = trb ? size_t(p) * ldb + j : size_t(j) * ldb + p;
          s += load_elem(A, at, ai) * load_elem(B, bt, bi);
        }
        const size_t ci = size_t(j) * ldc + i;
        store_elem(C, ct, ci, al * s + (be != 0.f ? be * load_elem(C, ct, ci) : 0.f));
      }
    return cudaSuccess;
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
