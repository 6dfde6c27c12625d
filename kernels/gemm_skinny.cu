// Skinny grouped GEMM: groups of at most kSkinnyRows rows (decode: a few tokens per expert).
// Such a group needs each weight once and does only a few FMAs per weight element, so it is
// bound by HBM bandwidth, and a 128-row tensor-core tile would be mostly padding. Here each
// warp streams 4 rows of B (2 gated output columns, or 4 plain ones) with 16-byte loads, lanes
// split K, the group's A rows are staged once per block in shared memory as fp32 (tiles of
// kTileK), and a fixed butterfly over the warp finishes each dot product: deterministic.
#include "gemm_skinny.h"

#include "gemm_common.cuh"

namespace moe_kernels {
namespace {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kBRows = 4;      // B rows per warp
constexpr int kTileK = 2048;   // A elements per row staged at a time: 8 x 2048 x 4 B = 64 KiB
constexpr int kSmemBytes = kSkinnyRows * kTileK * 4;

// Columns of C per block: gated blocks produce 2 columns per warp (each from a gate row and an
// up row of B), plain ones 4.
__host__ __device__ constexpr int cols_per_block(bool gated) { return kWarps * (gated ? 2 : 4); }

// 16 bytes of B (W elements of TS) from row b at k, as fp32. VEC: one aligned 16-byte load
// (K % W == 0, so the chunk is entirely inside or past K); else element loads with a bound.
template <typename TS, bool VEC>
__device__ __forceinline__ void load_b(const TS *b, int64_t k, int64_t K, bool ok,
                                       float (&out)[16 / sizeof(TS)]) {
  constexpr int W = 16 / sizeof(TS);
  if (VEC) {
    if (ok && k < K) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(b + k));
      const TS *v = reinterpret_cast<const TS *>(&raw);
#pragma unroll
      for (int i = 0; i < W; ++i) out[i] = to_f32(v[i]);
    } else {
#pragma unroll
      for (int i = 0; i < W; ++i) out[i] = 0.f;
    }
  } else {
#pragma unroll
    for (int i = 0; i < W; ++i) out[i] = (ok && k + i < K) ? to_f32(b[k + i]) : 0.f;
  }
}

template <typename TS, bool VEC>
__global__ void __launch_bounds__(kThreads)
gemm_skinny_kernel(const moeGemmParams p, const int32_t *__restrict__ list) {
  constexpr int W = 16 / sizeof(TS);
  extern __shared__ __align__(16) float a_tile[];  // [kSkinnyRows][kTileK]
  __shared__ int64_t arow[kSkinnyRows];
  __shared__ float ascale[kSkinnyRows];

  // This block's group: entry blockIdx.y of the list, or the one group of rows [0, M).
  int g = 0;
  int64_t m0 = 0, m_end = p.M;
  if (list) {
    if (static_cast<int>(blockIdx.y) >= list[0]) return;
    g = list[1 + blockIdx.y];
    m0 = p.group_offsets[g];
    m_end = p.group_offsets[g + 1];
  }
  // 1..kSkinnyRows, by construction of the list from the sanitized offsets (group_offsets)
  const int R = static_cast<int>(m_end - m0);
  fill_rows(p, kSkinnyRows, m0, m_end, arow, ascale);
  __syncthreads();  // arow / ascale are read by every warp (the K loop's barrier is not enough
                    // on its own: it would not run for an empty K)

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool gated = p.gated != 0;
  const int64_t Nout = gated ? p.N / 2 : p.N;
  const int64_t K = p.K;
  const TS *A = static_cast<const TS *>(p.A);
  const TS *B = static_cast<const TS *>(p.B) + static_cast<int64_t>(g) * p.b_group_stride;

  // This warp's B rows j = 0..3 and the output column each belongs to.
  int64_t col[kBRows];
  const TS *brow[kBRows];
  bool bok[kBRows];
#pragma unroll
  for (int j = 0; j < kBRows; ++j) {
    int64_t b;
    if (gated) {  // j = 0, 1: gate rows of columns c, c + 1; j = 2, 3: their up rows
      col[j] = static_cast<int64_t>(blockIdx.x) * cols_per_block(true) + warp * 2 + (j & 1);
      b = (j < 2 ? 0 : Nout) + col[j];
    } else {
      col[j] = static_cast<int64_t>(blockIdx.x) * cols_per_block(false) + warp * 4 + j;
      b = col[j];
    }
    bok[j] = col[j] < Nout;
    brow[j] = B + (bok[j] ? b : 0) * K;
  }

  float acc[kBRows][kSkinnyRows];
#pragma unroll
  for (int j = 0; j < kBRows; ++j)
#pragma unroll
    for (int r = 0; r < kSkinnyRows; ++r) acc[j][r] = 0.f;

  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    const int kl = static_cast<int>(K - k0 < kTileK ? K - k0 : kTileK);
    const int kl_pad = (kl + W - 1) / W * W;  // past kl: zeros, so that 0 * 0 is added
    __syncthreads();  // the previous tile is consumed
    for (int i = threadIdx.x; i < R * kl_pad; i += kThreads) {
      const int r = i / kl_pad, k = i - r * kl_pad;
      const int64_t ar = arow[r];  // -1: a gather entry out of range (fill_rows), read as zeros
      a_tile[r * kTileK + k] = k < kl && ar >= 0 ? to_f32(A[ar * p.lda + k0 + k]) : 0.f;
    }
    __syncthreads();
    for (int k = lane * W; k < kl; k += 32 * W) {
      float b[kBRows][W];
#pragma unroll
      for (int j = 0; j < kBRows; ++j) load_b<TS, VEC>(brow[j], k0 + k, K, bok[j], b[j]);
#pragma unroll
      for (int r = 0; r < kSkinnyRows; ++r) {
        if (r >= R) break;
        float a[W];
#pragma unroll
        for (int i = 0; i < W; i += 4) {
          const float4 v = *reinterpret_cast<const float4 *>(&a_tile[r * kTileK + k + i]);
          a[i] = v.x, a[i + 1] = v.y, a[i + 2] = v.z, a[i + 3] = v.w;
        }
#pragma unroll
        for (int j = 0; j < kBRows; ++j)
#pragma unroll
          for (int i = 0; i < W; ++i) acc[j][r] = fmaf(a[i], b[j][i], acc[j][r]);
      }
    }
  }

  // Every lane gets every sum (fixed butterfly); lane l then owns (row l % 8, column pair l / 8).
#pragma unroll
  for (int j = 0; j < kBRows; ++j)
#pragma unroll
    for (int r = 0; r < kSkinnyRows; ++r)
#pragma unroll
      for (int s = 16; s > 0; s >>= 1) acc[j][r] += __shfl_xor_sync(0xffffffffu, acc[j][r], s);

  const int r = lane % kSkinnyRows, q = lane / kSkinnyRows;  // q = 0..3
  if (r >= R) return;
  const float *bias = p.bias ? p.bias + static_cast<int64_t>(g) * p.bias_group_stride : nullptr;
  const float sc = ascale[r];
  float mine[kBRows];  // this lane's row of acc, picked with static indices
#pragma unroll
  for (int j = 0; j < kBRows; ++j) {
    mine[j] = 0.f;
#pragma unroll
    for (int rr = 0; rr < kSkinnyRows; ++rr)
      if (rr == r) mine[j] = acc[j][rr];
  }
  if (gated) {
    // lanes 0-15: columns c (q = 0) and c + 1 (q = 1); static picks keep col/bok in registers
    const int64_t c = q == 0 ? col[0] : col[1];
    if (q >= 2 || !(q == 0 ? bok[0] : bok[1])) return;
    float vg = (q == 0 ? mine[0] : mine[1]) * sc, vu = (q == 0 ? mine[2] : mine[3]) * sc;
    if (bias) {
      vg += bias[c];
      vu += bias[Nout + c];
    }
    store_out<TS>(p, m0 + r, c, act_gated(vg, vu, p.act, p.alpha, p.limit));
  } else {
    float v = 0.f;
    int64_t c = 0;
    bool ok = false;
#pragma unroll
    for (int j = 0; j < kBRows; ++j)
      if (j == q) v = mine[j], c = col[j], ok = bok[j];
    if (!ok) return;
    v *= sc;
    if (bias) v += bias[c];
    store_out<TS>(p, m0 + r, c, act_single(v, p.act));
  }
}

template <typename TS, bool VEC>
cudaError_t allow_smem() {
  return cudaFuncSetAttribute(gemm_skinny_kernel<TS, VEC>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
}

template <typename TS, bool VEC>
cudaError_t launch(const moeGemmParams *p, const int32_t *list, dim3 grid, cudaStream_t stream) {
  gemm_skinny_kernel<TS, VEC><<<grid, kThreads, kSmemBytes, stream>>>(*p, list);
  return cudaGetLastError();
}

template <typename TS>
cudaError_t launch_dtype(const moeGemmParams *p, const int32_t *list, dim3 grid,
                         cudaStream_t stream) {
  constexpr int W = 16 / sizeof(TS);
  const bool vec = p->K % W == 0 && p->b_group_stride % W == 0 &&
                   reinterpret_cast<uintptr_t>(p->B) % 16 == 0;
  return vec ? launch<TS, true>(p, list, grid, stream) : launch<TS, false>(p, list, grid, stream);
}

}  // namespace
}  // namespace moe_kernels

using namespace moe_kernels;

extern "C" cudaError_t moe_gemm_skinny_init(void) {
  cudaError_t err;
  if ((err = allow_smem<float, true>()) != cudaSuccess) return err;
  if ((err = allow_smem<float, false>()) != cudaSuccess) return err;
  if ((err = allow_smem<__half, true>()) != cudaSuccess) return err;
  if ((err = allow_smem<__half, false>()) != cudaSuccess) return err;
  if ((err = allow_smem<__nv_bfloat16, true>()) != cudaSuccess) return err;
  return allow_smem<__nv_bfloat16, false>();
}

extern "C" cudaError_t moe_launch_gemm_skinny(const moeGemmParams *p, const int32_t *list,
                                              int64_t slots, cudaStream_t stream) {
  const int64_t Nout = p->gated ? p->N / 2 : p->N;
  const int cpb = cols_per_block(p->gated != 0);
  const int64_t n_blocks = (Nout + cpb - 1) / cpb;
  if (slots <= 0 || n_blocks <= 0) return cudaSuccess;
  if (slots > 65535 || n_blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(slots));
  if (p->dtype == kBF16) return launch_dtype<__nv_bfloat16>(p, list, grid, stream);
  if (p->dtype == kF16) return launch_dtype<__half>(p, list, grid, stream);
  return launch_dtype<float>(p, list, grid, stream);
}
