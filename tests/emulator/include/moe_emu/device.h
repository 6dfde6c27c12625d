// Device built-ins for kernels compiled by the host C++ compiler (force-included into every
// rewritten kernels/*.cu by the emulation build). CUDA's qualifiers become host C++, the
// built-in variables are per emulated thread, and barriers, warp collectives and the tensor-core
// instructions go through the emulator's fiber scheduler (emu.h).
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "moe_emu/emu.h"

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __shared__
#undef __constant__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// One block at a time runs on an OS thread, so a thread_local static is the block's copy.
#define __shared__ static thread_local
#define __constant__ static
#define __grid_constant__

#define threadIdx (::moe_emu::t_builtins.thread_idx)
#define blockIdx (::moe_emu::t_builtins.block_idx)
#define blockDim (::moe_emu::t_builtins.block_dim)
#define gridDim (::moe_emu::t_builtins.grid_dim)
#define warpSize 32

// Device code calls these unqualified, as global functions.
using std::isfinite;
using std::isinf;
using std::isnan;

inline void __syncthreads() { ::moe_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::moe_emu::warp_collective(::moe_emu::kOpSyncWarp, mask, nullptr, 0, nullptr, 0);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

namespace moe_emu {
template <typename T>
inline T shfl(int op, unsigned mask, T v, int param, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of up to 8 bytes");
  ShflIn in{};
  std::memcpy(&in.bits, &v, sizeof(T));
  in.param = param;
  in.width = width;
  uint64_t out = 0;
  warp_collective(op, mask, &in, sizeof in, &out, sizeof out);
  T r;
  std::memcpy(&r, &out, sizeof(T));
  return r;
}
inline unsigned vote(int op, unsigned mask, int pred) {
  unsigned out = 0;
  warp_collective(op, mask, &pred, sizeof pred, &out, sizeof out);
  return out;
}
}  // namespace moe_emu

template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::moe_emu::shfl(::moe_emu::kOpShflIdx, mask, v, src, width);
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::moe_emu::shfl(::moe_emu::kOpShflXor, mask, v, lane_mask, width);
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::moe_emu::shfl(::moe_emu::kOpShflDown, mask, v, static_cast<int>(delta), width);
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::moe_emu::shfl(::moe_emu::kOpShflUp, mask, v, static_cast<int>(delta), width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::moe_emu::vote(::moe_emu::kOpBallot, mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return ::moe_emu::vote(::moe_emu::kOpAny, mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return ::moe_emu::vote(::moe_emu::kOpAll, mask, pred) != 0; }

// ---- integer and bit intrinsics --------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
template <typename T> inline T __ldg(const T *p) { return *p; }

// ---- float intrinsics: IEEE round-to-nearest, never contracted (built with -ffp-contract=off)
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
inline int __float_as_int(float x) { int u; std::memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
inline float __int_as_float(int u) { float x; std::memcpy(&x, &u, 4); return x; }
inline long long __double_as_longlong(double x) { long long u; std::memcpy(&u, &x, 8); return u; }
inline double __longlong_as_double(long long u) { double x; std::memcpy(&x, &u, 8); return x; }
// Fast-math intrinsics: the host's correctly rounded functions (the GPU's differ by a few ulp).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }

// ---- atomics (blocks run one at a time per OS thread, but several host threads may launch) --
template <typename T> inline T moe_emu_atomic_add(T *p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicAdd(int *p, int v) { return moe_emu_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return moe_emu_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { return moe_emu_atomic_add(p, v); }
template <typename F> inline F moe_emu_atomic_float(F *p, F v, F (*op)(F, F)) {
  F old;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  F next = op(old, v);
  while (!__atomic_compare_exchange(p, &old, &next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) next = op(old, v);
  return old;
}
inline float atomicAdd(float *p, float v) {
  return moe_emu_atomic_float<float>(p, v, [](float a, float b) { return a + b; });
}
inline double atomicAdd(double *p, double v) {
  return moe_emu_atomic_float<double>(p, v, [](double a, double b) { return a + b; });
}
template <typename T> inline T moe_emu_atomic_max(T *p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}
inline int atomicMax(int *p, int v) { return moe_emu_atomic_max(p, v); }
inline unsigned atomicMax(unsigned *p, unsigned v) { return moe_emu_atomic_max(p, v); }
inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v) { return moe_emu_atomic_max(p, v); }
template <typename T> inline T moe_emu_atomic_min(T *p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}
inline int atomicMin(int *p, int v) { return moe_emu_atomic_min(p, v); }
inline unsigned atomicMin(unsigned *p, unsigned v) { return moe_emu_atomic_min(p, v); }
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) { return moe_emu_atomic_min(p, v); }
template <typename T> inline T moe_emu_atomic_cas(T *p, T expected, T desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;  // the old value either way
}
inline int atomicCAS(int *p, int c, int v) { return moe_emu_atomic_cas(p, c, v); }
inline unsigned atomicCAS(unsigned *p, unsigned c, unsigned v) { return moe_emu_atomic_cas(p, c, v); }
inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long c, unsigned long long v) {
  return moe_emu_atomic_cas(p, c, v);
}
template <typename T> inline T atomicExch(T *p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

// ---- address spaces --------------------------------------------------------------------------
inline size_t __cvta_generic_to_shared(const void *p) { return ::moe_emu::shared_addr(p); }

// cuda_runtime.h's C++ overload for kernel pointers exists only under nvcc.
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T *entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void *>(entry), attr, value);
}

// ---- launches (the rewriter turns kernel<<<g, b, smem, stream>>>(args) into this) ------------
namespace moe_emu {
// Arguments are evaluated and copied at launch time, as CUDA does; body calls the kernel with
// a copy of them for each emulated thread (a graph replay reuses the captured values).
template <typename Body, typename... A>
inline cudaError_t launch_kernel(dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                 const char *name, const void *fn, Body body, A &&...args) {
  auto packed = std::make_tuple(std::decay_t<A>(std::forward<A>(args))...);
  return launch(LaunchSpec{grid, block, smem, stream, name, fn},
                [body, packed]() { std::apply(body, packed); });
}
}  // namespace moe_emu
