// The route stage of every family against the naive reference: the same expert set per token
// (slot order is free), the same weight per expert id within fp32 tolerance, the tie rule, NaN.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/test_util.h"

using namespace moe_test;

namespace {

struct RouteCase {
  const char *name;
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  bool router_bias;
};

std::ostream &operator<<(std::ostream &os, const RouteCase &c) { return os << c.name; }

RouteCase Case(const char *name, moeRouting_t r, void (*tweak)(moeLayerConfig_t &) = nullptr,
               bool router_bias = false, moeDtype_t dt = moeFloat32) {
  moeLayerConfig_t c = FamilyConfig(r, dt, 48, 16);
  if (tweak) tweak(c);
  return {name, c, router_bias};
}

std::vector<RouteCase> Cases() {
  return {
      Case("Mixtral", moeRoutingTopKSoftmax),
      Case("GptOssRouterBias", moeRoutingTopKSoftmax,
           [](moeLayerConfig_t &c) { c.num_experts = 32, c.top_k = 4; }, true),
      Case("TopKSoftmaxScaled", moeRoutingTopKSoftmax, [](moeLayerConfig_t &c) { c.routed_scaling_factor = 2.0f; }),
      Case("Qwen3Norm", moeRoutingSoftmaxTopK),
      Case("OlmoeNoNorm", moeRoutingSoftmaxTopK, [](moeLayerConfig_t &c) { c.norm_topk_prob = 0; }),
      Case("Switch", moeRoutingSoftmaxTopK, [](moeLayerConfig_t &c) { c.top_k = 1, c.norm_topk_prob = 0; }),
      Case("SoftmaxTopKAllExperts", moeRoutingSoftmaxTopK, [](moeLayerConfig_t &c) { c.top_k = c.num_experts; }),
      Case("DeepSeekV3", moeRoutingSigmoidGroupTopK),
      Case("DeepSeekV3NoNormEightGroups", moeRoutingSigmoidGroupTopK,
           [](moeLayerConfig_t &c) {
             c.num_experts = 32, c.n_group = 8, c.topk_group = 3, c.top_k = 5, c.norm_topk_prob = 0;
           }),
      Case("DeepSeekV3WithRouterBias", moeRoutingSigmoidGroupTopK, nullptr, true),
      Case("DeepSeekV2", moeRoutingSoftmaxGroupTopK),
      Case("DeepSeekV2Norm", moeRoutingSoftmaxGroupTopK, [](moeLayerConfig_t &c) { c.norm_topk_prob = 1; }),
      Case("Llama4", moeRoutingSigmoidTop1InputScale),
      Case("TopP04", moeRoutingTopP),
      Case("TopP09Cap3", moeRoutingTopP, [](moeLayerConfig_t &c) { c.top_p_threshold = 0.9f, c.top_k = 3; }),
      Case("TopPKeepAll", moeRoutingTopP, [](moeLayerConfig_t &c) { c.top_p_threshold = 1.0f, c.top_k = 8; }),
      Case("ExpertChoice", moeRoutingExpertChoice),
      Case("ExpertChoiceHalf", moeRoutingExpertChoice, [](moeLayerConfig_t &c) { c.capacity_factor = 0.5f; }),
      Case("Dense", moeRoutingDense),
      Case("CapacityPosition", moeRoutingTopKSoftmax, [](moeLayerConfig_t &c) { c.capacity_factor = 1.0f; }),
      Case("CapacityProbs", moeRoutingSoftmaxTopK,
           [](moeLayerConfig_t &c) { c.capacity_factor = 1.0f, c.drop_policy = moeDropByProbs; }),
      Case("CapacityTopP", moeRoutingTopP, [](moeLayerConfig_t &c) { c.capacity_factor = 0.75f; }),
      Case("MixtralBF16", moeRoutingTopKSoftmax, nullptr, false, moeBFloat16),
      Case("DeepSeekV3F16", moeRoutingSigmoidGroupTopK, nullptr, false, moeFloat16),
  };
}

class RouteVsNaive : public ::testing::TestWithParam<RouteCase> {};

}  // namespace

TEST_P(RouteVsNaive, SameExpertsAndWeights) {
  const RouteCase &p = GetParam();
  HostLayer w = MakeRandomLayer(p.cfg, 101, p.router_bias);
  CpuLayer L(p.cfg);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 61;
  std::vector<float> x = RandomTokens(T, p.cfg.hidden, p.cfg.dtype, 7);
  std::vector<int32_t> ids, ref_ids;
  std::vector<float> wts;
  std::vector<double> ref_w;
  MOE_ASSERT_OK(L.Route(x, T, &ids, &wts));
  NaiveRoute(w, x, T, &ref_ids, &ref_w);
  const int32_t K = moe_naive_route_width(&p.cfg);
  EXPECT_TRUE(SameRouting(ids, wts, ref_ids, ref_w, T, K, 1e-5));
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_GE(ids[i], -1);
    ASSERT_LT(ids[i], p.cfg.num_experts);
  }
}

INSTANTIATE_TEST_SUITE_P(Routing, RouteVsNaive, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<RouteCase> &i) { return i.param.name; });

namespace {

class RouteTies : public ::testing::TestWithParam<moeRouting_t> {};

// Logits from {-1, 0, 1} (many exact ties within a token) through an identity router; duplicate
// tokens too. Expert choice compares scores ACROSS tokens, where only identical rows tie exactly
// in fp32 (a permuted row ties in exact arithmetic but its softmax sum is added in another
// order): there every token repeats one of 4 random rows.
std::vector<float> TiedLogits(int64_t T, int64_t H, uint64_t seed, bool across_tokens) {
  std::vector<float> x = RandomTokens(T, H, moeFloat32, seed);
  if (across_tokens) {
    for (int64_t t = 4; t < T; ++t)
      for (int64_t i = 0; i < H; ++i) x[size_t(t * H + i)] = x[size_t((t % 4) * H + i)];
    return x;
  }
  for (auto &v : x) v = v > 0.5f ? 1.0f : (v < -0.5f ? -1.0f : 0.0f);
  for (int64_t i = 0; i < H; ++i) x[size_t(H + i)] = x[size_t(i)];  // token 1 = token 0
  for (int64_t i = 0; i < H; ++i) x[size_t(3 * H + i)] = 0.0f;       // token 3: all equal
  return x;
}

}  // namespace

TEST_P(RouteTies, LargerScoreThenLowerIndex) {
  moeLayerConfig_t c = FamilyConfig(GetParam(), moeFloat32, 32, 8);
  HostLayer w = MakeRandomLayer(c, 5);
  SetIdentityRouter(&w);
  if (!w.selection_bias.empty()) w.selection_bias.assign(w.selection_bias.size(), 0.0f);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 24;
  std::vector<float> x = TiedLogits(T, c.hidden, 11, c.routing == moeRoutingExpertChoice);
  std::vector<int32_t> ids, ref_ids;
  std::vector<float> wts;
  std::vector<double> ref_w;
  MOE_ASSERT_OK(L.Route(x, T, &ids, &wts));
  NaiveRoute(w, x, T, &ref_ids, &ref_w);
  EXPECT_TRUE(SameRouting(ids, wts, ref_ids, ref_w, T, moe_naive_route_width(&c), 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Routing, RouteTies, ::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                         [](const ::testing::TestParamInfo<moeRouting_t> &i) {
                           return std::string(RoutingName(i.param));
                         });

TEST(Routing, AllTiedPicksTheLowestExperts) {
  moeLayerConfig_t c = MakeConfig(8, 4, 8, 3, moeRoutingSoftmaxTopK);
  HostLayer w = MakeRandomLayer(c, 1);
  SetIdentityRouter(&w);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  std::vector<int32_t> ids;
  std::vector<float> wts;
  MOE_ASSERT_OK(L.Route(std::vector<float>(8, 0.25f), 1, &ids, &wts));
  std::vector<int32_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int32_t>{0, 1, 2}));
  for (float v : wts) EXPECT_FLOAT_EQ(v, 1.0f / 8);
}

TEST(Routing, NaNLogitNeverWins) {
  // A NaN router bias makes expert 2's logit NaN on every token; it must never be picked while
  // finite experts remain, and the weights of the others stay finite.
  for (moeRouting_t r : {moeRoutingTopKSoftmax, moeRoutingSigmoidTop1InputScale,
                         moeRoutingSigmoidGroupTopK}) {
    moeLayerConfig_t c = FamilyConfig(r, moeFloat32, 32, 8);
    HostLayer w = MakeRandomLayer(c, 9, true);
    w.router_bias[2] = NAN;
    CpuLayer L(c);
    MOE_ASSERT_OK(L.status());
    MOE_ASSERT_OK(L.Upload(w));
    const int64_t T = 40;
    std::vector<int32_t> ids;
    std::vector<float> wts;
    MOE_ASSERT_OK(L.Route(RandomTokens(T, 32, moeFloat32, 3), T, &ids, &wts));
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_NE(ids[i], 2) << RoutingName(r) << " picked the NaN expert at " << i;
      EXPECT_TRUE(ids[i] >= 0 && ids[i] < c.num_experts) << RoutingName(r);
      EXPECT_TRUE(std::isfinite(wts[i])) << RoutingName(r);
    }
  }
}

namespace {
class NaNToken : public ::testing::TestWithParam<moeRouting_t> {};
}  // namespace

TEST_P(NaNToken, StaysInRangeAndLeavesOtherTokensAlone) {
  moeLayerConfig_t c = FamilyConfig(GetParam(), moeFloat32, 32, 8);
  HostLayer w = MakeRandomLayer(c, 13);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 16;
  std::vector<float> x = RandomTokens(T, 32, moeFloat32, 17);
  for (int i = 0; i < 32; ++i) x[size_t(5 * 32 + i)] = NAN;  // token 5: every logit NaN
  std::vector<int32_t> ids, ref_ids;
  std::vector<float> wts;
  std::vector<double> ref_w;
  MOE_ASSERT_OK(L.Route(x, T, &ids, &wts));
  const int32_t K = moe_naive_route_width(&c);
  for (int32_t j = 0; j < K; ++j) {
    int32_t e = ids[size_t(5 * K + j)];
    EXPECT_TRUE(e >= -1 && e < c.num_experts) << "slot " << j << ": " << e;
  }
  if (c.routing == moeRoutingExpertChoice) return;  // the batch decides: no per-token claim
  NaiveRoute(w, x, T, &ref_ids, &ref_w);
  for (int64_t t = 0; t < T; ++t) {
    if (t == 5) continue;
    std::vector<int32_t> a(ids.begin() + t * K, ids.begin() + (t + 1) * K);
    std::vector<float> aw(wts.begin() + t * K, wts.begin() + (t + 1) * K);
    std::vector<int32_t> b(ref_ids.begin() + t * K, ref_ids.begin() + (t + 1) * K);
    std::vector<double> bw(ref_w.begin() + t * K, ref_w.begin() + (t + 1) * K);
    EXPECT_TRUE(SameRouting(a, aw, b, bw, 1, K, 1e-5)) << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Routing, NaNToken, ::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                         [](const ::testing::TestParamInfo<moeRouting_t> &i) {
                           return std::string(RoutingName(i.param));
                         });

TEST(Routing, ExpertChoiceTieGoesToTheLowerToken) {
  // Every token identical: each expert takes tokens 0..C-1.
  moeLayerConfig_t c = MakeConfig(16, 8, 4, 1, moeRoutingExpertChoice);
  c.capacity_factor = 1.0f;  // C = floor(12 / 4) = 3
  HostLayer w = MakeRandomLayer(c, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  std::vector<float> one = RandomTokens(1, 16, moeFloat32, 3), x;
  for (int t = 0; t < 12; ++t) x.insert(x.end(), one.begin(), one.end());
  std::vector<int32_t> ids;
  std::vector<float> wts;
  MOE_ASSERT_OK(L.Route(x, 12, &ids, &wts));
  for (int t = 0; t < 12; ++t)
    for (int e = 0; e < 4; ++e) {
      // Slot e of a token is expert e or -1.
      EXPECT_EQ(ids[size_t(t * 4 + e)], t < 3 ? e : -1) << "token " << t << " expert " << e;
    }
}

TEST(Routing, ZeroTokensRouteNothing) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingTopKSoftmax);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 1)));
  std::vector<int32_t> ids;
  std::vector<float> wts;
  MOE_EXPECT_OK(L.Route({}, 0, &ids, &wts));
}

TEST(Routing, MaskedGroupsLoseEvenToNegativeScores) {
  // DeepSeek-V3 masks the dropped groups with -inf (ROUTING.md 2a; HF's 0.0 differs exactly
  // here): with a selection bias of -2 every s_sel is negative, and a 0.0 mask would let
  // experts of dropped groups win.
  moeLayerConfig_t c = MakeConfig(32, 16, 16, 4, moeRoutingSigmoidGroupTopK, moeFloat32);
  c.n_group = 4, c.topk_group = 1, c.norm_topk_prob = 1;
  HostLayer w = MakeRandomLayer(c, 31);
  for (size_t e = 0; e < w.selection_bias.size(); ++e) w.selection_bias[e] = -2.0f - 0.01f * float(e);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 30;
  std::vector<float> x = RandomTokens(T, 32, moeFloat32, 32);
  std::vector<int32_t> ids, ref_ids;
  std::vector<float> wts;
  std::vector<double> ref_w;
  MOE_ASSERT_OK(L.Route(x, T, &ids, &wts));
  NaiveRoute(w, x, T, &ref_ids, &ref_w);
  EXPECT_TRUE(SameRouting(ids, wts, ref_ids, ref_w, T, 4, 1e-5));
  for (int64_t t = 0; t < T; ++t)  // one kept group of 4 experts, k = 4: all from one group
    for (int j = 1; j < 4; ++j) EXPECT_EQ(ids[size_t(t * 4 + j)] / 4, ids[size_t(t * 4)] / 4) << "token " << t;
}

namespace {
class LargeLogits : public ::testing::TestWithParam<moeRouting_t> {};
}  // namespace

TEST_P(LargeLogits, SoftmaxAndSigmoidStayFinite) {
  // Logits around 150 (a common shift through the router bias; softmax is invariant to it):
  // exp() overflows fp32 unless the max is subtracted first. The spread stays small enough
  // that no fp32 probability underflows to an exact 0 (which would create fp32-only ties).
  moeLayerConfig_t c = FamilyConfig(GetParam(), moeFloat32, 32, 8);
  HostLayer w = MakeRandomLayer(c, 41, true);
  for (auto &b : w.router_bias) b += 150.0f;
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 20;
  std::vector<float> x = RandomTokens(T, 32, moeFloat32, 42, 4.0f);
  std::vector<int32_t> ids, ref_ids;
  std::vector<float> wts;
  std::vector<double> ref_w;
  StatsBuffers st(c.num_experts);
  moeRouterStats_t s = st.Get();
  MOE_ASSERT_OK(L.Route(x, T, &ids, &wts, &s));
  for (float v : wts) ASSERT_TRUE(std::isfinite(v));
  NaiveRoute(w, x, T, &ref_ids, &ref_w);
  EXPECT_TRUE(SameRouting(ids, wts, ref_ids, ref_w, T, moe_naive_route_width(&c), 1e-5));
  for (int i = 0; i < moeStatScalarCount; ++i) EXPECT_TRUE(std::isfinite(st.scalars[size_t(i)])) << i;
  for (float p : st.prob_mean) EXPECT_TRUE(std::isfinite(p));
}

INSTANTIATE_TEST_SUITE_P(Routing, LargeLogits, ::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                         [](const ::testing::TestParamInfo<moeRouting_t> &i) {
                           return std::string(RoutingName(i.param));
                         });
