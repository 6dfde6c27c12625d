// Grouped GEMM entry: the m-tile schedule over device group offsets, then the skinny kernel for
// the groups of a few rows and the tensor-core (bf16 / f16: mma.sync, or wgmma on sm_90a when
// chosen) or SIMT (fp32) kernel for the rest, each on a grid sized for the worst case.
#include "grouped_gemm.h"

#include <cub/block/block_scan.cuh>

#include "gemm_skinny.h"
#include "gemm_tc.h"
#include "gemm_wgmma.h"
#include "moe_kernels_common.cuh"

namespace {

struct MaxOp {
  __device__ __forceinline__ int64_t operator()(int64_t a, int64_t b) const { return a > b ? a : b; }
};

__device__ __forceinline__ int64_t clamp_rows(int64_t v, int64_t M) { return v < 0 ? 0 : v > M ? M : v; }

// One block, one pass over the caller's group offsets (g = 0..G), the only read of them:
//   clean[g] = max_{h <= g} clamp(offsets[h], 0, M): the offsets every GEMM kernel reads (equal
//     to offsets when those are valid; for any other values still groups of rows inside [0, M),
//     disjoint and in order, so no kernel indexes past its buffers and the grid bounds hold);
//   tiles[g] = sum_{h < g} ceil(rows_h / BM) over the groups of more than skinny_rows rows;
//   list = [count, ids of the groups of 1..skinny_rows rows, ascending] (skinny_rows > 0).
// One launch serves both kernels, which matters at decode, where launches are most of the time.
__global__ void __launch_bounds__(1024)
schedule_kernel(const int64_t *__restrict__ offsets, int G, int64_t M, int BM, int skinny_rows,
                int64_t *__restrict__ clean, int32_t *__restrict__ tiles,
                int32_t *__restrict__ list) {
  using Scan = cub::BlockScan<int, 1024>;
  // warp scans: the raking default spills registers with 1024 threads of int64
  using MaxScan = cub::BlockScan<int64_t, 1024, cub::BLOCK_SCAN_WARP_SCANS>;
  __shared__ union {
    typename Scan::TempStorage sum;
    typename MaxScan::TempStorage max;
  } temp;
  __shared__ int tile_carry, list_carry;
  __shared__ int64_t end_carry;  // clean[base]: the end of the group before this pass's first
  if (threadIdx.x == 0) {
    tile_carry = list_carry = 0;
    end_carry = clean[0] = clamp_rows(offsets[0], M);
  }
  __syncthreads();
  for (int base = 0; base < G; base += 1024) {
    const int g = base + static_cast<int>(threadIdx.x);
    const int64_t e0 = end_carry;
    int64_t begin, end = g < G ? clamp_rows(offsets[g + 1], M) : 0, end_max;
    MaxScan(temp.max).ExclusiveScan(end, begin, e0, MaxOp(), end_max);
    end = end > begin ? end : begin;
    if (g < G) clean[g + 1] = end;
    __syncthreads();  // every thread is done with the scan storage
    int n = 0, skinny = 0;
    if (g < G) {
      const int64_t rows = end - begin;
      if (rows > skinny_rows) n = static_cast<int>((rows + BM - 1) / BM);
      else skinny = rows > 0;
    }
    int excl, total;
    Scan(temp.sum).ExclusiveSum(n, excl, total);
    const int c = tile_carry;
    if (g < G) tiles[g] = c + excl;
    __syncthreads();  // every thread read tile_carry and the scan storage
    int lexcl = 0, ltotal = 0;
    if (list) {
      Scan(temp.sum).ExclusiveSum(skinny, lexcl, ltotal);
      if (skinny) list[1 + list_carry + lexcl] = g;
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      tile_carry = c + total;
      list_carry += ltotal;
      end_carry = e0 > end_max ? e0 : end_max;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    tiles[G] = tile_carry;
    if (list) list[0] = list_carry;
  }
}

}  // namespace

extern "C" cudaError_t moe_grouped_gemm_init(void) {
  cudaError_t err = moe_gemm_tc_init();
  if (err == cudaSuccess) err = moe_gemm_skinny_init();
  return err != cudaSuccess ? err : moe_gemm_wgmma_init();
}

extern "C" cudaError_t moe_launch_grouped_gemm(const moeGemmParams *p, cudaStream_t stream) {
  if (p->M <= 0 || p->N <= 0) return cudaSuccess;
  const bool tc = p->dtype != moe_kernels::kF32;
  constexpr int kAuto = -1, kSkinny = 1, kWgmma = 2;
  const bool may_skinny = p->kernel == kAuto || p->kernel == kSkinny;
  if (!p->group_offsets && may_skinny && p->M <= moe_kernels::kSkinnyRows)
    return moe_launch_gemm_skinny(p, nullptr, 1, stream);
  // kWgmma: every group on the Hopper kernel (the host sets it only on compute capability 9.x);
  // shapes it cannot take (fp32, K % 8 != 0, misaligned rows) stay on the mma.sync / SIMT tiles.
  const bool wgmma = tc && p->kernel == kWgmma && moe_gemm_wgmma_eligible(p);
  const int BM = wgmma ? moe_gemm_wgmma_block_m() : tc ? moe_gemm_tc_block_m() : moe_gemm_simt_block_m();
  int64_t m_tiles = (p->M + BM - 1) / BM;
  moeGemmParams q = *p;  // what the GEMM kernels see
  if (p->group_offsets) {
    const int64_t G = p->num_groups;
    if (G <= 0 || !p->schedule_scratch) return cudaErrorInvalidValue;
    // Heuristic: skinny groups are worth a kernel of their own when the groups average few rows
    // (decode); in prefill its grid would be spare blocks only. A tuning table may decide.
    const bool skinny = p->kernel == kSkinny || (p->kernel == kAuto && p->M <= moe_kernels::kSkinnyRows * G);
    const int skinny_rows = skinny ? moe_kernels::kSkinnyRows : 0;
    // schedule_scratch: tiles [G + 1], list [G + 1] (int32), clean offsets [G + 1] (int64)
    int32_t *tiles = static_cast<int32_t *>(p->schedule_scratch);
    int32_t *list = skinny_rows ? tiles + G + 1 : nullptr;
    int64_t *clean = reinterpret_cast<int64_t *>(tiles + 2 * (G + 1));
    schedule_kernel<<<1, 1024, 0, stream>>>(p->group_offsets, p->num_groups, p->M, BM, skinny_rows,
                                            clean, tiles, list);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    q.group_offsets = clean;  // from here on no kernel reads the caller's offsets
    if (list) {
      err = moe_launch_gemm_skinny(&q, list, p->M < G ? p->M : G, stream);
      if (err != cudaSuccess || p->M <= skinny_rows) return err;  // no group can be tiled
    }
    // each tiled group wastes at most one partial tile; with skinny groups out, at most
    // M / (skinny_rows + 1) groups are tiled
    const int64_t tiled_groups = p->M / (skinny_rows + 1);
    m_tiles += tiled_groups < G ? tiled_groups : G;
  }
  if (wgmma) return moe_launch_gemm_wgmma(&q, m_tiles, stream);
  return tc ? moe_launch_gemm_tc(&q, m_tiles, stream) : moe_launch_gemm_simt(&q, m_tiles, stream);
}
