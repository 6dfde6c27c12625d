// Device helpers shared by every kernel family: storage dtypes, routing sort keys, warp
// reductions. Internal to kernels/*.cu (C++ only).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace moe_kernels {

// Storage dtype codes, equal to moeDtype_t (moeFloat32 = 0, moeFloat16 = 1, moeBFloat16 = 2).
enum : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

template <int DT> struct Storage;
template <> struct Storage<kF32> { using T = float; };
template <> struct Storage<kF16> { using T = __half; };
template <> struct Storage<kBF16> { using T = __nv_bfloat16; };

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Element i of a buffer of run-time dtype dt, as fp32 (non-hot paths: routing, combine).
__device__ __forceinline__ float load_any(const void *p, int dt, int64_t i) {
  if (dt == kBF16) return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
  if (dt == kF16) return __half2float(static_cast<const __half *>(p)[i]);
  return static_cast<const float *>(p)[i];
}

__device__ __forceinline__ void store_any(void *p, int dt, int64_t i, float v) {
  if (dt == kBF16) static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v);
  else if (dt == kF16) static_cast<__half *>(p)[i] = __float2half_rn(v);
  else static_cast<float *>(p)[i] = v;
}

// Order-preserving map of a routing score to uint32 with the runtime's tie rules
// (docs/ROUTING.md, and the CPU backend's moe_cpu_beats): NaN ranks below every other score,
// -inf included; -0 equals +0; every score maps to a key > 0, so that key 0 can mean
// "excluded / already taken". All NaNs share key 1 (ties then go to the lower index).
__device__ __forceinline__ uint32_t score_key(float x) {
  if (isnan(x)) return 1u;
  if (x == 0.0f) x = 0.0f;  // folds -0 into +0
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // -inf -> 0x007fffff > 1
}

// Inverse of score_key for keys > 0 (key 1 comes back as a NaN).
__device__ __forceinline__ float key_score(uint32_t k) {
  const uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  return __uint_as_float(u);
}

// A candidate as one 64-bit word: larger key first, then the lower index. Max-reduce it.
__device__ __forceinline__ uint64_t pack_cand(uint32_t key, uint32_t idx) {
  return (static_cast<uint64_t>(key) << 32) | static_cast<uint64_t>(0xffffffffu - idx);
}
__device__ __forceinline__ uint32_t cand_key(uint64_t c) { return static_cast<uint32_t>(c >> 32); }
__device__ __forceinline__ uint32_t cand_idx(uint64_t c) {
  return 0xffffffffu - static_cast<uint32_t>(c & 0xffffffffu);
}

__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Butterfly sum: every lane ends with bitwise the same value (a + b == b + a in IEEE), and the
// result is the same run to run.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// expf as the host's libm computes it: CUDA's expf is within 2 ulp, glibc's is correctly
// rounded in all but rare cases, and so is exp in double rounded once to float. Routing
// compares these values across backends (ties, top-p thresholds, expert choice across tokens),
// so it uses this one; the FFN epilogues keep the fast expf.
__device__ __forceinline__ float expf_ref(float x) {
  return static_cast<float>(exp(static_cast<double>(x)));
}

__device__ __forceinline__ float logf_ref(float x) {
  return static_cast<float>(log(static_cast<double>(x)));
}

__device__ __forceinline__ float sigmoidf_ref(float z) { return 1.0f / (1.0f + expf_ref(-z)); }

// softmax(z)_e as the CPU backend computes it: fp32 exponential of z - max, divided in double by
// the double sum of those exponentials, rounded once. The double sum keeps tokens whose logits
// are permutations of each other at bitwise equal probabilities (expert choice ranks tokens).
__device__ __forceinline__ float softmax_prob(float z, float max, double sum) {
  return static_cast<float>(static_cast<double>(expf_ref(z - max)) / sum);
}

}  // namespace moe_kernels
