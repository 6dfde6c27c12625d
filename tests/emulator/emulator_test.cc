// The emulator checked against plain host arithmetic: the tensor-core instructions (ldmatrix,
// mma.m16n8k16, wgmma with its shared-memory descriptors) against a matrix product with the
// fragments and layouts placed as the PTX ISA states, TMA and the 128-byte swizzle, mbarrier phases,
// shuffles and votes, block barriers, deadlock detection, and graph capture / replay.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include <cudaTypedefs.h>

#include "../../kernels/ptx.cuh"
#include "moe_emu/device.h"

namespace {

template <typename Body, typename... A>
void Launch(dim3 grid, dim3 block, size_t smem, Body body, A... args) {
  ASSERT_EQ(moe_emu::launch_kernel(grid, block, smem, nullptr, "test kernel", nullptr, body, args...), cudaSuccess);
}

template <typename T>
struct Dev {
  explicit Dev(size_t n) : n(n) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void **>(&p), n * sizeof(T)), cudaSuccess); }
  ~Dev() { cudaFree(p); }
  std::vector<T> Get() const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  void Put(const std::vector<T> &v) { EXPECT_EQ(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  T *p = nullptr;
  size_t n;
};

// ---- shuffles and votes ----------------------------------------------------------------------
void shuffle_kernel(int *out) {
  const int t = threadIdx.x, lane = t & 31, v = 100 * t;
  out[6 * t + 0] = __shfl_sync(0xffffffffu, v, 5);
  out[6 * t + 1] = __shfl_xor_sync(0xffffffffu, v, 3);
  out[6 * t + 2] = __shfl_down_sync(0xffffffffu, v, 4, 16);
  out[6 * t + 3] = __shfl_up_sync(0xffffffffu, v, 2);
  out[6 * t + 4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[6 * t + 5] = __any_sync(0xffffffffu, t == 40) + 2 * __all_sync(0xffffffffu, lane < 32);
}

TEST(Emulator, ShufflesAndVotes) {
  Dev<int> out(64 * 6);
  Launch(dim3(1), dim3(64), 0, [](auto... a) { shuffle_kernel(a...); }, out.p);
  const auto o = out.Get();
  unsigned every_third = 0;
  for (int l = 0; l < 32; l += 3) every_third |= 1u << l;
  for (int t = 0; t < 64; ++t) {
    const int w = t & ~31, lane = t & 31;
    SCOPED_TRACE(t);
    EXPECT_EQ(o[6 * t + 0], 100 * (w + 5));
    EXPECT_EQ(o[6 * t + 1], 100 * (w + (lane ^ 3)));
    EXPECT_EQ(o[6 * t + 2], 100 * ((lane & 15) + 4 < 16 ? t + 4 : t));  // within 16-lane segments
    EXPECT_EQ(o[6 * t + 3], 100 * (lane >= 2 ? t - 2 : t));
    EXPECT_EQ(static_cast<unsigned>(o[6 * t + 4]), every_third);
    EXPECT_EQ(o[6 * t + 5], (w == 32 ? 1 : 0) + 2);
  }
}

// 64-bit and double values travel whole.
void shuffle64_kernel(double *out) {
  const double v = 1.0 + threadIdx.x * 0x1p-40;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 16);
}

TEST(Emulator, Shuffle64Bit) {
  Dev<double> out(32);
  Launch(dim3(1), dim3(32), 0, [](auto... a) { shuffle64_kernel(a...); }, out.p);
  const auto o = out.Get();
  for (int t = 0; t < 32; ++t) EXPECT_EQ(o[t], 1.0 + (t ^ 16) * 0x1p-40);
}

// ---- barriers ----------------------------------------------------------------------------------
// Every thread writes its slot, the block synchronizes, each reads its neighbour's: correct only
// if no thread passes the barrier before every other has written.
void barrier_kernel(int *out, int rounds) {
  __shared__ int slot[256];
  const int t = threadIdx.x, n = blockDim.x;
  int acc = 0;
  for (int r = 0; r < rounds; ++r) {
    slot[t] = t * 1000 + r + static_cast<int>(blockIdx.x);
    __syncthreads();
    acc += slot[(t + 1) % n];
    __syncthreads();
  }
  out[blockIdx.x * n + t] = acc;
}

TEST(Emulator, BarriersOrderSharedMemory) {
  const int n = 256, blocks = 3, rounds = 5;
  Dev<int> out(n * blocks);
  Launch(dim3(blocks), dim3(n), 0, [](auto... a) { barrier_kernel(a...); }, out.p, rounds);
  const auto o = out.Get();
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) {
      int want = 0;
      for (int r = 0; r < rounds; ++r) want += ((t + 1) % n) * 1000 + r + b;
      ASSERT_EQ(o[b * n + t], want) << "block " << b << " thread " << t;
    }
}

void early_exit_warp_kernel(int *out) {
  if (threadIdx.x == 3) return;  // lane 3 never reaches the shuffle
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

TEST(EmulatorDeathTest, CollectiveThatALaneNeverReachesAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Dev<int> out(32);
  EXPECT_DEATH(Launch(dim3(1), dim3(32), 0, [](auto... a) { early_exit_warp_kernel(a...); }, out.p),
               "deadlock");
}

// ---- tensor cores ------------------------------------------------------------------------------
uint16_t Bits(float f, bool bf16) {
  if (bf16) {
    const __nv_bfloat16 h = __float2bfloat16_rn(f);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
  }
  const __half h = __float2half_rn(f);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
float Value(uint16_t u, bool bf16) {
  if (bf16) {
    __nv_bfloat16 h;
    std::memcpy(&h, &u, 2);
    return __bfloat162float(h);
  }
  __half h;
  std::memcpy(&h, &u, 2);
  return __half2float(h);
}
uint32_t Pack(uint16_t lo, uint16_t hi) { return lo | (static_cast<uint32_t>(hi) << 16); }

// One warp: A (16 x 16, row-major) and B (16 x 8, stored n-major: Bt[n][k]) in shared memory,
// loaded with ldmatrix as in the PTX ISA's example layout (lanes 8i..8i+7 address the rows of
// matrix i), D = A B + C with mma.m16n8k16; D written back by the C fragment layout.
template <typename TS>
void mma_kernel(const uint16_t *a, const uint16_t *bt, const float *c, float *d) {
  uint16_t *sm = static_cast<uint16_t *>(moe_emu::dynamic_smem());
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) sm[i] = a[i];
  for (int i = lane; i < 128; i += 32) sm[256 + i] = bt[i];
  __syncwarp();
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(sm));
  // A: matrix i = (rows 8*(i%2).., k 8*(i/2)..); B: matrix i = (n 0..7, k 8*i..), x4 reads
  // matrices 0, 1 of B twice (the ISA requires every lane to give an address).
  const int mi = lane >> 3, r = lane & 7;
  const uint32_t a_row = base + static_cast<uint32_t>(((8 * (mi & 1) + r) * 16 + 8 * (mi >> 1)) * 2);
  const uint32_t b_row = base + 512 + static_cast<uint32_t>((r * 16 + 8 * (mi & 1)) * 2);
  uint32_t af[4], bf[4];
  moe_kernels::ldmatrix_x4(a_row, af[0], af[1], af[2], af[3]);
  moe_kernels::ldmatrix_x4(b_row, bf[0], bf[1], bf[2], bf[3]);
  const int g = lane >> 2, t = lane & 3;
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
  moe_kernels::mma16816<TS>(acc, af, bf[0], bf[1]);
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

template <typename TS>
void CheckMma(bool bf16) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  std::vector<uint16_t> a(256), bt(128);
  std::vector<float> c(128), want(128);
  for (auto &x : a) x = Bits(u(rng), bf16);
  for (auto &x : bt) x = Bits(u(rng), bf16);
  for (auto &x : c) x = u(rng);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double s = c[m * 8 + n];
      for (int k = 0; k < 16; ++k) s += double(Value(a[m * 16 + k], bf16)) * Value(bt[n * 16 + k], bf16);
      want[m * 8 + n] = static_cast<float>(s);
    }
  Dev<uint16_t> da(256), db(128);
  Dev<float> dc(128), dd(128);
  da.Put(a);
  db.Put(bt);
  dc.Put(c);
  Launch(dim3(1), dim3(32), 768, [](auto... x) { mma_kernel<TS>(x...); }, da.p, db.p, dc.p, dd.p);
  const auto d = dd.Get();
  for (int i = 0; i < 128; ++i) EXPECT_NEAR(d[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << "D[" << i / 8 << "][" << i % 8 << "]";
}

TEST(Emulator, MmaBf16MatchesMatrixProduct) { CheckMma<__nv_bfloat16>(true); }
TEST(Emulator, MmaF16MatchesMatrixProduct) { CheckMma<__half>(false); }

// ldmatrix alone: element (matrix i, row r, column c) holds i * 64 + r * 8 + c; lane l must
// receive in register i the elements (row l / 4, columns 2 (l % 4), 2 (l % 4) + 1) of matrix i.
void ldmatrix_kernel(uint32_t *out) {
  uint16_t *sm = static_cast<uint16_t *>(moe_emu::dynamic_smem());
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) sm[i] = static_cast<uint16_t>(i);
  __syncwarp();
  // Rows of matrix i given by lanes 8i..8i+7, in reverse row order to show that the address,
  // not the lane, decides which row lands where.
  const int mi = lane >> 3, r = 7 - (lane & 7);
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(sm + mi * 64 + r * 8));
  uint32_t v[4];
  moe_kernels::ldmatrix_x4(addr, v[0], v[1], v[2], v[3]);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = v[i];
}

TEST(Emulator, LdmatrixFragmentLayout) {
  Dev<uint32_t> out(128);
  Launch(dim3(1), dim3(32), 512, [](auto... a) { ldmatrix_kernel(a...); }, out.p);
  const auto o = out.Get();
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      // Lane 8i + j gave row 7 - j: the row that lane l / 4 reads is the one at address row 7 - ...
      // i.e. register row q = l / 4 comes from the address of lane 8i + q, which is row 7 - q.
      const int row = 7 - lane / 4, col = 2 * (lane % 4);
      const uint32_t want = Pack(static_cast<uint16_t>(i * 64 + row * 8 + col), static_cast<uint16_t>(i * 64 + row * 8 + col + 1));
      EXPECT_EQ(o[lane * 4 + i], want) << "lane " << lane << " register " << i;
    }
}


// ---- Hopper: wgmma, TMA, mbarrier ----------------------------------------------------------------
// Written from the PTX ISA and the driver API's text, not from the emulator's code: operands are
// placed by the layouts' own definitions ("16-byte chunk c of 128-byte row r is stored at chunk
// c ^ (r % 8)", core matrices of 8 rows x 16 bytes), results compared with a plain product.

// Byte offset of element k (16-bit) of row r in a 128-byte-swizzled tile of 64-element rows.
uint32_t Sw128Offset(int r, int k) {
  const int chunk = (k * 2) / 16, within = (k * 2) % 16;
  return static_cast<uint32_t>(r * 128 + ((chunk ^ (r % 8)) * 16) + within);
}
// Byte offset of element (r, k) in the no-swizzle K-major layout: 8 x 8 core matrices (8 rows of
// 16 contiguous bytes), lbo bytes apart along K and sbo bytes apart along rows.
uint32_t InterleavedOffset(int r, int k, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint32_t>((r / 8) * sbo + (k / 8) * lbo + (r % 8) * 16 + (k % 8) * 2);
}
uint64_t Desc(uint32_t addr, uint32_t lbo, uint32_t sbo, uint64_t mode) {
  return ((addr >> 4) & 0x3FFFu) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFFu) << 32) | (mode << 62);
}

// One warpgroup. smem: A at 0 and B at 8192 (1024-aligned) as the host placed them (image: the
// bytes of both). swizzled: A 64 x 64 and B 128 x 64 in the 128B-swizzle layout, four k16 steps
// along the row; else A 64 x 16 and B 128 x 16 interleaved (LBO 128, SBO 256), one step.
// D starts as c (scale_d = 1 throughout) or as garbage with scale_d = 0 on the first step.
template <typename TS>
void wgmma_kernel(const unsigned char *image, int image_bytes, const float *c, float *d, bool swizzled, bool accumulate) {
  unsigned char *sm = static_cast<unsigned char *>(moe_emu::dynamic_smem());
  const int t = threadIdx.x;
  for (int i = t; i < image_bytes; i += 128) sm[i] = image[i];
  __syncthreads();
  float acc[64];
  for (int i = 0; i < 64; ++i) acc[i] = accumulate ? c[t * 64 + i] : 1e30f;
  moe_kernels::wgmma_fence();
  if (swizzled) {
    for (int kk = 0; kk < 4; ++kk)
      moe_kernels::wgmma_m64n128k16<TS>(acc, Desc(0 + 32 * kk, 16, 1024, 1), Desc(8192 + 32 * kk, 16, 1024, 1),
                                        accumulate || kk > 0);
  } else {
    moe_kernels::wgmma_m64n128k16<TS>(acc, Desc(0, 128, 256, 0), Desc(8192, 128, 256, 0), accumulate);
  }
  moe_kernels::wgmma_commit();
  moe_kernels::wgmma_wait<0>(acc);
  for (int i = 0; i < 64; ++i) d[t * 64 + i] = acc[i];
}

template <typename TS>
void CheckWgmma(bool bf16, bool swizzled, bool accumulate) {
  const int KD = swizzled ? 64 : 16;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  std::vector<uint16_t> a(64 * KD), b(128 * KD);  // A[m][k], B[n][k]
  for (auto &x : a) x = Bits(u(rng), bf16);
  for (auto &x : b) x = Bits(u(rng), bf16);
  std::vector<unsigned char> image(8192 + 16384, 0);
  auto put = [&](uint32_t off, uint16_t v) { std::memcpy(&image[off], &v, 2); };
  for (int r = 0; r < 64; ++r)
    for (int k = 0; k < KD; ++k) put(swizzled ? Sw128Offset(r, k) : InterleavedOffset(r, k, 128, 256), a[r * KD + k]);
  for (int r = 0; r < 128; ++r)
    for (int k = 0; k < KD; ++k)
      put(8192 + (swizzled ? Sw128Offset(r, k) : InterleavedOffset(r, k, 128, 256)), b[r * KD + k]);
  std::vector<float> c(128 * 64);
  for (auto &x : c) x = u(rng);
  Dev<unsigned char> dimg(image.size());
  Dev<float> dc(c.size()), dd(c.size());
  dimg.Put(image);
  dc.Put(c);
  Launch(dim3(1), dim3(128), image.size(), [](auto... x) { wgmma_kernel<TS>(x...); }, dimg.p,
         static_cast<int>(image.size()), dc.p, dd.p, swizzled, accumulate);
  const auto d = dd.Get();
  // PTX ISA, wgmma .m64nNk16 accumulator D: warp w of the warpgroup holds rows 16w..16w+15; in
  // it, as for mma.m16n8: lane l holds row l/4 (+8 for the second pair) and columns 2(l%4),
  // 2(l%4)+1 of each 8-column block, blocks in order: d[4j + 0,1] row l/4, d[4j + 2,3] row l/4 + 8.
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, l = t % 32;
    for (int j = 0; j < 16; ++j)
      for (int q = 0; q < 4; ++q) {
        const int row = 16 * w + l / 4 + (q >= 2 ? 8 : 0), col = 8 * j + 2 * (l % 4) + (q % 2);
        double s = accumulate ? c[t * 64 + 4 * j + q] : 0.0;
        for (int k = 0; k < KD; ++k) s += double(Value(a[row * KD + k], bf16)) * Value(b[col * KD + k], bf16);
        const float got = d[t * 64 + 4 * j + q];
        ASSERT_NEAR(got, s, 1e-5 * (1 + std::fabs(s))) << "thread " << t << " D[" << row << "][" << col << "]";
      }
  }
}

TEST(Emulator, WgmmaSwizzle128Bf16MatchesMatrixProduct) { CheckWgmma<__nv_bfloat16>(true, true, true); }
TEST(Emulator, WgmmaSwizzle128F16ScaleDZero) { CheckWgmma<__half>(false, true, false); }
TEST(Emulator, WgmmaInterleavedLboSboBf16) { CheckWgmma<__nv_bfloat16>(true, false, true); }

// Results land at wait_group, not at issue: a read before the wait sees the old accumulators.
void wgmma_deferred_kernel(float *out) {
  unsigned char *sm = static_cast<unsigned char *>(moe_emu::dynamic_smem());
  for (int i = threadIdx.x; i < 8192 + 16384; i += 128) sm[i] = 0x3c;  // f16 1.0 + tiny: 0x3c3c
  __syncthreads();
  float acc[64];
  for (int i = 0; i < 64; ++i) acc[i] = 5.f;
  moe_kernels::wgmma_m64n128k16<__half>(acc, Desc(0, 16, 1024, 1), Desc(8192, 16, 1024, 1), 1);
  moe_kernels::wgmma_commit();
  out[threadIdx.x * 2] = acc[0];
  moe_kernels::wgmma_wait<0>(acc);
  out[threadIdx.x * 2 + 1] = acc[0];
}

TEST(Emulator, WgmmaResultsLandAtWaitGroup) {
  Dev<float> out(256);
  Launch(dim3(1), dim3(128), 8192 + 16384, [](auto... a) { wgmma_deferred_kernel(a...); }, out.p);
  const auto o = out.Get();
  __half_raw raw;
  raw.x = 0x3c3c;
  const float v = __half2float(__half(raw));
  EXPECT_EQ(o[0], 5.f);
  EXPECT_FLOAT_EQ(o[1], 5.f + 16 * v * v);
}

// mbarrier phases: 64 threads write a slot, arrive, wait for the phase, read a neighbour's slot;
// twice, the second time on parity 1. Correct only if no thread leaves a wait early.
void mbarrier_kernel(int *out) {
  unsigned char *sm = static_cast<unsigned char *>(moe_emu::dynamic_smem());
  int *slot = reinterpret_cast<int *>(sm + 64);
  const int t = threadIdx.x;
  if (t == 0) moe_kernels::mbar_init(0, 64);
  __syncthreads();
  for (int round = 0; round < 2; ++round) {
    slot[t] = 100 * round + t;
    moe_kernels::mbar_arrive(0);
    moe_kernels::mbar_wait(0, static_cast<uint32_t>(round));
    out[round * 64 + t] = slot[(t + 1) % 64];
    __syncthreads();  // every read done before the next round's writes
  }
}

TEST(Emulator, MbarrierPhasesOrderSharedMemory) {
  Dev<int> out(128);
  Launch(dim3(1), dim3(64), 64 + 256, [](auto... a) { mbarrier_kernel(a...); }, out.p);
  const auto o = out.Get();
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < 64; ++t) EXPECT_EQ(o[r * 64 + t], 100 * r + (t + 1) % 64) << "round " << r << " thread " << t;
}

void mbarrier_never_kernel() {
  if (threadIdx.x == 0) moe_kernels::mbar_init(0, 2);  // two arrivals expected, one comes
  __syncthreads();
  if (threadIdx.x == 0) moe_kernels::mbar_arrive(0);
  moe_kernels::mbar_wait(0, 0);
}

TEST(EmulatorDeathTest, MbarrierWaitThatCannotCompleteAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(Launch(dim3(1), dim3(32), 64, [](auto... a) { mbarrier_never_kernel(a...); }),
               "waits on the mbarrier at 0x0 for parity 0: 0 phases completed, 1 of 2 arrivals pending");
}

PFN_cuTensorMapEncodeTiled_v12000 EncodeTiled() {
  void *fn = nullptr;
  cudaDriverEntryPointQueryResult q;
  EXPECT_EQ(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q), cudaSuccess);
  EXPECT_EQ(q, cudaDriverEntryPointSuccess);
  return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
}

// TMA: a 64 x 32 box of a [100 rows, 72] 16-bit tensor at (k 64, row 80), so that columns past
// 72 and rows past 100 are outside; 128-byte swizzle. The box lands when the mbarrier's phase
// completes: expect_tx of the whole box (zeros included) plus one arrival.
void tma_kernel(const CUtensorMap map, uint16_t *out) {
  unsigned char *sm = static_cast<unsigned char *>(moe_emu::dynamic_smem());
  const uint32_t bar = 4096;
  if (threadIdx.x == 0) {
    moe_kernels::mbar_init(bar, 1);
    moe_kernels::fence_mbar_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    moe_kernels::mbar_arrive_expect_tx(bar, 64 * 32 * 2);
    moe_kernels::tma_load_2d(0, &map, 64, 80, bar);
  }
  moe_kernels::mbar_wait(bar, 0);
  for (int i = threadIdx.x; i < 2048; i += 32) std::memcpy(&out[i], sm + 2 * i, 2);
}

TEST(Emulator, TmaTile2dSwizzle128AndOutOfBoundsZeros) {
  const int rows = 100, cols = 72;
  std::vector<uint16_t> g(rows * cols);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < cols; ++k) g[r * cols + k] = static_cast<uint16_t>(1 + r * 128 + k);
  Dev<uint16_t> dg(g.size()), dout(2048);
  dg.Put(g);
  CUtensorMap map;  // the type carries the alignment the driver asks for
  const cuuint64_t dims[2] = {cols, rows}, strides[1] = {cols * 2};
  const cuuint32_t box[2] = {64, 32}, es[2] = {1, 1};
  auto encode = EncodeTiled();
  ASSERT_NE(encode, nullptr);
  ASSERT_EQ(encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, dg.p, dims, strides, box, es,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
            CUDA_SUCCESS);
  Launch(dim3(1), dim3(32), 4096 + 64, [](auto... a) { tma_kernel(a...); }, map, dout.p);
  const auto o = dout.Get();
  std::vector<uint16_t> img(2048);
  std::memcpy(img.data(), o.data(), 4096);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 64; ++x) {
      const int gr = 80 + y, gk = 64 + x;
      const uint16_t want = (gr < rows && gk < cols) ? g[gr * cols + gk] : 0;
      uint16_t got;
      std::memcpy(&got, reinterpret_cast<const unsigned char *>(img.data()) + Sw128Offset(y, x), 2);
      ASSERT_EQ(got, want) << "box row " << y << " column " << x;
    }
}

TEST(Emulator, TensorMapEncodeChecksTheDriverRequirements) {
  Dev<uint16_t> dg(100 * 72);
  CUtensorMap map;  // the type carries the alignment the driver asks for
  const cuuint64_t dims[2] = {72, 100}, strides[1] = {144}, odd_stride[1] = {136};
  const cuuint32_t box[2] = {64, 32}, wide[2] = {128, 32}, es[2] = {1, 1};
  auto encode = EncodeTiled();
  ASSERT_NE(encode, nullptr);
  auto run = [&](const cuuint64_t *st, const cuuint32_t *bx, CUtensorMapSwizzle sw) {
    return encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, dg.p, dims, st, bx, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  sw, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  };
  EXPECT_EQ(run(strides, box, CU_TENSOR_MAP_SWIZZLE_128B), CUDA_SUCCESS);
  EXPECT_EQ(run(odd_stride, box, CU_TENSOR_MAP_SWIZZLE_128B), CUDA_ERROR_INVALID_VALUE);  // stride % 16
  EXPECT_EQ(run(strides, wide, CU_TENSOR_MAP_SWIZZLE_128B), CUDA_ERROR_INVALID_VALUE);    // 256 B > 128 B span
  EXPECT_EQ(run(strides, wide, CU_TENSOR_MAP_SWIZZLE_NONE), CUDA_SUCCESS);
  void *fn = reinterpret_cast<void *>(1);
  cudaDriverEntryPointQueryResult q;
  EXPECT_EQ(cudaGetDriverEntryPointByVersion("cuNoSuchFunction", &fn, 12000, cudaEnableDefault, &q), cudaSuccess);
  EXPECT_EQ(q, cudaDriverEntryPointSymbolNotFound);
  EXPECT_EQ(fn, nullptr);
}

// ---- streams and graphs ------------------------------------------------------------------------
void scale_kernel(const float *x, float *y, int n, float s) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] * s;
}

// A captured launch reads its buffers when replayed, not when captured; unsafe calls during a
// global capture fail and invalidate it.
TEST(Emulator, GraphReplayReadsCurrentContents) {
  const int n = 100;
  Dev<float> x(n), y(n);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(moe_emu::launch_kernel(dim3(4), dim3(32), 0, s, "scale", nullptr, [](auto... a) { scale_kernel(a...); },
                                   static_cast<const float *>(x.p), y.p, n, 2.0f),
            cudaSuccess);
  cudaGraph_t g;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  cudaGraphExec_t e;
  ASSERT_EQ(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
  for (float base : {1.f, 5.f}) {
    std::vector<float> h(n);
    for (int i = 0; i < n; ++i) h[i] = base + i;
    x.Put(h);
    ASSERT_EQ(cudaGraphLaunch(e, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    const auto o = y.Get();
    for (int i = 0; i < n; ++i) ASSERT_EQ(o[i], 2.0f * (base + i));
  }
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);

  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  void *p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  cudaStreamDestroy(s);
}

TEST(Emulator, LaunchLimits) {
  auto body = [](auto... a) { scale_kernel(a...); };
  float *none = nullptr;
  EXPECT_EQ(moe_emu::launch_kernel(dim3(1), dim3(1025), 0, nullptr, "k", nullptr, body, none, none, 0, 1.f),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(moe_emu::launch_kernel(dim3(1), dim3(32), 48 * 1024 + 1, nullptr, "k", nullptr, body, none, none, 0, 1.f),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // Copies must stay inside the allocation.
  Dev<float> x(4);
  std::vector<float> h(5);
  EXPECT_EQ(cudaMemcpy(x.p, h.data(), 5 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  (void)cudaGetLastError();
}

}  // namespace
