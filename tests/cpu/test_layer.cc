// The whole layer against the naive reference for every family x dtype, the upload paths, the
// stages called one by one, shared experts, gpt-oss and Llama-4.
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "common/test_util.h"

using namespace moe_test;

namespace {

void ExpectClose(const HostLayer &w, int64_t T, uint64_t seed, float x_scale = 1.0f,
                 bool stacked = false) {
  std::vector<float> x = RandomTokens(T, w.cfg.hidden, w.cfg.dtype, seed, x_scale);
  std::vector<float> y = RunCpuForward(w, x, T, stacked);
  std::vector<double> ref = NaiveForward(w, x, T);
  double err = RelError(y, ref);
  EXPECT_LE(err, Tolerance(w.cfg.dtype)) << "relative Frobenius error " << err;
}

using FamilyDtype = std::tuple<moeRouting_t, moeDtype_t>;
class LayerVsNaive : public ::testing::TestWithParam<FamilyDtype> {};

}  // namespace

TEST_P(LayerVsNaive, WithinDtypeTolerance) {
  moeLayerConfig_t c = FamilyConfig(std::get<0>(GetParam()), std::get<1>(GetParam()), 64, 32);
  ExpectClose(MakeRandomLayer(c, 21), 37, 22);
}

INSTANTIATE_TEST_SUITE_P(
    Layer, LayerVsNaive,
    ::testing::Combine(::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                       ::testing::Values(moeFloat32, moeBFloat16, moeFloat16)),
    [](const ::testing::TestParamInfo<FamilyDtype> &i) {
      return std::string(RoutingName(std::get<0>(i.param))) + DtypeName(std::get<1>(i.param));
    });

namespace {
using ActDtype = std::tuple<moeActivation_t, moeDtype_t>;
class Activation : public ::testing::TestWithParam<ActDtype> {};
const char *ActName(moeActivation_t a) {
  static const char *n[] = {"SwiGLU", "GELU", "ReLU", "SquaredReLU", "SwiGLUClamped"};
  return n[a];
}
}  // namespace

TEST_P(Activation, WithinDtypeTolerance) {
  moeLayerConfig_t c = MakeConfig(48, 40, 8, 2, moeRoutingTopKSoftmax, std::get<1>(GetParam()));
  c.activation = std::get<0>(GetParam());
  c.swiglu_limit = 1.5f;  // low enough that the clamps bite on O(1) activations
  ExpectClose(MakeRandomLayer(c, 31), 29, 32, 2.0f);
}

INSTANTIATE_TEST_SUITE_P(Layer, Activation,
                         ::testing::Combine(::testing::Range(moeActivationSwiGLU, moeActivationCount),
                                            ::testing::Values(moeFloat32, moeBFloat16)),
                         [](const ::testing::TestParamInfo<ActDtype> &i) {
                           return std::string(ActName(std::get<0>(i.param))) +
                                  DtypeName(std::get<1>(i.param));
                         });

TEST(Layer, StackedUploadEqualsPerExpertUploadBitwise) {
  for (moeActivation_t a : {moeActivationSwiGLU, moeActivationGELU}) {
    moeLayerConfig_t c = MakeConfig(40, 24, 8, 3, moeRoutingSoftmaxTopK, moeBFloat16);
    c.activation = a;
    HostLayer w = MakeRandomLayer(c, 41);
    std::vector<float> x = RandomTokens(33, 40, moeBFloat16, 42);
    std::vector<float> a1 = RunCpuForward(w, x, 33, false), a2 = RunCpuForward(w, x, 33, true);
    ASSERT_EQ(a1.size(), size_t(33 * 40));
    EXPECT_TRUE(BitwiseEqual(a1, a2)) << ActName(a);
  }
}

TEST(Layer, UploadConvertsFromAnotherSourceDtype) {
  // Values exact in bf16, uploaded once as bf16 bytes and once as f32 bytes into a bf16 layer.
  moeLayerConfig_t c = MakeConfig(32, 16, 4, 2, moeRoutingTopKSoftmax, moeBFloat16);
  c.num_shared_experts = 1;
  c.expert_bias = 1;
  HostLayer w = MakeRandomLayer(c, 43, true);
  std::vector<float> x = RandomTokens(9, 32, moeBFloat16, 44);
  std::vector<float> a1 = RunCpuForward(w, x, 9);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  HostLayer w32 = w;
  w32.cfg.dtype = moeFloat32;  // UploadLayer passes src_dtype = cfg.dtype
  MOE_ASSERT_OK(UploadLayer(L.layer(), w32));
  std::vector<float> a2;
  MOE_ASSERT_OK(L.Forward(x, 9, &a2));
  EXPECT_TRUE(BitwiseEqual(a1, a2));
}

namespace {

// Runs route, permute, experts, shared, combine one by one and compares with forward.
struct Staged {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int64_t> offsets, sorted, pair_rows;
  std::vector<uint8_t> expert_out;
  std::vector<float> y;
};

void RunStages(CpuLayer &L, const moeLayerConfig_t &c, const std::vector<float> &x, int64_t T,
               Staged *s) {
  const int32_t K = moe_naive_route_width(&c), E = c.num_experts;
  const size_t es = DtypeSize(c.dtype);
  size_t ws = 0;
  MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.layer(), T, &ws));
  AlignedBuffer work(ws);
  MOE_ASSERT_OK(L.Route(x, T, &s->ids, &s->weights));
  s->offsets.assign(size_t(E + 1), -7);
  s->sorted.assign(size_t(T * K), -7);
  s->pair_rows.assign(size_t(T * K), -7);
  MOE_ASSERT_OK(moeLayerPermute(L.layer(), T, s->ids.data(), s->offsets.data(), s->sorted.data(),
                                s->pair_rows.data(), work.data(), ws, nullptr));
  auto xb = ToBytes(x, c.dtype);
  s->expert_out.assign(size_t(T * K * c.hidden) * es, 0xFF);
  MOE_ASSERT_OK(moeLayerExperts(L.layer(), T, xb.data(), s->weights.data(), s->offsets.data(),
                                s->sorted.data(), s->expert_out.data(), work.data(), ws, nullptr));
  std::vector<uint8_t> shared;
  if (c.num_shared_experts > 0) {
    shared.assign(size_t(T * c.hidden) * es, 0xFF);
    MOE_ASSERT_OK(moeLayerSharedExperts(L.layer(), T, xb.data(), shared.data(), work.data(), ws,
                                        nullptr));
  }
  std::vector<uint8_t> y(size_t(T * c.hidden) * es, 0xFF);
  MOE_ASSERT_OK(moeLayerCombine(L.layer(), T, s->expert_out.data(), s->pair_rows.data(),
                                s->weights.data(), shared.empty() ? nullptr : shared.data(),
                                y.data(), nullptr));
  s->y = FromBytes(y.data(), size_t(T * c.hidden), c.dtype);
}

struct StageCase {
  const char *name;
  moeRouting_t routing;
  moeDtype_t dtype;
  float capacity;
};
std::ostream &operator<<(std::ostream &os, const StageCase &c) { return os << c.name; }
class StagesEqualForward : public ::testing::TestWithParam<StageCase> {};

}  // namespace

TEST_P(StagesEqualForward, Bitwise) {
  const StageCase &p = GetParam();
  moeLayerConfig_t c = FamilyConfig(p.routing, p.dtype, 48, 24);
  c.capacity_factor = p.capacity > 0 ? p.capacity : c.capacity_factor;
  HostLayer w = MakeRandomLayer(c, 51);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 45;
  std::vector<float> x = RandomTokens(T, c.hidden, c.dtype, 52), y;
  MOE_ASSERT_OK(L.Forward(x, T, &y));
  Staged s;
  ASSERT_NO_FATAL_FAILURE(RunStages(L, c, x, T, &s));
  EXPECT_TRUE(BitwiseEqual(s.y, y));
}

INSTANTIATE_TEST_SUITE_P(
    Layer, StagesEqualForward,
    ::testing::Values(StageCase{"Mixtral", moeRoutingTopKSoftmax, moeFloat32, 0},
                      StageCase{"MixtralBF16", moeRoutingTopKSoftmax, moeBFloat16, 0},
                      StageCase{"DeepSeekV3Shared", moeRoutingSigmoidGroupTopK, moeBFloat16, 0},
                      StageCase{"Llama4InputScale", moeRoutingSigmoidTop1InputScale, moeFloat32, 0},
                      StageCase{"TopP", moeRoutingTopP, moeFloat16, 0},
                      StageCase{"ExpertChoice", moeRoutingExpertChoice, moeFloat32, 0},
                      StageCase{"Dense", moeRoutingDense, moeFloat32, 0},
                      StageCase{"Capacity", moeRoutingSoftmaxTopK, moeFloat32, 0.5f}),
    [](const ::testing::TestParamInfo<StageCase> &i) { return i.param.name; });

TEST(Layer, PermuteIsAStableSortByExpert) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingTopP, moeFloat32, 32, 16);  // has -1 slots
  HostLayer w = MakeRandomLayer(c, 61);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 50;
  const int32_t K = c.top_k, E = c.num_experts;
  Staged s;
  ASSERT_NO_FATAL_FAILURE(RunStages(L, c, RandomTokens(T, 32, moeFloat32, 62), T, &s));
  int64_t valid = 0;
  for (int32_t id : s.ids) valid += id >= 0;
  ASSERT_LT(valid, T * K) << "top-p at 0.4 should leave some slots empty";
  EXPECT_EQ(s.offsets[0], 0);
  EXPECT_EQ(s.offsets[size_t(E)], valid);
  for (int32_t e = 0; e < E; ++e) {
    ASSERT_LE(s.offsets[size_t(e)], s.offsets[size_t(e + 1)]);
    for (int64_t r = s.offsets[size_t(e)]; r < s.offsets[size_t(e + 1)]; ++r) {
      int64_t pair = s.sorted[size_t(r)];
      ASSERT_TRUE(pair >= 0 && pair < T * K);
      EXPECT_EQ(s.ids[size_t(pair)], e) << "row " << r;
      EXPECT_EQ(s.pair_rows[size_t(pair)], r) << "pair_rows is not the inverse";
      if (r > s.offsets[size_t(e)]) EXPECT_LT(s.sorted[size_t(r - 1)], pair) << "not stable";
    }
  }
  for (int64_t q = 0; q < T * K; ++q)
    if (s.ids[size_t(q)] < 0) EXPECT_EQ(s.pair_rows[size_t(q)], -1) << "pair " << q;
  // Experts leave the rows past offsets[E] untouched (still poisoned).
  const size_t row_bytes = size_t(c.hidden) * 4;
  for (int64_t r = valid; r < T * K; ++r)
    for (size_t b = 0; b < row_bytes; ++b)
      ASSERT_EQ(s.expert_out[size_t(r) * row_bytes + b], 0xFF) << "row " << r << " was written";
}

TEST(Layer, SharedExpertsAreSummedUnweighted) {
  for (moeDtype_t dt : {moeFloat32, moeBFloat16}) {
    moeLayerConfig_t c = MakeConfig(48, 32, 8, 2, moeRoutingSoftmaxTopK, dt);
    c.num_shared_experts = 2;
    c.shared_intermediate = 20;
    ExpectClose(MakeRandomLayer(c, 71), 23, 72);
  }
}

TEST(Layer, SharedExpertsStageAloneMatchesNaive) {
  moeLayerConfig_t c = MakeConfig(32, 16, 4, 2);
  c.num_shared_experts = 3;
  c.shared_intermediate = 12;
  c.activation = moeActivationGELU;
  HostLayer w = MakeRandomLayer(c, 73);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 11;
  std::vector<float> x = RandomTokens(T, 32, moeFloat32, 74);
  AlignedBuffer out(size_t(T * 32) * 4);
  MOE_ASSERT_OK(moeLayerSharedExperts(L.layer(), T, ToBytes(x, moeFloat32).data(), out.data(),
                                      nullptr, 0, nullptr));
  std::vector<double> ref(size_t(T * 32), 0.0), in(32), o(32);
  moeNaiveLayer n = w.Naive();
  for (int64_t t = 0; t < T; ++t)
    for (int32_t s = 0; s < 3; ++s) {
      for (int i = 0; i < 32; ++i) in[size_t(i)] = x[size_t(t * 32 + i)];
      moe_naive_ffn(&n, -1 - s, in.data(), o.data());
      for (int i = 0; i < 32; ++i) ref[size_t(t * 32 + i)] += o[size_t(i)];
    }
  EXPECT_LE(RelError(FromBytes(out.data(), size_t(T * 32), moeFloat32), ref), 1e-5);
}

TEST(Layer, GptOssRouterBiasClampedSwiGLUAndExpertBiases) {
  for (moeDtype_t dt : {moeFloat32, moeBFloat16}) {
    moeLayerConfig_t c = MakeConfig(64, 64, 16, 4, moeRoutingTopKSoftmax, dt);
    c.activation = moeActivationSwiGLUClamped;
    c.expert_bias = 1;
    // x scaled by 6: pre-activations reach past the limit of 7 and the clamps matter.
    ExpectClose(MakeRandomLayer(c, 81, true), 31, 82, 6.0f);
  }
}

TEST(Layer, ExpertBiasesOnANonGatedActivation) {
  moeLayerConfig_t c = MakeConfig(32, 24, 8, 2, moeRoutingSoftmaxTopK, moeFloat32);
  c.activation = moeActivationGELU;
  c.expert_bias = 1;
  ExpectClose(MakeRandomLayer(c, 83), 19, 84);
}

TEST(Layer, Llama4ScalesTheInputNotTheOutput) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingSigmoidTop1InputScale, moeFloat32, 48, 32);
  c.activation = moeActivationSquaredReLU;  // strongly nonlinear: s*FFN(x) != FFN(s*x)
  HostLayer w = MakeRandomLayer(c, 91);
  const int64_t T = 21;
  std::vector<float> x = RandomTokens(T, 48, moeFloat32, 92);
  std::vector<float> y = RunCpuForward(w, x, T);
  std::vector<double> ref = NaiveForward(w, x, T);
  EXPECT_LE(RelError(y, ref), 1e-5);
  // The output-scaled variant differs, so the check above can tell the two apart.
  std::vector<int32_t> ids;
  std::vector<double> s;
  NaiveRoute(w, x, T, &ids, &s);
  moeNaiveLayer n = w.Naive();
  std::vector<double> alt(size_t(T * 48)), in(48), o(48);
  for (int64_t t = 0; t < T; ++t) {
    for (int i = 0; i < 48; ++i) in[size_t(i)] = x[size_t(t * 48 + i)];
    moe_naive_ffn(&n, ids[size_t(t)], in.data(), o.data());
    for (int i = 0; i < 48; ++i) alt[size_t(t * 48 + i)] = s[size_t(t)] * o[size_t(i)];
    moe_naive_ffn(&n, -1, in.data(), o.data());
    for (int i = 0; i < 48; ++i) alt[size_t(t * 48 + i)] += o[size_t(i)];
  }
  EXPECT_GT(RelError(y, alt), 1e-3);
}

TEST(Layer, RoutedScalingFactorScalesTheRoutedPartOnly) {
  moeLayerConfig_t c = MakeConfig(32, 16, 8, 2, moeRoutingSoftmaxTopK, moeFloat32);
  c.num_shared_experts = 1;
  HostLayer w = MakeRandomLayer(c, 93);
  std::vector<float> x = RandomTokens(13, 32, moeFloat32, 94);
  HostLayer w2 = w;
  w2.cfg.routed_scaling_factor = 3.0f;
  std::vector<float> y1 = RunCpuForward(w, x, 13), y3 = RunCpuForward(w2, x, 13);
  std::vector<double> r1 = NaiveForward(w, x, 13), r3 = NaiveForward(w2, x, 13);
  EXPECT_LE(RelError(y3, r3), 1e-5);
  EXPECT_GT(RelError(y3, r1), 1e-2);
  EXPECT_LE(RelError(y1, r1), 1e-5);
}
