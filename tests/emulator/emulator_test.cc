// The emulator checked against plain host arithmetic: the tensor-core instructions (ldmatrix,
// mma.m16n8k16) against a matrix product with the fragments placed as the PTX ISA states,
// shuffles and votes, block barriers, deadlock detection, and graph capture / replay.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

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
