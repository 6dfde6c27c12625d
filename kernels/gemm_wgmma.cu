// Hopper (sm_90a) grouped GEMM for bf16 / f16: wgmma.mma_async m64n128k16 with fp32
// accumulators, operands in 128-byte-swizzled shared memory, warp-specialized:
//
//   warpgroup 0 (producer): B tiles by TMA (cp.async.bulk.tensor.2d over the stacked weights
//     [groups * N, K], completing on the stage's "full" mbarrier), and the gathered token rows of
//     A by 16-byte cp.async into the same swizzled layout (rows come through sorted_pairs, so A
//     cannot be one TMA box); a stage's A is published one iteration later, after the thread's
//     own copies landed and a proxy fence, by one arrival per warp.
//   warpgroups 1, 2 (consumers): 64 rows each of the 128 x 128 block tile; per 64-wide K stage
//     four wgmma, then the stage before is released on its "empty" mbarrier.
//
// Block tile 128 (M) x 128 (B rows) x 64 (K), 5 stages of 32 KiB (161 KiB: one block per SM). Gated activations: the
// 128 B rows of a block are 64 gate rows and the 64 matching up rows (two TMA boxes), so each
// thread holds the gate and up accumulators of its output columns (fragment n-tiles j and j + 8)
// and the activation runs in registers. The epilogue (row_scale, bias, activation, accum_in,
// add, c_f32) is gemm_tc.cu's, from gemm_common.cuh.
//
// Only the sm_90a pass and the emulation build compile the body; elsewhere the kernel is an
// empty stub that the launcher never chooses (the host picks this kernel only on a device of
// compute capability 9.x, csrc/backend/cuda/cuda_ffn.c).
#include "gemm_wgmma.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include "gemm_common.cuh"
#include "ptx.cuh"

#if defined(MOE_CUDA_EMULATION) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOE_WGMMA_BODY 1
#endif

namespace moe_kernels {
namespace {

constexpr int BM = 128, BN = 128, BK = 64, STAGES = 5;
constexpr int THREADS = 384;                         // 3 warpgroups
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2;
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;       // 32 KiB
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024 + 2 * STAGES * 8;  // + alignment + barriers
#ifdef MOE_WGMMA_BODY
constexpr uint32_t FULL_ARRIVALS = 4 + 1;            // a lane per producer warp + the TMA issuer
constexpr uint32_t EMPTY_ARRIVALS = 2;               // a thread per consumer warpgroup
static_assert(STAGES >= 3, "the producer publishes a stage's A rows one iteration late");
static_assert(BK * 2 == 128, "a K stage is one 128-byte swizzle row");

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Shared-memory matrix descriptor (PTX ISA, wgmma matrix descriptor) of a K-major 16-bit operand
// in the 128-byte swizzle layout: rows of 64 elements (128 bytes), 16-byte chunk c of row r at
// chunk c ^ (r % 8), 8-row groups 1024 bytes apart (stride byte offset). The leading byte offset
// is unused (the 16 elements of one k16 step stay inside a row: the start address advances by
// 32 bytes per step) and the base offset is 0 (tiles are 1024-byte aligned).
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(16 >> 4) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

#endif  // MOE_WGMMA_BODY

template <typename TS>
__global__ void __launch_bounds__(THREADS, 1)
gemm_wgmma_kernel(const __grid_constant__ CUtensorMap tmap_b, const moeGemmParams p) {
#ifdef MOE_WGMMA_BODY
  extern __shared__ __align__(1024) unsigned char smem[];
  __shared__ int64_t arow[BM];
  __shared__ float ascale[BM];

  int g;
  int64_t m0, m_end;
  if (!find_tile(p, BM, g, m0, m_end)) return;
  fill_rows(p, BM, m0, m_end, arow, ascale);

  const int tid = threadIdx.x;
  const uint32_t base = (smem_addr(smem) + 1023u) & ~1023u;  // the 128-byte swizzle repeats every 1 KiB
  const uint32_t bars = base + STAGES * STAGE_BYTES;
  auto full = [bars](int s) { return bars + 8u * static_cast<uint32_t>(s); };
  auto empty = [bars](int s) { return bars + 8u * static_cast<uint32_t>(STAGES + s); };
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full(s), FULL_ARRIVALS);
      mbar_init(empty(s), EMPTY_ARRIVALS);
    }
    fence_mbar_init();
  }
  __syncthreads();  // barriers initialized, row table filled

  const bool gated = p.gated != 0;
  const int64_t Nout = gated ? p.N / 2 : p.N;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * (gated ? BN / 2 : BN);
  const int64_t K = p.K;
  const int ktiles = static_cast<int>((K + BK - 1) / BK);

  if (tid < 128) {
    // ---- producer warpgroup -------------------------------------------------------------------
    // Thread t copies chunk t % 8 of rows t / 8 + 16 i (i = 0..7): 8 lanes cover a row's 128 bytes.
    const int chunk = tid & 7;
    const TS *A = static_cast<const TS *>(p.A);
    const TS *src[8];
    bool ok[8];
    uint32_t soff[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int r = i * 16 + (tid >> 3);
      const int64_t ar = arow[r];
      ok[i] = ar >= 0;
      src[i] = A + (ok[i] ? ar : 0) * p.lda + chunk * 8;
      soff[i] = static_cast<uint32_t>(r * 128 + ((chunk ^ (r & 7)) << 4));
    }
    // This block's B rows in the tensor map [groups * rows_per_group, K].
    const int64_t rows_per_group = p.b_group_stride / K;
    const int32_t brow_gate = static_cast<int32_t>(g * rows_per_group + n0);
    const int32_t brow_up = static_cast<int32_t>(g * rows_per_group + Nout + n0);
    // A stage's A rows are published once this thread's copies have landed: a proxy fence (wgmma
    // reads through the async proxy), then one arrival per warp after __syncwarp.
    auto publish = [&](int s) {
      fence_proxy_async();
      __syncwarp();
      if ((tid & 31) == 0) mbar_arrive(full(s));
    };
    for (int kt = 0; kt < ktiles; ++kt) {
      const int s = kt % STAGES;
      if (kt >= STAGES) mbar_wait(empty(s), static_cast<uint32_t>((kt / STAGES - 1) & 1));
      const uint32_t sa = base + s * STAGE_BYTES, sb = sa + A_BYTES;
      const int64_t k0 = static_cast<int64_t>(kt) * BK;
      if (tid == 0) {
        mbar_arrive_expect_tx(full(s), B_BYTES);  // both boxes count whole, out-of-bounds zeros too
        if (gated) {
          tma_load_2d(sb, &tmap_b, static_cast<int32_t>(k0), brow_gate, full(s));
          tma_load_2d(sb + B_BYTES / 2, &tmap_b, static_cast<int32_t>(k0), brow_up, full(s));
        } else {
          tma_load_2d(sb, &tmap_b, static_cast<int32_t>(k0), brow_gate, full(s));
        }
      }
      const bool kin = k0 + chunk * 8 < K;  // K % 8 == 0: a chunk is entirely inside or past K
#pragma unroll
      for (int i = 0; i < 8; ++i)
        cp_async16(sa + soff[i], ok[i] && kin ? src[i] + k0 : A, ok[i] && kin);
      cp_async_commit();
      if (kt > 0) {
        cp_async_wait<1>();
        publish((kt - 1) % STAGES);
      }
    }
    if (ktiles > 0) {
      cp_async_wait<0>();
      publish((ktiles - 1) % STAGES);
    }
    return;
  }

  // ---- consumer warpgroups: rows 64 c .. 64 c + 63 of the block tile -------------------------
  const int c = (tid >> 7) - 1;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % STAGES;
    mbar_wait(full(s), static_cast<uint32_t>((kt / STAGES) & 1));
    const uint32_t sa = base + s * STAGE_BYTES + c * 64 * 128, sb = base + s * STAGE_BYTES + A_BYTES;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk)
      wgmma_m64n128k16<TS>(acc, desc_sw128(sa + kk * 32), desc_sw128(sb + kk * 32), kt > 0 || kk > 0);
    wgmma_commit();
    wgmma_wait<1>(acc);  // the stage before has been read: hand it back to the producer
    if (kt > 0 && (tid & 127) == 0) mbar_arrive(empty((kt - 1) % STAGES));
  }
  wgmma_wait<0>(acc);

  // Epilogue. PTX ISA, wgmma D fragment (m64nN, f32): acc[4 j + q] of lane l in warp w of the
  // warpgroup is row 16 w + l / 4 + 8 (q / 2), column 8 j + 2 (l % 4) + q % 2. Gated: the up
  // value of gate column 8 j + x sits in n-tile j + 8 at the same position.
  const int lane = tid & 31, w = (tid >> 5) & 3;
  const float *bias = p.bias ? p.bias + static_cast<int64_t>(g) * p.bias_group_stride : nullptr;
#pragma unroll
  for (int qh = 0; qh < 2; ++qh) {
    const int lr = c * 64 + w * 16 + (lane >> 2) + 8 * qh;
    const int64_t row = m0 + lr;
    if (row >= m_end) continue;
    const float sc = ascale[lr];
    if (gated) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int64_t col = n0 + 8 * j + 2 * (lane & 3);
        if (col >= Nout) continue;
        const float gate[2] = {acc[4 * j + 2 * qh], acc[4 * j + 2 * qh + 1]};
        const float up[2] = {acc[4 * (j + 8) + 2 * qh], acc[4 * (j + 8) + 2 * qh + 1]};
        epilogue_gated2<TS>(p, bias, row, col, Nout, sc, gate, up);
      }
    } else {
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int64_t col = n0 + 8 * j + 2 * (lane & 3);
        if (col >= p.N) continue;
        const float sum[2] = {acc[4 * j + 2 * qh], acc[4 * j + 2 * qh + 1]};
        epilogue_plain2<TS>(p, bias, row, col, sc, sum);
      }
    }
  }
#endif  // MOE_WGMMA_BODY
}

PFN_cuTensorMapEncodeTiled_v12000 g_encode = nullptr;  // set by moe_gemm_wgmma_init

template <typename TS>
cudaError_t allow_smem() {
  return cudaFuncSetAttribute(gemm_wgmma_kernel<TS>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES);
}

// B as a 2-D tensor map over every group's rows: [rows, K], K contiguous, boxes of 64 (K) x
// rows_box, 128-byte swizzle, zeros outside (past K and past the last row).
bool encode_b(const moeGemmParams *p, CUtensorMap *map) {
  const int64_t rows_per_group = p->b_group_stride / p->K;
  const int64_t rows = (p->group_offsets && p->num_groups > 0)
                           ? static_cast<int64_t>(p->num_groups - 1) * rows_per_group + p->N
                           : p->N;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(p->K), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(p->K) * 2};
  const cuuint32_t box[2] = {BK, p->gated ? BN / 2u : static_cast<cuuint32_t>(BN)};
  const cuuint32_t estrides[2] = {1, 1};
  const CUresult r = g_encode(
      map, p->dtype == kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2,
      const_cast<void *>(p->B), dims, strides, box, estrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace
}  // namespace moe_kernels

using namespace moe_kernels;

extern "C" int moe_gemm_wgmma_block_m(void) { return BM; }

extern "C" cudaError_t moe_gemm_wgmma_init(void) {
  int dev = 0, major = 0;
  cudaError_t err;
  if ((err = cudaGetDevice(&dev)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess) return err;
  if (major != 9) return cudaSuccess;  // never launched there
  if ((err = allow_smem<__nv_bfloat16>()) != cudaSuccess) return err;
  if ((err = allow_smem<__half>()) != cudaSuccess) return err;
  if (!g_encode) {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) ==
            cudaSuccess &&
        q == cudaDriverEntryPointSuccess && fn)
      g_encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    else
      (void)cudaGetLastError();  // no entry point: the path stays ineligible
  }
  return cudaSuccess;
}

extern "C" int moe_gemm_wgmma_eligible(const moeGemmParams *p) {
  if (!g_encode || (p->dtype != kBF16 && p->dtype != kF16)) return 0;
  if (p->K < 8 || p->K % 8 != 0 || p->lda % 8 != 0 || p->K >= (int64_t(1) << 31)) return 0;
  if (p->gated && p->N % 2 != 0) return 0;
  if (reinterpret_cast<uintptr_t>(p->A) % 16 != 0 || reinterpret_cast<uintptr_t>(p->B) % 16 != 0) return 0;
  const bool grouped = p->group_offsets && p->num_groups > 0;
  if (grouped && (p->b_group_stride < 0 || p->b_group_stride % p->K != 0)) return 0;
  const int64_t rows_per_group = grouped ? p->b_group_stride / p->K : 0;
  const int64_t rows = grouped ? (p->num_groups - 1) * rows_per_group + p->N : p->N;
  return rows + BN < (int64_t(1) << 31);  // TMA row coordinates are int32
}

extern "C" cudaError_t moe_launch_gemm_wgmma(const moeGemmParams *p, int64_t m_tiles, cudaStream_t stream) {
  const int64_t Nout = p->gated ? p->N / 2 : p->N;
  const int bn = p->gated ? BN / 2 : BN;
  const int64_t n_tiles = (Nout + bn - 1) / bn;
  if (m_tiles <= 0 || n_tiles <= 0) return cudaSuccess;
  if (m_tiles > 0x7fffffffLL || n_tiles > 65535) return cudaErrorInvalidConfiguration;
  if (!moe_gemm_wgmma_eligible(p)) return cudaErrorInvalidValue;
  CUtensorMap map;  // a host call with no device work: capturable
  if (!encode_b(p, &map)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles));
  if (p->dtype == kBF16)
    gemm_wgmma_kernel<__nv_bfloat16><<<grid, THREADS, SMEM_BYTES, stream>>>(map, *p);
  else
    gemm_wgmma_kernel<__half><<<grid, THREADS, SMEM_BYTES, stream>>>(map, *p);
  return cudaGetLastError();
}
