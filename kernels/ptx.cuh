// The inline-PTX wrappers of the tensor-core GEMM (gemm_tc.cu): cp.async, ldmatrix, mma.sync,
// st.shared. In the CPU emulation build (MOE_CUDA_EMULATION, tests/emulator/) each has a host
// implementation written from the PTX ISA's definition, so the kernel's fragment layouts are
// checked against the ISA rather than against themselves.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#ifdef MOE_CUDA_EMULATION
#include <cstring>
#include <type_traits>

#include "moe_emu/emu.h"
#endif

namespace moe_kernels {

#ifndef MOE_CUDA_EMULATION

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid) {
  const int n = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled, nothing is read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t &r0, uint32_t &r1,
                                            uint32_t &r2, uint32_t &r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

template <typename TS>
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float *c, const uint32_t *a, uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma16816<__half>(float *c, const uint32_t *a, uint32_t b0,
                                                 uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void st_shared_v4(uint32_t dst, uint32_t w0, uint32_t w1, uint32_t w2,
                                             uint32_t w3) {
  asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(dst), "r"(w0), "r"(w1), "r"(w2), "r"(w3));
}

#else  // MOE_CUDA_EMULATION

// cp.async.cg with src-size n: n bytes copied, the rest of the 16 zero-filled. Both addresses
// must be 16-byte aligned (the hardware faults otherwise). The emulator performs the copy as
// late as the ISA allows, at the wait_group that covers its group.
inline void cp_async16(uint32_t dst, const void *src, bool valid) {
  const size_t n = valid ? 16 : 0;
  if (dst % 16 != 0 || (n && reinterpret_cast<uintptr_t>(src) % 16 != 0))
    moe_emu::fatal("cp.async.cg 16: misaligned shared 0x%x or global %p", dst, src);
  moe_emu::cp_async_queue(dst, src, n, 16);
}
inline void cp_async_commit() { moe_emu::cp_async_commit_group(); }
template <int N> inline void cp_async_wait() { moe_emu::cp_async_wait_group(N); }

inline void ldmatrix_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
  uint32_t out[4];
  moe_emu::warp_collective(moe_emu::kOpLdmatrixX4, 0xffffffffu, &addr, sizeof addr, out, sizeof out);
  r0 = out[0], r1 = out[1], r2 = out[2], r3 = out[3];
}

template <typename TS> inline void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
  static_assert(sizeof(TS) == 2, "16-bit inputs");
  moe_emu::MmaIn in;
  std::memcpy(in.a, a, sizeof in.a);
  in.b[0] = b0;
  in.b[1] = b1;
  std::memcpy(in.c, c, sizeof in.c);
  const int op = std::is_same<TS, __nv_bfloat16>::value ? moe_emu::kOpMmaBf16 : moe_emu::kOpMmaF16;
  moe_emu::warp_collective(op, 0xffffffffu, &in, sizeof in, c, 4 * sizeof(float));
}

inline void st_shared_v4(uint32_t dst, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
  if (dst % 16 != 0) moe_emu::fatal("st.shared.v4.u32: misaligned shared address 0x%x", dst);
  const uint32_t w[4] = {w0, w1, w2, w3};
  std::memcpy(moe_emu::shared_ptr(dst, 16), w, 16);
}

#endif  // MOE_CUDA_EMULATION

}  // namespace moe_kernels
