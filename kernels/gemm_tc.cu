// Tensor-core grouped GEMM for bf16 / f16: 128 x 128 x 32 block tile, 8 warps (2 along M x 4
// along N), warp tile 64 x 32, mma.sync.m16n8k16 with fp32 accumulators, ldmatrix from an XOR-
// swizzled shared tile, a 4-stage cp.async pipeline. For gated activations the block's 128 B
// rows are 64 gate rows and the 64 matching up rows, so that every thread holds the gate and up
// accumulators of the same output column and the activation runs in registers.
#include "gemm_tc.h"

#include "gemm_common.cuh"
#include "ptx.cuh"

namespace moe_kernels {
namespace {

constexpr int BM = 128, BN = 128, BK = 32, STAGES = 4, THREADS = 256;
constexpr int TILE_BYTES = BM * BK * 2;                 // one operand, one stage (same for B)
constexpr int SMEM_BYTES = STAGES * 2 * TILE_BYTES;     // 64 KiB

// Byte offset of 16-byte chunk c (0..3) of row r in a [rows][32] 16-bit tile: rows are 64 bytes,
// chunks XOR-swizzled so that ldmatrix's 8 row reads hit 8 different bank groups.
__device__ __forceinline__ uint32_t swz(int r, int c) {
  return static_cast<uint32_t>(r * 64 + ((c ^ ((r >> 1) & 3)) << 4));
}

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// One 16-byte chunk (8 elements at k..k+7) without cp.async: any alignment, any K; elements
// past K are zero.
template <typename TS>
__device__ __forceinline__ void load_chunk_scalar(uint32_t dst, const TS *row, int64_t k,
                                                  int64_t K, bool valid) {
  uint16_t h[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    TS v = from_f32<TS>(0.f);
    if (valid && k + i < K) v = row[k + i];
    h[i] = *reinterpret_cast<uint16_t *>(&v);
  }
  const uint32_t w0 = h[0] | (static_cast<uint32_t>(h[1]) << 16);
  const uint32_t w1 = h[2] | (static_cast<uint32_t>(h[3]) << 16);
  const uint32_t w2 = h[4] | (static_cast<uint32_t>(h[5]) << 16);
  const uint32_t w3 = h[6] | (static_cast<uint32_t>(h[7]) << 16);
  st_shared_v4(dst, w0, w1, w2, w3);
}

// Two blocks per SM (128 registers, 2 x 64 KiB of shared memory) keep one block's epilogue and
// prologue overlapped with the other's main loop.
template <typename TS, bool VEC>
__global__ void __launch_bounds__(THREADS, 2)
gemm_tc_kernel(const moeGemmParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int64_t arow[BM];
  __shared__ float ascale[BM];

  int g;
  int64_t m0, m_end;
  if (!find_tile(p, BM, g, m0, m_end)) return;
  fill_rows(p, BM, m0, m_end, arow, ascale);
  __syncthreads();

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;
  const bool gated = p.gated != 0;
  const int64_t Nout = gated ? p.N / 2 : p.N;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * (gated ? BN / 2 : BN);
  const int64_t K = p.K;
  const TS *A = static_cast<const TS *>(p.A);
  const TS *B = static_cast<const TS *>(p.B) + static_cast<int64_t>(g) * p.b_group_stride;

  // This thread's two A chunks and two B chunks of every stage (fixed rows, moving k).
  const TS *a_src[2], *b_src[2];
  bool a_ok[2], b_ok[2];
  int ld_row[2], ld_chunk[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int idx = tid + THREADS * i;
    ld_row[i] = idx >> 2;
    ld_chunk[i] = idx & 3;
    const int64_t ar = arow[ld_row[i]];
    a_ok[i] = ar >= 0;
    a_src[i] = A + (a_ok[i] ? ar : 0) * p.lda;
    int64_t brow;
    if (gated) {
      const int64_t col = n0 + (ld_row[i] & 63);
      b_ok[i] = col < Nout;
      brow = (ld_row[i] >> 6) * Nout + col;
    } else {
      brow = n0 + ld_row[i];
      b_ok[i] = brow < p.N;
    }
    b_src[i] = B + (b_ok[i] ? brow : 0) * K;
  }

  const uint32_t sbase = smem_u32(smem);
  auto load_stage = [&](int stage, int64_t k0) {
    const uint32_t sa = sbase + stage * 2 * TILE_BYTES, sb = sa + TILE_BYTES;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t k = k0 + ld_chunk[i] * 8;
      const uint32_t off = swz(ld_row[i], ld_chunk[i]);
      if (VEC) {  // K % 8 == 0: a chunk is entirely inside or entirely past K
        cp_async16(sa + off, a_ok[i] && k < K ? a_src[i] + k : A, a_ok[i] && k < K);
        cp_async16(sb + off, b_ok[i] && k < K ? b_src[i] + k : B, b_ok[i] && k < K);
      } else {
        load_chunk_scalar<TS>(sa + off, a_src[i], k, K, a_ok[i]);
        load_chunk_scalar<TS>(sb + off, b_src[i], k, K, b_ok[i]);
      }
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.f;

  const int64_t ktiles = (K + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < ktiles) load_stage(s, static_cast<int64_t>(s) * BK);
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile kt landed for everyone; stage (kt - 1) % STAGES is free again
    {
      const int64_t nk = kt + STAGES - 1;
      if (nk < ktiles) load_stage(static_cast<int>(nk % STAGES), nk * BK);
      cp_async_commit();
    }
    const int stage = static_cast<int>(kt % STAGES);
    const uint32_t sa = sbase + stage * 2 * TILE_BYTES, sb = sa + TILE_BYTES;
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      uint32_t af[4][4];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const int r = wm * 64 + mt * 16 + (lane & 15);
        ldmatrix_x4(sa + swz(r, kk * 2 + (lane >> 4)), af[mt][0], af[mt][1], af[mt][2], af[mt][3]);
      }
      uint32_t bf[4][2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // h = 0: rows wn*16.. (gate half), h = 1: 64 + wn*16..
        const int r = h * 64 + wn * 16 + ((lane >> 4) << 3) + (lane & 7);
        ldmatrix_x4(sb + swz(r, kk * 2 + ((lane >> 3) & 1)), bf[2 * h][0], bf[2 * h][1],
                    bf[2 * h + 1][0], bf[2 * h + 1][1]);
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma16816<TS>(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
    }
  }
  cp_async_wait<0>();

  // Epilogue. acc[mt][nt][q]: row wm*64 + mt*16 + lane/4 + 8*(q/2), local B row
  // nb(nt) + 2*(lane%4) + q%2 with nb = wn*16 + nt*8 (nt < 2) or 64 + wn*16 + (nt-2)*8. Gated:
  // the up value of gate column c sits in tile nt + 2 at the same position.
  const float *bias = p.bias ? p.bias + static_cast<int64_t>(g) * p.bias_group_stride : nullptr;
#pragma unroll
  for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
    for (int qh = 0; qh < 2; ++qh) {  // q = 2 * qh + b: columns col + b of one row
      const int lr = wm * 64 + mt * 16 + (lane >> 2) + 8 * qh;
      const int64_t row = m0 + lr;
      if (row >= m_end) continue;
      const float sc = ascale[lr];
      if (gated) {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const int64_t col = n0 + wn * 16 + nt * 8 + 2 * (lane & 3);
          if (col >= Nout) continue;
          const float gate[2] = {acc[mt][nt][2 * qh], acc[mt][nt][2 * qh + 1]};
          const float up[2] = {acc[mt][nt + 2][2 * qh], acc[mt][nt + 2][2 * qh + 1]};
          epilogue_gated2<TS>(p, bias, row, col, Nout, sc, gate, up);
        }
      } else {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int nb = (nt < 2) ? wn * 16 + nt * 8 : 64 + wn * 16 + (nt - 2) * 8;
          const int64_t col = n0 + nb + 2 * (lane & 3);
          if (col >= p.N) continue;
          const float sum[2] = {acc[mt][nt][2 * qh], acc[mt][nt][2 * qh + 1]};
          epilogue_plain2<TS>(p, bias, row, col, sc, sum);
        }
      }
    }
  }
}

template <typename TS, bool VEC>
cudaError_t allow_smem() {
  return cudaFuncSetAttribute(gemm_tc_kernel<TS, VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              SMEM_BYTES);
}

template <typename TS, bool VEC>
cudaError_t launch_tc(const moeGemmParams *p, dim3 grid, cudaStream_t stream) {
  gemm_tc_kernel<TS, VEC><<<grid, THREADS, SMEM_BYTES, stream>>>(*p);
  return cudaGetLastError();
}

}  // namespace
}  // namespace moe_kernels

using namespace moe_kernels;

extern "C" int moe_gemm_tc_block_m(void) { return BM; }

// Raises the dynamic shared-memory limit of every tensor-core instantiation on the current
// device. Called once per context (not per launch), so that nothing but launches happens while
// a stream is being captured.
extern "C" cudaError_t moe_gemm_tc_init(void) {
  cudaError_t err;
  if ((err = allow_smem<__nv_bfloat16, true>()) != cudaSuccess) return err;
  if ((err = allow_smem<__nv_bfloat16, false>()) != cudaSuccess) return err;
  if ((err = allow_smem<__half, true>()) != cudaSuccess) return err;
  return allow_smem<__half, false>();
}

extern "C" cudaError_t moe_launch_gemm_tc(const moeGemmParams *p, int64_t m_tiles,
                                          cudaStream_t stream) {
  const int64_t Nout = p->gated ? p->N / 2 : p->N;
  const int64_t n_tiles = (Nout + (p->gated ? BN / 2 : BN) - 1) / (p->gated ? BN / 2 : BN);
  if (m_tiles <= 0 || n_tiles <= 0) return cudaSuccess;
  if (m_tiles > 0x7fffffffLL || n_tiles > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p->A), b = reinterpret_cast<uintptr_t>(p->B);
  const bool vec = p->K % 8 == 0 && p->lda % 8 == 0 && p->b_group_stride % 8 == 0 &&
                   a % 16 == 0 && b % 16 == 0;
  if (p->dtype == kBF16)
    return vec ? launch_tc<__nv_bfloat16, true>(p, grid, stream)
               : launch_tc<__nv_bfloat16, false>(p, grid, stream);
  return vec ? launch_tc<__half, true>(p, grid, stream) : launch_tc<__half, false>(p, grid, stream);
}
