// The reference's own tests: the naive forward (tests/reference/naive_moe.c) against values
// worked out by hand from docs/ROUTING.md. With an identity router a token's values ARE its
// logits, so each case below reads like the document.
#include <cmath>
#include <vector>

#include "common/test_util.h"

using namespace moe_test;

namespace {

// A layer whose router is the identity: H = Hr = E, x rows are logits.
HostLayer LogitLayer(moeRouting_t r, int32_t E, int32_t k) {
  HostLayer w = MakeRandomLayer(MakeConfig(E, 4, E, k, r, moeFloat32), 1);
  SetIdentityRouter(&w);
  return w;
}

struct Routed {
  std::vector<int32_t> ids;
  std::vector<double> w;
};

Routed Route(const HostLayer &w, const std::vector<float> &z, int64_t T, moeNaiveStats *st = nullptr) {
  Routed r;
  NaiveRoute(w, z, T, &r.ids, &r.w, st);
  return r;
}

const double e1 = std::exp(1.0);

}  // namespace

TEST(Naive, TopKSoftmaxIsSoftmaxOverSelectedLogits) {
  HostLayer w = LogitLayer(moeRoutingTopKSoftmax, 4, 2);
  Routed r = Route(w, {1, 2, 3, 0}, 1);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{2, 1}));  // descending score order
  EXPECT_NEAR(r.w[0], e1 / (1 + e1), 1e-12);
  EXPECT_NEAR(r.w[1], 1 / (1 + e1), 1e-12);
}

TEST(Naive, TiesGoToTheLowerIndexAndNaNNeverWins) {
  HostLayer w = LogitLayer(moeRoutingTopKSoftmax, 4, 2);
  Routed r = Route(w, {1, 1, 1, 1}, 1);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(r.w[0], 0.5, 1e-12);
  // A NaN logit (through the router bias; NaN in x would make every logit NaN) never wins.
  w.router_bias = {NAN, 0, 0, NAN};
  r = Route(w, {9, -1, 2, 9, 9, 3, 1, 9}, 2);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 1, 1, 2}));
}

TEST(Naive, SoftmaxTopKWithAndWithoutRenormalization) {
  HostLayer w = LogitLayer(moeRoutingSoftmaxTopK, 3, 2);
  const double lp[3] = {std::log(0.5), std::log(0.3), std::log(0.2)};
  std::vector<float> z = {float(lp[2]), float(lp[0]), float(lp[1])};
  Routed r = Route(w, z, 1);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(r.w[0], 0.5, 1e-6);
  EXPECT_NEAR(r.w[1], 0.3, 1e-6);
  w.cfg.norm_topk_prob = 1;
  w.cfg.routed_scaling_factor = 2.0f;
  r = Route(w, z, 1);
  EXPECT_NEAR(r.w[0], 2 * 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(r.w[1], 2 * 0.3 / 0.8, 1e-6);
}

TEST(Naive, SigmoidGroupTopKSelectsOnBiasedScoresWeighsOnSigmoid) {
  // E = 8 in 4 groups of 2, keep 2 groups, k = 2.
  HostLayer w = LogitLayer(moeRoutingSigmoidGroupTopK, 8, 2);
  w.cfg.n_group = 4, w.cfg.topk_group = 2, w.cfg.norm_topk_prob = 1, w.cfg.routed_scaling_factor = 2.5f;
  // Group sums of sigmoid: g0 = s(3)+s(-3) = 1, g1 = 2 s(0) = 1, g2 = s(2)+s(1.5), g3 = s(-1)+s(-2).
  std::vector<float> z = {3, -3, 0, 0, 2, 1.5f, -1, -2};
  w.selection_bias.assign(8, 0.0f);
  w.selection_bias[7] = 1.0f;  // lifts group 3 (s(-1)+s(-2)+1 > 1) and expert 7 within it
  Routed r = Route(w, z, 1);
  // Kept groups: g2 (1.69) and g3 (1.39); g0 and g1 (1.0) are masked although expert 0 has the
  // best single score. Selection by s_sel: expert 7 (0.119 + 1), then expert 4 (0.881).
  ASSERT_EQ(r.ids, (std::vector<int32_t>{7, 4}));
  auto sg = [](double v) { return 1 / (1 + std::exp(-v)); };
  double s7 = sg(-2), s4 = sg(2);  // weights from s, not s_sel
  EXPECT_NEAR(r.w[0], 2.5 * s7 / (s7 + s4), 1e-9);
  EXPECT_NEAR(r.w[1], 2.5 * s4 / (s7 + s4), 1e-9);
}

TEST(Naive, SoftmaxGroupTopKScoresGroupsByTheirMax) {
  HostLayer w = LogitLayer(moeRoutingSoftmaxGroupTopK, 6, 2);
  w.cfg.n_group = 3, w.cfg.topk_group = 1, w.cfg.routed_scaling_factor = 16.0f;
  // Group 1 holds the single best expert (3); group 0 has two good ones but a lower max.
  std::vector<float> z = {2.5f, 2.5f, 3, -5, 0, 0};
  Routed r = Route(w, z, 1);
  ASSERT_EQ(r.ids, (std::vector<int32_t>{2, 3}));
  double den = 2 * std::exp(2.5) + std::exp(3.0) + std::exp(-5.0) + 2.0;
  EXPECT_NEAR(r.w[0], 16 * std::exp(3.0) / den, 1e-9);
  EXPECT_NEAR(r.w[1], 16 * std::exp(-5.0) / den, 1e-9);
}

TEST(Naive, TopPStrictCrossingIncludesTheCrossingExpert) {
  HostLayer w = LogitLayer(moeRoutingTopP, 4, 4);
  std::vector<float> z = {float(std::log(0.1)), float(std::log(0.5)), float(std::log(0.25)),
                          float(std::log(0.15))};
  w.cfg.top_p_threshold = 0.4f;  // 0.5 > 0.4 at once: one expert
  Routed r = Route(w, z, 1);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, -1, -1, -1}));
  EXPECT_NEAR(r.w[0], 0.5, 1e-6);
  EXPECT_EQ(r.w[1], 0.0);
  w.cfg.top_p_threshold = 0.6f;  // 0.5, 0.75: two, raw probabilities
  r = Route(w, z, 1);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2, -1, -1}));
  EXPECT_NEAR(r.w[1], 0.25, 1e-6);
  w.cfg.top_p_threshold = 1.0f;  // every expert
  r = Route(w, z, 1);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2, 3, 0}));
  w.cfg.top_k = 2;  // the cap keeps the top k_max
  r = Route(w, z, 1);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
}

TEST(Naive, ExpertChoicePicksTopCTokensPerExpert) {
  HostLayer w = LogitLayer(moeRoutingExpertChoice, 2, 1);
  w.cfg.capacity_factor = 1.0f;  // C = floor(4 * 1 / 2) = 2
  std::vector<float> z = {0, 0, 1, 0, 2, 0, 1, 0};  // expert 0 prefers tokens 2, then 1 = 3 (tie)
  Routed r = Route(w, z, 4);
  // Slot j = expert j. Expert 0: tokens 2, 1 (tie 1 vs 3: lower index). Expert 1: tokens 0, 1
  // (p1 = 0.5 for token 0, 0.27 for 1 and 3: tie, lower index).
  EXPECT_EQ(r.ids, (std::vector<int32_t>{-1, 1, 0, 1, 0, -1, -1, -1}));
  EXPECT_NEAR(r.w[4], std::exp(2.0) / (1 + std::exp(2.0)), 1e-9);
}

TEST(Naive, CapacityPositionIsSlotMajor) {
  // E = 2, k = 2, T = 2, factor 0.5: C = ceil(2 * 2 / 2 * 0.5) = 1. Token 0 prefers e0, token 1 e1:
  // first choices (t0:e0, t1:e1) are kept, every second choice is dropped.
  HostLayer w = LogitLayer(moeRoutingTopKSoftmax, 2, 2);
  w.cfg.capacity_factor = 0.5f;
  moeNaiveStats st = {};
  std::vector<int64_t> cnt(2), drop(2);
  st.expert_counts = cnt.data(), st.dropped_counts = drop.data();
  Routed r = Route(w, {1, 0, 0, 1}, 2, &st);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, -1, 1, -1}));
  EXPECT_EQ(cnt, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(drop, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(st.scalars[moeStatDropped], 2.0);
}

TEST(Naive, CapacityProbsKeepsHighestWeights) {
  // E = 2, k = 1, T = 3, factor 1: C = ceil(3 / 2) = 2, all on e0; the weakest is dropped.
  HostLayer w = LogitLayer(moeRoutingSoftmaxTopK, 2, 1);
  w.cfg.capacity_factor = 1.0f;
  w.cfg.drop_policy = moeDropByProbs;
  Routed r = Route(w, {1, 0, 3, 0, 2, 0}, 3);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{-1, 0, 0}));
  w.cfg.drop_policy = moeDropByPosition;
  r = Route(w, {1, 0, 3, 0, 2, 0}, 3);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 0, -1}));
}

TEST(Naive, ActivationsByHand) {
  // One expert, Hr = 1, I = 1: gate = 2, up = 3, down = 0.5, input 1.
  moeLayerConfig_t c = MakeConfig(1, 1, 1, 1, moeRoutingTopKSoftmax, moeFloat32);
  HostLayer w = MakeRandomLayer(c, 3);
  w.gate_up = {2, 3};
  w.down = {0.5f};
  double in = 1.0, out = 0.0;
  auto run = [&](moeActivation_t a) {
    w.cfg.activation = a;
    if (a == moeActivationSwiGLU || a == moeActivationSwiGLUClamped) w.gate_up = {2, 3};
    else w.gate_up = {3};
    moeNaiveLayer n = w.Naive();
    moe_naive_ffn(&n, 0, &in, &out);
    return out;
  };
  auto sg = [](double v) { return 1 / (1 + std::exp(-v)); };
  EXPECT_NEAR(run(moeActivationSwiGLU), 0.5 * 2 * sg(2) * 3, 1e-12);
  EXPECT_NEAR(run(moeActivationGELU), 0.5 * 0.5 * 3 * (1 + std::erf(3 / std::sqrt(2.0))), 1e-12);
  EXPECT_NEAR(run(moeActivationReLU), 1.5, 1e-12);
  EXPECT_NEAR(run(moeActivationSquaredReLU), 4.5, 1e-12);
  w.cfg.swiglu_limit = 1.5f, w.cfg.swiglu_alpha = 1.702f;
  // g = min(2, 1.5) = 1.5; u = clamp(3) = 1.5: (1.5 + 1) * 1.5 * sigmoid(1.702 * 1.5).
  EXPECT_NEAR(run(moeActivationSwiGLUClamped), 0.5 * 2.5 * 1.5 * sg(1.702f * 1.5), 1e-6);
}

TEST(Naive, StatsByHand) {
  HostLayer w = LogitLayer(moeRoutingTopKSoftmax, 2, 1);
  moeNaiveStats st = {};
  std::vector<int64_t> cnt(2);
  std::vector<double> pm(2);
  st.expert_counts = cnt.data(), st.expert_prob_mean = pm.data();
  Route(w, {0, 0, 1, 0}, 2, &st);  // both choose expert 0
  double p = e1 / (1 + e1);
  EXPECT_EQ(cnt, (std::vector<int64_t>{2, 0}));
  EXPECT_NEAR(pm[0], (0.5 + p) / 2, 1e-12);
  EXPECT_NEAR(st.scalars[moeStatAuxLoss], 2 * (1.0 * pm[0]), 1e-12);
  EXPECT_NEAR(st.scalars[moeStatMaxViolation], 1.0, 1e-12);
  double lse0 = std::log(2.0), lse1 = std::log(1 + e1);
  EXPECT_NEAR(st.scalars[moeStatZLoss], (lse0 * lse0 + lse1 * lse1) / 2, 1e-12);
  double h1 = -(p * std::log(p) + (1 - p) * std::log(1 - p));
  EXPECT_NEAR(st.scalars[moeStatEntropy], (std::log(2.0) + h1) / 2, 1e-12);
  EXPECT_NEAR(st.scalars[moeStatExpertsPerToken], 1.0, 1e-12);
}

TEST(Naive, MultiHeadSplitsIntoContiguousSubTokens) {
  // H = 4, 2 heads: with identity head/merge, zero biases, the layer is the per-half MoE.
  moeLayerConfig_t c = MakeConfig(4, 3, 2, 1, moeRoutingTopKSoftmax, moeFloat32);
  c.num_heads = 2;
  HostLayer w = MakeRandomLayer(c, 5);
  w.head.assign(16, 0.0f), w.merge.assign(16, 0.0f);
  for (int i = 0; i < 4; ++i) w.head[i * 5] = 1, w.merge[i * 5] = 1;
  w.head_bias.assign(4, 0.0f), w.merge_bias.assign(4, 0.0f);
  std::vector<float> x = RandomTokens(3, 4, moeFloat32, 9);
  std::vector<double> y = NaiveForward(w, x, 3);
  moeLayerConfig_t c1 = c;
  c1.num_heads = 1, c1.hidden = 2;
  HostLayer w1 = w;
  w1.cfg = c1;
  std::vector<double> y1 = NaiveForward(w1, x, 6);  // the 6 sub-tokens as tokens of width 2
  ASSERT_EQ(y.size(), y1.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], y1[i], 1e-12);
}
