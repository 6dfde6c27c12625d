#include "combine.h"

#include "moe_kernels_common.cuh"

using namespace moe_kernels;

namespace {

constexpr int kMaxCachedSlots = 64;

template <typename TS>
__global__ void __launch_bounds__(256)
combine_kernel(const moeCombineParams p) {
  __shared__ int64_t rows[kMaxCachedSlots];
  __shared__ float wts[kMaxCachedSlots];
  const int64_t t = blockIdx.x;
  const int K = p.K;
  const int64_t *pr = p.pair_rows + t * K;
  const float *pw = p.weights + t * K;
  const int cached = K < kMaxCachedSlots ? K : kMaxCachedSlots;
  for (int j = threadIdx.x; j < cached; j += blockDim.x) {
    rows[j] = pr[j];
    wts[j] = p.unit_weights ? 1.f : pw[j];
  }
  __syncthreads();
  const TS *eo = static_cast<const TS *>(p.expert_out);
  const TS *so = static_cast<const TS *>(p.shared_out);
  TS *y = static_cast<TS *>(p.y);
  for (int64_t c = threadIdx.x; c < p.Hr; c += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < K; ++j) {
      const int64_t r = j < kMaxCachedSlots ? rows[j] : pr[j];
      if (r < 0) continue;
      const float w = j < kMaxCachedSlots ? wts[j] : (p.unit_weights ? 1.f : pw[j]);
      acc = __fmaf_rn(w, to_f32(eo[r * p.Hr + c]), acc);
    }
    if (so) acc += to_f32(so[t * p.Hr + c]);
    y[t * p.Hr + c] = from_f32<TS>(acc);
  }
}

}  // namespace

extern "C" cudaError_t moe_launch_combine(const moeCombineParams *p, cudaStream_t stream) {
  if (p->T <= 0 || p->Hr <= 0) return cudaSuccess;
  if (p->T > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const unsigned grid = static_cast<unsigned>(p->T);
  int threads = 256;
  if (p->Hr < 256) threads = static_cast<int>((p->Hr + 31) / 32 * 32);
  switch (p->dtype) {
    case kBF16: combine_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(*p); break;
    case kF16: combine_kernel<__half><<<grid, threads, 0, stream>>>(*p); break;
    default: combine_kernel<float><<<grid, threads, 0, stream>>>(*p); break;
  }
  return cudaGetLastError();
}
