// fp32 grouped GEMM on CUDA cores (the fp32 storage path, which must meet 1e-5): 64 x 64 x 16
// block tile, 256 threads, each 4 rows x 4 columns with fmaf in increasing k. Gated: the 64 B rows
// of a block are 32 gate rows and the 32 matching up rows; a thread's columns tx, tx+16 pair with
// tx+32, tx+48.
#include "gemm_tc.h"

#include "gemm_common.cuh"

namespace moe_kernels {
namespace {

constexpr int BM = 64, BN = 64, BK = 16, THREADS = 256;

__global__ void __launch_bounds__(THREADS)
gemm_simt_kernel(const moeGemmParams p) {
  __shared__ __align__(16) float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 1];
  __shared__ int64_t arow[BM];
  __shared__ float ascale[BM];
  __shared__ int64_t brow_of[BN];

  int g;
  int64_t m0, m_end;
  if (!find_tile(p, BM, g, m0, m_end)) return;
  fill_rows(p, BM, m0, m_end, arow, ascale);

  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const bool gated = p.gated != 0;
  const int64_t Nout = gated ? p.N / 2 : p.N;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * (gated ? BN / 2 : BN);
  const int64_t K = p.K;
  const float *A = static_cast<const float *>(p.A);
  const float *B = static_cast<const float *>(p.B) + static_cast<int64_t>(g) * p.b_group_stride;
  if (tid < BN) {
    int64_t br = -1;
    if (gated) {
      const int64_t col = n0 + (tid & 31);
      if (col < Nout) br = (tid >> 5) * Nout + col;
    } else if (n0 + tid < p.N) {
      br = n0 + tid;
    }
    brow_of[tid] = br;
  }
  __syncthreads();

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int64_t k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int idx = tid + THREADS * l, r = idx >> 4, kk = idx & 15;
      const int64_t k = k0 + kk;
      const int64_t ar = arow[r], br = brow_of[r];
      As[kk][r] = (ar >= 0 && k < K) ? A[ar * p.lda + k] : 0.f;
      Bs[kk][r] = (br >= 0 && k < K) ? B[br * K + k] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float4 a = *reinterpret_cast<const float4 *>(&As[kk][ty * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float b = Bs[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i][j] = fmaf(av[i], b, acc[i][j]);
      }
    }
    __syncthreads();
  }

  const float *bias = p.bias ? p.bias + static_cast<int64_t>(g) * p.bias_group_stride : nullptr;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int lr = ty * 4 + i;
    const int64_t row = m0 + lr;
    if (row >= m_end) continue;
    const float sc = ascale[lr];
    if (gated) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t col = n0 + tx + 16 * j;
        if (col >= Nout) continue;
        float vg = acc[i][j] * sc, vu = acc[i][j + 2] * sc;
        if (bias) {
          vg += bias[col];
          vu += bias[Nout + col];
        }
        store_out<float>(p, row, col, act_gated(vg, vu, p.act, p.alpha, p.limit));
      }
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t col = n0 + tx + 16 * j;
        if (col >= p.N) continue;
        float v = acc[i][j] * sc;
        if (bias) v += bias[col];
        store_out<float>(p, row, col, act_single(v, p.act));
      }
    }
  }
}

}  // namespace
}  // namespace moe_kernels

using namespace moe_kernels;

extern "C" int moe_gemm_simt_block_m(void) { return BM; }

extern "C" cudaError_t moe_launch_gemm_simt(const moeGemmParams *p, int64_t m_tiles,
                                            cudaStream_t stream) {
  const int bn = p->gated ? BN / 2 : BN;
  const int64_t Nout = p->gated ? p->N / 2 : p->N;
  const int64_t n_tiles = (Nout + bn - 1) / bn;
  if (m_tiles <= 0 || n_tiles <= 0) return cudaSuccess;
  if (m_tiles > 0x7fffffffLL || n_tiles > 65535) return cudaErrorInvalidConfiguration;
  gemm_simt_kernel<<<dim3(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles)), THREADS,
                     0, stream>>>(*p);
  return cudaGetLastError();
}
