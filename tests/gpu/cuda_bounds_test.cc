// The CUDA stages on index arrays that break their contract (negative, huge, decreasing offsets,
// pairs and pair_rows past T * K, ids outside [0, E)). The CPU backend refuses them with
// InvalidArgument; the CUDA backend cannot look at device data without a host synchronization,
// so it must compute without ever reading or writing outside a buffer (include/moe/moe.h, the
// stages). Inputs live in allocations of exactly their size (under the emulator device memory is
// host heap, so an out-of-bounds read is an AddressSanitizer report in the sanitizer build); outputs
// sit between guard regions of one allocation that must come back untouched. Where the contract
// still defines a result (valid entries beside the bad ones), it is checked bitwise.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/test_util.h"

#if defined(MOE_WITH_CUDA)
#include "gpu/gpu_pair.h"

namespace {

using moe_gpu_test::DevBuf;
using moe_gpu_test::LayerPair;

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr int32_t kI32Max = std::numeric_limits<int32_t>::max();
constexpr int32_t kI32Min = std::numeric_limits<int32_t>::min();

// An output of exactly `bytes` between two guard regions of one allocation: a write past either
// end lands in a guard (checked byte by byte) rather than in some other allocation.
class Guarded {
 public:
  static constexpr size_t kGuard = 4096;  // a multiple of 256: the interior keeps cudaMalloc's alignment
  static constexpr uint8_t kByte = 0x5A;  // guards and the interior's initial contents
  explicit Guarded(size_t bytes) : bytes_(bytes), buf_(bytes + 2 * kGuard) { buf_.Poison(kByte); }
  void *get() const { return buf_.as<uint8_t>() + kGuard; }
  template <typename T> T *as() const { return static_cast<T *>(get()); }
  bool ok() const { return buf_.ok(); }
  std::vector<uint8_t> Bytes() const {
    const auto all = buf_.Bytes();
    return std::vector<uint8_t>(all.begin() + kGuard, all.end() - kGuard);
  }
  ::testing::AssertionResult GuardsIntact() const {
    const auto all = buf_.Bytes();
    for (size_t i = 0; i < all.size(); ++i) {
      if (i == kGuard) i += bytes_;
      if (i < all.size() && all[i] != kByte) {
        const bool before = i < kGuard;
        return ::testing::AssertionFailure()
               << "guard byte written " << (before ? kGuard - i : i - kGuard - bytes_ + 1)
               << " bytes " << (before ? "before the start" : "past the end") << " of the output";
      }
    }
    return ::testing::AssertionSuccess();
  }

 private:
  size_t bytes_;
  DevBuf buf_;
};

template <typename T>
void PutVec(DevBuf &d, const std::vector<T> &v) {
  ASSERT_EQ(d.size(), v.size() * sizeof(T));
  d.Put(v.data(), d.size());
}

// Sets an environment variable for the scope (MOE_GEMM_KERNEL is read at context creation).
class ScopedEnv {
 public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    const char *old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char *name_;
  bool had_ = false;
  std::string old_;
};

// ---- permute: ids outside [-1, E) get no row on CUDA (the CPU refuses them) ----------------------

TEST(CudaBounds, PermuteGarbageIds) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const int32_t E = 8, k = 2;
  const moeLayerConfig_t cfg = moe_test::MakeConfig(16, 8, E, k, moeRoutingTopKSoftmax, moeFloat32);
  LayerPair L(cfg, 3);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  const int32_t bad[] = {-1, -2, E, E + 1, kI32Min, kI32Max, -E};
  for (int64_t T : {37, 2000}) {  // the one-block kernel (T * K <= 1024) and the radix-sort path
    SCOPED_TRACE("T=" + std::to_string(T));
    std::vector<int32_t> ids(size_t(T * k));
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = i % 3 == 0 ? bad[(i / 3) % (sizeof(bad) / sizeof(bad[0]))] : static_cast<int32_t>(i * 5 % E);
    std::vector<int64_t> off_c(E + 1), sp_c(size_t(T * k)), pr_c(size_t(T * k));
    EXPECT_EQ(moeLayerPermute(L.cpu, T, ids.data(), off_c.data(), sp_c.data(), pr_c.data(),
                              nullptr, 0, nullptr),
              moeErrorInvalidArgument);
    // The CPU reference of what CUDA does: every bad id read as -1.
    std::vector<int32_t> ids_as_none = ids;
    for (int32_t &id : ids_as_none)
      if (id < -1 || id >= E) id = -1;
    MOE_ASSERT_OK(moeLayerPermute(L.cpu, T, ids_as_none.data(), off_c.data(), sp_c.data(),
                                  pr_c.data(), nullptr, 0, nullptr));
    DevBuf dids(ids.size() * 4);
    PutVec(dids, ids);
    Guarded doff((E + 1) * 8), dsp(size_t(T * k) * 8), dpr(size_t(T * k) * 8);
    MOE_ASSERT_OK(moeLayerPermute(L.gpu, T, dids.as<int32_t>(), doff.as<int64_t>(), dsp.as<int64_t>(),
                                  dpr.as<int64_t>(), nullptr, 0, nullptr));
    EXPECT_TRUE(doff.GuardsIntact()) << "expert_offsets";
    EXPECT_TRUE(dsp.GuardsIntact()) << "sorted_pairs";
    EXPECT_TRUE(dpr.GuardsIntact()) << "pair_rows";
    const auto ob = doff.Bytes(), sb = dsp.Bytes(), pb = dpr.Bytes();
    std::vector<int64_t> off_g(E + 1), sp_g(size_t(T * k)), pr_g(size_t(T * k));
    std::memcpy(off_g.data(), ob.data(), ob.size());
    std::memcpy(sp_g.data(), sb.data(), sb.size());
    std::memcpy(pr_g.data(), pb.data(), pb.size());
    ASSERT_EQ(off_g, off_c);
    sp_g.resize(size_t(off_c[E]));
    sp_c.resize(size_t(off_c[E]));
    EXPECT_TRUE(sp_g == sp_c) << "sorted_pairs differ";
    EXPECT_TRUE(pr_g == pr_c) << "pair_rows differ";
  }
}

// ---- combine: pair_rows outside [0, T * K) are skipped like -1 ----------------------------------

struct CombineCase {
  moeDtype_t dtype;
  int64_t H;       // 13: one column per thread; 64: 16-byte vectors
  int32_t E, k;    // k > 64: slots past the kernel's shared-memory cache
  bool shared;
};

TEST(CudaBounds, CombineGarbagePairRows) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const CombineCase cases[] = {
      {moeFloat32, 13, 16, 4, true},  {moeBFloat16, 64, 16, 4, true}, {moeFloat16, 64, 16, 4, false},
      {moeBFloat16, 13, 80, 80, false}, {moeFloat32, 64, 80, 80, true},
  };
  for (const CombineCase &c : cases) {
    SCOPED_TRACE(std::string(moe_test::DtypeName(c.dtype)) + " H=" + std::to_string(c.H) +
                 " K=" + std::to_string(c.k));
    moeLayerConfig_t cfg = moe_test::MakeConfig(c.H, 8, c.E, c.k, moeRoutingTopKSoftmax, c.dtype);
    cfg.num_shared_experts = c.shared ? 1 : 0;
    LayerPair L(cfg, 17);
    ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
    const int64_t T = c.k > 64 ? 21 : 133;
    const int32_t K = L.K();
    const int64_t TK = T * K;
    const auto eo = moe_test::ToBytes(moe_test::RandomTokens(TK, c.H, c.dtype, 18), c.dtype);
    const auto so = moe_test::ToBytes(moe_test::RandomTokens(T, c.H, c.dtype, 19), c.dtype);
    std::vector<float> w(static_cast<size_t>(TK));
    for (size_t i = 0; i < w.size(); ++i) w[i] = 0.25f + 0.01f * float(i % 17);
    // Valid rows: a permutation of [0, TK); every third pair gets a bad row instead.
    const int64_t bad[] = {-2, TK, TK + 1, kI64Max, kI64Min, -TK, int64_t{1} << 40};
    std::vector<int64_t> pr(static_cast<size_t>(TK)), pr_skip(static_cast<size_t>(TK));
    for (int64_t p = 0; p < TK; ++p) {
      const int64_t r = (p * 7 + 3) % TK;  // 7 is coprime with every TK here
      pr[p] = p % 3 == 1 ? bad[(p / 3) % 7] : r;
      pr_skip[p] = p % 3 == 1 ? -1 : r;
    }
    const size_t ybytes = size_t(T * c.H) * moe_test::DtypeSize(c.dtype);
    std::vector<uint8_t> yc(ybytes);
    // The CPU backend refuses the bad rows, naming the first; the reference skips them.
    EXPECT_EQ(moeLayerCombine(L.cpu, T, eo.data(), pr.data(), w.data(), nullptr, yc.data(), nullptr),
              moeErrorInvalidArgument);
    EXPECT_NE(std::string(moeGetLastErrorMessage()).find("pair_rows[1] "), std::string::npos)
        << moeGetLastErrorMessage();
    MOE_ASSERT_OK(moeLayerCombine(L.cpu, T, eo.data(), pr_skip.data(), w.data(),
                                  c.shared ? so.data() : nullptr, yc.data(), nullptr));

    DevBuf deo(size_t(TK * c.H) * moe_test::DtypeSize(c.dtype)), dpr(pr.size() * 8), dw(w.size() * 4),
        dso(ybytes);
    deo.Put(eo.data(), deo.size());  // ToBytes adds a spare byte: copy the exact size only
    dso.Put(so.data(), dso.size());
    PutVec(dpr, pr);
    PutVec(dw, w);
    Guarded dy(ybytes);
    MOE_ASSERT_OK(moeLayerCombine(L.gpu, T, deo.get(), dpr.as<int64_t>(), dw.as<float>(),
                                  c.shared ? dso.get() : nullptr, dy.get(), nullptr));
    EXPECT_TRUE(dy.GuardsIntact()) << "y";
    EXPECT_TRUE(dy.Bytes() == yc) << "y differs from the CPU's with the bad rows skipped";
  }
}

// ---- experts: bad offsets are clamped (a running maximum inside [0, T * K]), bad pairs read no
// row; the rows of the groups and pairs they leave alone are bitwise what valid inputs give -----

struct ExpertsBoundsCase {
  const char *name;
  moeDtype_t dtype;
  const char *kernel;  // MOE_GEMM_KERNEL: every GEMM path that reads the offsets
  moeRouting_t routing;
  int32_t E, k;
  int64_t T;
};

class CudaBoundsExperts : public ::testing::TestWithParam<ExpertsBoundsCase> {
 protected:
  static constexpr int64_t H = 64, I = 32;  // multiples of 8: the wgmma kernel takes them

  void SetUp() override {
    if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
    const ExpertsBoundsCase &c = GetParam();
    E_ = c.E;
    T_ = c.T;
    moeLayerConfig_t cfg = moe_test::MakeConfig(H, I, E_, c.k, c.routing, c.dtype);
    cfg.expert_bias = 1;
    ScopedEnv env("MOE_GEMM_KERNEL", c.kernel);
    L_.reset(new LayerPair(cfg, 23));
    ASSERT_EQ(L_->status, moeSuccess) << moeGetLastErrorMessage();
    K_ = L_->K();
    TK_ = T_ * K_;
    es_ = moe_test::DtypeSize(c.dtype);
    xb_ = moe_test::ToBytes(moe_test::RandomTokens(T_, H, c.dtype, 24), c.dtype);
    xb_.resize(static_cast<size_t>(T_ * H) * es_);
    ids_.resize(static_cast<size_t>(TK_));
    w_.resize(static_cast<size_t>(TK_));
    MOE_ASSERT_OK(moeLayerRoute(L_->cpu, T_, xb_.data(), ids_.data(), w_.data(), nullptr, nullptr, 0,
                                nullptr));
  }

  // One GPU run: inputs and workspace in exact-size allocations, expert_out between guards.
  std::vector<uint8_t> Run(const std::vector<int64_t> &off, const std::vector<int64_t> &sp) {
    DevBuf dx(xb_.size()), dw(w_.size() * 4), doff(off.size() * 8), dsp(sp.size() * 8);
    size_t ws_bytes = 0;
    EXPECT_EQ(moeLayerGetWorkspaceSize(L_->gpu, T_, &ws_bytes), moeSuccess);
    DevBuf ws(ws_bytes);
    PutVec(dx, xb_);
    PutVec(dw, w_);
    PutVec(doff, off);
    PutVec(dsp, sp);
    Guarded out(static_cast<size_t>(TK_ * H) * es_);
    const bool scaled = GetParam().routing == moeRoutingSigmoidTop1InputScale;
    EXPECT_EQ(moeLayerExperts(L_->gpu, T_, dx.get(), scaled ? dw.as<float>() : nullptr,
                              doff.as<int64_t>(), dsp.as<int64_t>(), out.get(), ws.get(), ws.size(),
                              nullptr),
              moeSuccess)
        << moeGetLastErrorMessage();
    EXPECT_TRUE(out.GuardsIntact()) << "expert_out";
    return out.Bytes();
  }

  // The documented sanitization: each offset clamped into [0, T * K], then raised to the one
  // before it.
  std::vector<int64_t> Clean(const std::vector<int64_t> &off) const {
    std::vector<int64_t> c(off.size());
    int64_t run = 0;
    for (size_t g = 0; g < off.size(); ++g) {
      const int64_t v = off[g] < 0 ? 0 : off[g] > TK_ ? TK_ : off[g];
      run = g == 0 || v > run ? v : run;
      c[g] = run;
    }
    return c;
  }

  // Runs (bad_off, bad_sp) and compares with the valid run (off, sp): every row of a group whose
  // sanitized bounds are its valid ones and whose pair is unchanged must be bitwise equal; rows
  // outside the sanitized groups must be untouched.
  void Check(const std::string &what, const std::vector<int64_t> &off, const std::vector<int64_t> &sp,
             const std::vector<uint8_t> &ref, const std::vector<int64_t> &bad_off,
             const std::vector<int64_t> &bad_sp) {
    SCOPED_TRACE(what);
    const auto got = Run(bad_off, bad_sp);
    const auto clean = Clean(bad_off);
    const size_t row = static_cast<size_t>(H) * es_;
    int64_t compared = 0;
    for (int32_t g = 0; g < E_; ++g) {
      if (clean[g] != off[g] || clean[g + 1] != off[g + 1]) continue;
      for (int64_t r = off[g]; r < off[g + 1]; ++r) {
        if (bad_sp[r] != sp[r]) continue;
        ++compared;
        ASSERT_TRUE(std::equal(got.begin() + r * row, got.begin() + (r + 1) * row, ref.begin() + r * row))
            << "row " << r << " (expert " << g << ") differs from the valid run";
      }
    }
    for (int64_t r = 0; r < TK_; ++r) {
      if (r >= clean[0] && r < clean[E_]) continue;
      for (size_t b = 0; b < row; ++b)
        ASSERT_EQ(got[r * row + b], Guarded::kByte) << "row " << r << " outside every group was written";
    }
    RecordProperty("rows_compared_" + what, std::to_string(compared));
  }

  int32_t E_ = 0, K_ = 0;
  int64_t T_ = 0, TK_ = 0;
  size_t es_ = 0;
  std::unique_ptr<LayerPair> L_;
  std::vector<uint8_t> xb_;
  std::vector<float> w_;
  std::vector<int32_t> ids_;
};

TEST_P(CudaBoundsExperts, GarbageOffsetsAndPairs) {
  const int32_t E = E_;
  const int64_t TK = TK_;
  // A valid permutation of the routed ids, and what valid inputs give.
  std::vector<int64_t> off(E + 1), sp(static_cast<size_t>(TK)), pr(static_cast<size_t>(TK));
  MOE_ASSERT_OK(moeLayerPermute(L_->cpu, T_, ids_.data(), off.data(), sp.data(), pr.data(), nullptr, 0, nullptr));
  ASSERT_EQ(off[E], TK);
  const auto ref = Run(off, sp);
  const moeDtype_t dt = GetParam().dtype;
  const float *scales = GetParam().routing == moeRoutingSigmoidTop1InputScale ? w_.data() : nullptr;
  std::vector<uint8_t> out_c(static_cast<size_t>(TK * H) * es_);
  MOE_ASSERT_OK(moeLayerExperts(L_->cpu, T_, xb_.data(), scales, off.data(), sp.data(), out_c.data(),
                                nullptr, 0, nullptr));
  EXPECT_LE(moe_test::RelError(moe_test::FromBytes(ref.data(), static_cast<size_t>(TK * H), dt),
                               moe_gpu_test::ToDoubleVec(
                                   moe_test::FromBytes(out_c.data(), static_cast<size_t>(TK * H), dt))),
            moe_test::Tolerance(dt))
      << "valid inputs: the CUDA backend differs from the CPU's";

  auto with = [&off](size_t g, int64_t v) {
    std::vector<int64_t> o = off;
    o[g] = v;
    return o;
  };
  // Offsets inside the groups: early, middle, late or (with more than 1024 groups) around the
  // schedule kernel's passes of 1024, where the running maximum is carried.
  const std::vector<size_t> at = E > 1024 ? std::vector<size_t>{1023, 1024, 1025, 2048}
                                          : std::vector<size_t>{2, size_t(E / 2), size_t(E - 2)};
  Check("offsets[0] < 0", off, sp, ref, with(0, -5), sp);
  Check("offsets[0] = INT64_MIN", off, sp, ref, with(0, kI64Min), sp);
  Check("offsets[E] > T*K", off, sp, ref, with(E, TK + 100), sp);
  Check("offsets[E] = INT64_MAX", off, sp, ref, with(E, kI64Max), sp);
  for (size_t g : at) {
    const std::string i = "offsets[" + std::to_string(g) + "]";
    Check(i + " decreasing", off, sp, ref, with(g, off[g - 1] - 1), sp);
    Check(i + " = INT64_MIN", off, sp, ref, with(g, kI64Min), sp);
    Check(i + " = T*K + 1", off, sp, ref, with(g, TK + 1), sp);
  }
  Check("offsets[E/2] = INT64_MAX", off, sp, ref, with(size_t(E / 2), kI64Max), sp);
  Check("offsets all past T*K", off, sp, ref, std::vector<int64_t>(E + 1, TK + 1), sp);
  {
    std::vector<int64_t> desc(E + 1), one(E + 1);
    for (int32_t g = 0; g <= E; ++g) {
      desc[g] = g % 7 == 6 ? kI64Min : TK - 3 * g;  // descending, negative from some g on
      one[g] = g <= E / 2 ? 0 : TK;                 // every row to expert E / 2
    }
    Check("offsets descending", off, sp, ref, desc, sp);
    Check("offsets whole range to one group", off, sp, ref, one, sp);
  }
  // Pairs: negative and past T * K, in every group, the rest valid.
  std::vector<int64_t> bad_sp = sp;
  const int64_t bad[] = {-1, -K_, TK, TK + K_, kI64Max, kI64Min, int64_t{1} << 40};
  for (int64_t r = 0; r < TK; r += 3) bad_sp[r] = bad[(r / 3) % 7];
  Check("sorted_pairs outside [0, T*K)", off, sp, ref, off, bad_sp);
  // Both at once.
  std::vector<int64_t> both = with(1, -3);
  both[size_t(E / 2)] = kI64Max;
  Check("both", off, sp, ref, both, bad_sp);
  // The CPU backend refuses bad pairs, naming the entry.
  EXPECT_EQ(moeLayerExperts(L_->cpu, T_, xb_.data(), scales, off.data(), bad_sp.data(), out_c.data(),
                            nullptr, 0, nullptr),
            moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("sorted_pairs[0]"), std::string::npos)
      << moeGetLastErrorMessage();
}

const ExpertsBoundsCase kExpertsBoundsCases[] = {
    {"tiled_f32", moeFloat32, "tiled", moeRoutingTopKSoftmax, 8, 2, 40},
    {"skinny_f32", moeFloat32, "skinny", moeRoutingTopKSoftmax, 8, 2, 40},
    {"tiled_bf16", moeBFloat16, "tiled", moeRoutingTopKSoftmax, 8, 2, 40},
    {"skinny_bf16", moeBFloat16, "skinny", moeRoutingTopKSoftmax, 8, 2, 40},
    {"wgmma_bf16", moeBFloat16, "wgmma", moeRoutingTopKSoftmax, 8, 2, 40},
    {"tiled_f16", moeFloat16, "tiled", moeRoutingTopKSoftmax, 8, 2, 40},
    {"wgmma_f16", moeFloat16, "wgmma", moeRoutingTopKSoftmax, 8, 2, 40},
    // input-scaled routing: row_scale is read through the pairs too
    {"input_scale_tiled_bf16", moeBFloat16, "tiled", moeRoutingSigmoidTop1InputScale, 8, 1, 40},
    {"input_scale_skinny_f32", moeFloat32, "skinny", moeRoutingSigmoidTop1InputScale, 8, 1, 40},
    // more groups than the schedule kernel's 1024 threads: three passes (few tokens: the
    // emulator's time goes with the blocks launched)
    {"groups_2100_tiled_f32", moeFloat32, "tiled", moeRoutingTopKSoftmax, 2100, 2, 12},
    {"groups_2100_skinny_bf16", moeBFloat16, "skinny", moeRoutingTopKSoftmax, 2100, 2, 12},
};

INSTANTIATE_TEST_SUITE_P(Kernels, CudaBoundsExperts, ::testing::ValuesIn(kExpertsBoundsCases),
                         [](const ::testing::TestParamInfo<ExpertsBoundsCase> &i) {
                           return std::string(i.param.name);
                         });

}  // namespace

#else
TEST(CudaBounds, NotBuilt) { GTEST_SKIP() << "built without CUDA"; }
#endif
