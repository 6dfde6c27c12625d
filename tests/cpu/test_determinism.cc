// Determinism (DESIGN.md): the same inputs give bitwise the same outputs, run after run, with
// any number of threads, with the caller's or the layer's own workspace, on any layer instance.
#include <string>
#include <vector>

#include "common/test_util.h"

using namespace moe_test;

namespace {

std::vector<float> RunLayer(const HostLayer &w, const std::vector<float> &x, int64_t T, int threads,
                       StatsBuffers *stats = nullptr) {
  CpuLayer L(w.cfg, threads);
  EXPECT_EQ(L.status(), moeSuccess) << moeGetLastErrorMessage();
  if (L.status() != moeSuccess) return {};
  EXPECT_EQ(L.Upload(w), moeSuccess) << moeGetLastErrorMessage();
  std::vector<float> y;
  moeRouterStats_t st = MOE_ROUTER_STATS_INIT;
  if (stats) st = stats->Get();
  EXPECT_EQ(L.Forward(x, T, &y, stats ? &st : nullptr), moeSuccess) << moeGetLastErrorMessage();
  return y;
}

class Deterministic : public ::testing::TestWithParam<moeRouting_t> {};

}  // namespace

TEST_P(Deterministic, TwiceOnOneLayerAndAcrossThreadCounts) {
  moeLayerConfig_t c = FamilyConfig(GetParam(), moeBFloat16, 64, 48);
  HostLayer w = MakeRandomLayer(c, 1);
  const int64_t T = 131;
  std::vector<float> x = RandomTokens(T, c.hidden, c.dtype, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  std::vector<float> a, b;
  MOE_ASSERT_OK(L.Forward(x, T, &a));
  MOE_ASSERT_OK(L.Forward(x, T, &b));
  ASSERT_EQ(a.size(), size_t(T * c.hidden));
  EXPECT_TRUE(BitwiseEqual(a, b)) << "two runs on one layer differ";
  for (int threads : {1, 2, 3, 7}) {
    std::vector<float> y = RunLayer(w, x, T, threads);
    EXPECT_TRUE(BitwiseEqual(a, y)) << "num_threads = " << threads;
  }
}

INSTANTIATE_TEST_SUITE_P(Determinism, Deterministic,
                         ::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                         [](const ::testing::TestParamInfo<moeRouting_t> &i) {
                           return std::string(RoutingName(i.param));
                         });

TEST(Determinism, StatsAreDeterministicToo) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingTopP, moeFloat32, 32, 16);
  c.capacity_factor = 0.8f;
  HostLayer w = MakeRandomLayer(c, 3);
  std::vector<float> x = RandomTokens(200, 32, moeFloat32, 4);
  StatsBuffers s1(c.num_experts), s2(c.num_experts);
  std::vector<float> y1 = RunLayer(w, x, 200, 1, &s1), y2 = RunLayer(w, x, 200, 4, &s2);
  EXPECT_TRUE(BitwiseEqual(y1, y2));
  EXPECT_EQ(s1.counts, s2.counts);
  EXPECT_EQ(s1.dropped, s2.dropped);
  EXPECT_TRUE(BitwiseEqual(s1.prob_mean, s2.prob_mean));
  EXPECT_TRUE(BitwiseEqual(s1.scalars, s2.scalars));
}

TEST(Determinism, OwnWorkspaceEqualsCallerWorkspace) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingSigmoidGroupTopK, moeFloat16, 48, 32);
  HostLayer w = MakeRandomLayer(c, 5);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 57;
  std::vector<float> x = RandomTokens(T, 48, c.dtype, 6), a;
  MOE_ASSERT_OK(L.Forward(x, T, &a));
  auto xb = ToBytes(x, c.dtype);
  AlignedBuffer yb(size_t(T * 48) * 2);
  // The layer's own workspace: NULL. Twice, the second reusing what the first allocated; then a
  // larger T that makes it grow.
  for (int rep = 0; rep < 2; ++rep) {
    Poison(yb.data(), yb.size());
    MOE_ASSERT_OK(moeLayerForward(L.layer(), T, xb.data(), yb.data(), nullptr, nullptr, 0, nullptr));
    EXPECT_TRUE(BitwiseEqual(a, FromBytes(yb.data(), size_t(T * 48), c.dtype))) << "rep " << rep;
  }
  std::vector<float> x2 = RandomTokens(3 * T, 48, c.dtype, 7), big;
  auto x2b = ToBytes(x2, c.dtype);
  AlignedBuffer y2(size_t(3 * T * 48) * 2);
  MOE_ASSERT_OK(moeLayerForward(L.layer(), 3 * T, x2b.data(), y2.data(), nullptr, nullptr, 0, nullptr));
  MOE_ASSERT_OK(L.Forward(x2, 3 * T, &big));
  EXPECT_TRUE(BitwiseEqual(big, FromBytes(y2.data(), size_t(3 * T * 48), c.dtype)));
}

TEST(Determinism, TokensDoNotDependOnTheirBatch) {
  // Token-choice routing without capacity is per token: a token's output is the same whether it
  // is computed alone, in a small batch or in a large one.
  moeLayerConfig_t c = FamilyConfig(moeRoutingSoftmaxTopK, moeFloat32, 32, 24);
  HostLayer w = MakeRandomLayer(c, 8);
  const int64_t T = 150;
  std::vector<float> x = RandomTokens(T, 32, moeFloat32, 9);
  std::vector<float> all = RunLayer(w, x, T, 0);
  std::vector<double> ref = NaiveForward(w, x, T);
  ASSERT_LE(RelError(all, ref), 1e-5);
  for (int64_t t : {0, 77, 149}) {
    std::vector<float> one(x.begin() + t * 32, x.begin() + (t + 1) * 32);
    std::vector<float> y = RunLayer(w, one, 1, 0);
    std::vector<double> r(ref.begin() + t * 32, ref.begin() + (t + 1) * 32);
    EXPECT_LE(RelError(y, r), 1e-5) << "token " << t;
  }
}

TEST(Determinism, SeparateLayersWithTheSameWeightsAgree) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingTopKSoftmax, moeBFloat16, 64, 32);
  c.num_heads = 4;
  HostLayer w = MakeRandomLayer(c, 10);
  std::vector<float> x = RandomTokens(40, 64, c.dtype, 11);
  std::vector<float> a = RunLayer(w, x, 40, 2), b = RunLayer(w, x, 40, 5);
  ASSERT_EQ(a.size(), size_t(40 * 64));
  EXPECT_TRUE(BitwiseEqual(a, b));
}
