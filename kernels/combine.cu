#include "combine.h"

#include "moe_kernels_common.cuh"

using namespace moe_kernels;

namespace {

constexpr int kMaxCachedSlots = 64;

// The CPU backend's arithmetic (multiply, then add, each rounded; no FMA), so that the same
// expert outputs combine to bitwise the same y on both backends.
// VEC consecutive columns per thread (VEC = 16 bytes / element when Hr and the pointers allow,
// else 1). Every column's sum runs over the slots in order j = 0..K-1, so the result does not
// depend on VEC.
template <typename TS, int VEC>
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
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * VEC; c < p.Hr;
       c += static_cast<int64_t>(blockDim.x) * VEC) {
    float acc[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) acc[v] = 0.f;
    for (int j = 0; j < K; ++j) {
      const int64_t r = j < kMaxCachedSlots ? rows[j] : pr[j];
      // -1 and rows outside expert_out alike (one unsigned compare): never an out-of-bounds read
      if (static_cast<uint64_t>(r) >= static_cast<uint64_t>(p.rows)) continue;
      const float w = j < kMaxCachedSlots ? wts[j] : (p.unit_weights ? 1.f : pw[j]);
      if (VEC == 1) {
        acc[0] = __fadd_rn(acc[0], __fmul_rn(w, to_f32(eo[r * p.Hr + c])));
      } else {
        alignas(16) TS in[VEC];
        *reinterpret_cast<uint4 *>(in) = *reinterpret_cast<const uint4 *>(eo + r * p.Hr + c);
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[v] = __fadd_rn(acc[v], __fmul_rn(w, to_f32(in[v])));
      }
    }
    alignas(16) TS out[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      float a = acc[v];
      if (so) a = __fadd_rn(a, to_f32(so[t * p.Hr + c + v]));
      out[v] = from_f32<TS>(a);
    }
    if (VEC == 1) {
      y[t * p.Hr + c] = out[0];
    } else {
      *reinterpret_cast<uint4 *>(y + t * p.Hr + c) = *reinterpret_cast<const uint4 *>(out);
    }
  }
}

template <typename TS>
void launch_combine(const moeCombineParams *p, cudaStream_t stream) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(TS));
  const bool vec = p->Hr % kVec == 0 && reinterpret_cast<uintptr_t>(p->expert_out) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(p->y) % 16 == 0;
  const int64_t lanes = vec ? p->Hr / kVec : p->Hr;
  const int threads = lanes >= 256 ? 256 : static_cast<int>((lanes + 31) / 32 * 32);
  const unsigned grid = static_cast<unsigned>(p->T);
  if (vec) combine_kernel<TS, kVec><<<grid, threads, 0, stream>>>(*p);
  else combine_kernel<TS, 1><<<grid, threads, 0, stream>>>(*p);
}

}  // namespace

extern "C" cudaError_t moe_launch_combine(const moeCombineParams *p, cudaStream_t stream) {
  if (p->T <= 0 || p->Hr <= 0) return cudaSuccess;
  if (p->T > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  switch (p->dtype) {
    case kBF16: launch_combine<__nv_bfloat16>(p, stream); break;
    case kF16: launch_combine<__half>(p, stream); break;
    default: launch_combine<float>(p, stream); break;
  }
  return cudaGetLastError();
}
