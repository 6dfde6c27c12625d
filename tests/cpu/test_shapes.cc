// Shapes at the edges: T = 0, 1, a prime, > 65535; k = 1 and k = E; idle experts; every token on
// one expert; widths that are not multiples of 8; one expert; many experts.
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "common/test_util.h"

using namespace moe_test;

namespace {

double Check(const HostLayer &w, int64_t T, uint64_t seed, std::vector<float> *y_out = nullptr,
             StatsBuffers *stats = nullptr) {
  std::vector<float> x = RandomTokens(T, w.cfg.hidden, w.cfg.dtype, seed);
  CpuLayer L(w.cfg);
  EXPECT_EQ(L.status(), moeSuccess) << moeGetLastErrorMessage();
  if (L.status() != moeSuccess) return INFINITY;
  EXPECT_EQ(L.Upload(w), moeSuccess) << moeGetLastErrorMessage();
  std::vector<float> y;
  moeRouterStats_t st = MOE_ROUTER_STATS_INIT;
  if (stats) st = stats->Get();
  moeStatus_t s = L.Forward(x, T, &y, stats ? &st : nullptr);
  EXPECT_EQ(s, moeSuccess) << moeGetLastErrorMessage();
  if (y_out) *y_out = y;
  return RelError(y, NaiveForward(w, x, T));
}

class TokenCount : public ::testing::TestWithParam<int64_t> {};

}  // namespace

TEST_P(TokenCount, MatchesNaive) {
  moeLayerConfig_t c = MakeConfig(32, 16, 8, 2, moeRoutingSoftmaxTopK, moeBFloat16);
  c.num_shared_experts = 1;
  EXPECT_LE(Check(MakeRandomLayer(c, 1), GetParam(), 2), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, TokenCount, ::testing::Values(0, 1, 2, 7, 97, 256, 1031),
                         [](const ::testing::TestParamInfo<int64_t> &i) {
                           return "T" + std::to_string(i.param);
                         });

TEST(Shapes, MoreThan65535Tokens) {
  // Grid-dimension limits on GPUs start at 65535; tiny H, I, E keep the CPU run short.
  moeLayerConfig_t c = MakeConfig(8, 4, 4, 2, moeRoutingTopKSoftmax, moeFloat32);
  const int64_t T = 70001;
  StatsBuffers st(4);
  EXPECT_LE(Check(MakeRandomLayer(c, 3), T, 4, nullptr, &st), 1e-5);
  int64_t total = 0;
  for (int64_t v : st.counts) total += v;
  EXPECT_EQ(total, 2 * T);
}

namespace {
using Kcase = std::tuple<int32_t, moeRouting_t>;
class TopKEdges : public ::testing::TestWithParam<Kcase> {};
}  // namespace

TEST_P(TopKEdges, KIsOneOrE) {
  const int32_t E = 8;
  int32_t k = std::get<0>(GetParam()) == 0 ? E : std::get<0>(GetParam());
  moeLayerConfig_t c = MakeConfig(24, 16, E, k, std::get<1>(GetParam()), moeFloat32);
  if (c.routing == moeRoutingSigmoidGroupTopK) c.n_group = 2, c.topk_group = 2;
  EXPECT_LE(Check(MakeRandomLayer(c, 5), 33, 6), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, TopKEdges,
                         ::testing::Combine(::testing::Values(1, 0),
                                            ::testing::Values(moeRoutingTopKSoftmax,
                                                              moeRoutingSoftmaxTopK,
                                                              moeRoutingSigmoidGroupTopK,
                                                              moeRoutingTopP)),
                         [](const ::testing::TestParamInfo<Kcase> &i) {
                           return std::string(std::get<0>(i.param) == 1 ? "K1" : "KE") +
                                  RoutingName(std::get<1>(i.param));
                         });

TEST(Shapes, ExpertsWithNoTokens) {
  // A strongly negative router bias keeps experts 0..3 idle.
  moeLayerConfig_t c = MakeConfig(32, 16, 8, 2, moeRoutingTopKSoftmax, moeFloat32);
  HostLayer w = MakeRandomLayer(c, 7, true);
  for (int e = 0; e < 4; ++e) w.router_bias[size_t(e)] = -100.0f;
  StatsBuffers st(8);
  EXPECT_LE(Check(w, 41, 8, nullptr, &st), 1e-5);
  for (int e = 0; e < 4; ++e) EXPECT_EQ(st.counts[size_t(e)], 0) << "expert " << e;
}

TEST(Shapes, EveryTokenOnOneExpert) {
  for (moeDtype_t dt : {moeFloat32, moeBFloat16}) {
    moeLayerConfig_t c = MakeConfig(32, 16, 8, 1, moeRoutingSoftmaxTopK, dt);
    HostLayer w = MakeRandomLayer(c, 9, true);
    w.router_bias.assign(8, 0.0f);
    w.router_bias[5] = 100.0f;
    StatsBuffers st(8);
    EXPECT_LE(Check(w, 300, 10, nullptr, &st), Tolerance(dt));
    EXPECT_EQ(st.counts[5], 300);
    EXPECT_NEAR(st.scalars[moeStatMaxViolation], 7.0, 1e-5);  // (300 - 37.5) / 37.5
  }
}

TEST(Shapes, WidthsNotMultiplesOfEight) {
  for (moeDtype_t dt : {moeFloat32, moeFloat16}) {
    moeLayerConfig_t c = MakeConfig(13, 7, 5, 2, moeRoutingTopKSoftmax, dt);
    c.num_shared_experts = 1;
    c.shared_intermediate = 3;
    EXPECT_LE(Check(MakeRandomLayer(c, 11), 53, 12), Tolerance(dt)) << DtypeName(dt);
  }
}

TEST(Shapes, WidthOne) {
  moeLayerConfig_t c = MakeConfig(1, 1, 3, 2, moeRoutingSoftmaxTopK, moeFloat32);
  EXPECT_LE(Check(MakeRandomLayer(c, 13), 17, 14), 1e-5);
}

TEST(Shapes, SingleExpert) {
  moeLayerConfig_t c = MakeConfig(16, 8, 1, 1, moeRoutingTopKSoftmax, moeFloat32);
  EXPECT_LE(Check(MakeRandomLayer(c, 15), 9, 16), 1e-5);
}

TEST(Shapes, ManyExperts) {
  moeLayerConfig_t c = MakeConfig(16, 8, 256, 8, moeRoutingSigmoidGroupTopK, moeBFloat16);
  c.n_group = 8, c.topk_group = 4, c.norm_topk_prob = 1, c.routed_scaling_factor = 2.5f;
  c.num_shared_experts = 1;
  EXPECT_LE(Check(MakeRandomLayer(c, 17), 67, 18), 1e-2);
}

TEST(Shapes, OddWidthsMultiHead) {
  moeLayerConfig_t c = MakeConfig(15, 7, 4, 2, moeRoutingTopKSoftmax, moeFloat32);
  c.num_heads = 3;  // sub-tokens of width 5
  EXPECT_LE(Check(MakeRandomLayer(c, 19), 23, 20), 1e-5);
}

TEST(Shapes, WorkspaceForMoreTokensServesFewer) {
  moeLayerConfig_t c = MakeConfig(32, 16, 8, 2, moeRoutingTopKSoftmax, moeFloat32);
  HostLayer w = MakeRandomLayer(c, 21);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  size_t ws = 0;
  MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.layer(), 500, &ws));
  AlignedBuffer work(ws);
  for (int64_t T : {1, 77, 500}) {
    std::vector<float> x = RandomTokens(T, 32, moeFloat32, uint64_t(T));
    auto xb = ToBytes(x, moeFloat32);
    AlignedBuffer yb(size_t(T * 32) * 4);
    MOE_ASSERT_OK(moeLayerForward(L.layer(), T, xb.data(), yb.data(), nullptr, work.data(), ws,
                                  nullptr));
    EXPECT_LE(RelError(FromBytes(yb.data(), size_t(T * 32), moeFloat32), NaiveForward(w, x, T)),
              1e-5)
        << "T = " << T;
  }
}
