// Expert-parallel pack (gather token rows into the send buffer, rank-major) and unpack
// (sum the partial rows that came back per token, in rank order, + shared experts).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ep_pack.h"

namespace {

template <typename V>
__global__ void gather_rows_kernel(V *__restrict__ dst, const V *__restrict__ src,
                                   const int64_t *__restrict__ idx, int64_t n, int64_t row_vecs) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const V *s = src + idx[i] * row_vecs;
    V *d = dst + i * row_vecs;
    for (int64_t v = threadIdx.x; v < row_vecs; v += blockDim.x) d[v] = s[v];
  }
}

__device__ __forceinline__ float load(const void *p, int dtype, int64_t i) {
  if (dtype == 1) return __half2float(static_cast<const __half *>(p)[i]);
  if (dtype == 2) return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
  return static_cast<const float *>(p)[i];
}

__device__ __forceinline__ void store(void *p, int dtype, int64_t i, float v) {
  if (dtype == 1) static_cast<__half *>(p)[i] = __float2half_rn(v);
  else if (dtype == 2) static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v);
  else static_cast<float *>(p)[i] = v;
}

__global__ void reduce_rows_kernel(void *__restrict__ y, const void *__restrict__ back,
                                   const void *__restrict__ shared,
                                   const int64_t *__restrict__ tok_ptr,
                                   const int64_t *__restrict__ tok_rows, int64_t T, int64_t H,
                                   int dtype) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int64_t b = tok_ptr[t], e = tok_ptr[t + 1];
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
      float acc = 0.0f;
      for (int64_t i = b; i < e; ++i) acc += load(back, dtype, tok_rows[i] * H + h);
      if (shared) acc += load(shared, dtype, t * H + h);
      store(y, dtype, t * H + h, acc);
    }
  }
}

inline unsigned grid_for(int64_t rows) {
  const int64_t cap = 65535LL * 4;
  return static_cast<unsigned>(rows < 1 ? 1 : (rows < cap ? rows : cap));
}

}  // namespace

extern "C" int moe_ep_gather_rows_cuda(void *dst, const void *src, const int64_t *idx, int64_t n,
                                       size_t row_bytes, void *stream) {
  if (n <= 0 || row_bytes == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const uintptr_t a = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src);
  if (row_bytes % 16 == 0 && a % 16 == 0) {
    gather_rows_kernel<<<grid_for(n), 128, 0, s>>>(static_cast<int4 *>(dst),
                                                   static_cast<const int4 *>(src), idx, n,
                                                   static_cast<int64_t>(row_bytes / 16));
  } else if (row_bytes % 4 == 0 && a % 4 == 0) {
    gather_rows_kernel<<<grid_for(n), 128, 0, s>>>(static_cast<int *>(dst),
                                                   static_cast<const int *>(src), idx, n,
                                                   static_cast<int64_t>(row_bytes / 4));
  } else {
    gather_rows_kernel<<<grid_for(n), 128, 0, s>>>(static_cast<char *>(dst),
                                                   static_cast<const char *>(src), idx, n,
                                                   static_cast<int64_t>(row_bytes));
  }
  return static_cast<int>(cudaGetLastError());
}

extern "C" int moe_ep_reduce_rows_cuda(void *y, const void *back, const void *shared,
                                       const int64_t *tok_ptr, const int64_t *tok_rows, int64_t T,
                                       int64_t H, int dtype, void *stream) {
  if (T <= 0 || H <= 0) return 0;
  const int threads = H >= 256 ? 256 : 128;
  reduce_rows_kernel<<<grid_for(T), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      y, back, shared, tok_ptr, tok_rows, T, H, dtype);
  return static_cast<int>(cudaGetLastError());
}
