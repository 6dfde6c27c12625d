// Features beyond plain top-k: top-p, capacity and drops, expert choice, dense gating with
// per-expert outputs, multi-head MoE, router statistics, aux-loss-free bias updates.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <tuple>
#include <vector>

#include "common/test_util.h"

using namespace moe_test;

namespace {

struct NaiveStatsBuffers {
  explicit NaiveStatsBuffers(int32_t E) : counts(E, -1), dropped(E, -1), prob_mean(E, NAN) {
    s.expert_counts = counts.data();
    s.dropped_counts = dropped.data();
    s.expert_prob_mean = prob_mean.data();
  }
  std::vector<int64_t> counts, dropped;
  std::vector<double> prob_mean;
  moeNaiveStats s = {};
};

// Library stats against naive stats: counts exact, the rest to fp32 accuracy.
void ExpectSameStats(StatsBuffers &got, NaiveStatsBuffers &ref, const char *what) {
  EXPECT_EQ(got.counts, ref.counts) << what;
  EXPECT_EQ(got.dropped, ref.dropped) << what;
  for (size_t e = 0; e < ref.prob_mean.size(); ++e)
    EXPECT_NEAR(got.prob_mean[e], ref.prob_mean[e], 1e-5) << what << " P_" << e;
  const char *names[] = {"aux", "z", "entropy", "maxvio", "experts/token", "dropped"};
  for (int s = 0; s < moeStatScalarCount; ++s) {
    double r = ref.s.scalars[s];
    EXPECT_NEAR(got.scalars[size_t(s)], r, 1e-4 * std::max(1.0, std::fabs(r))) << what << " " << names[s];
  }
}

// Forward with stats on the library and the naive reference; checks y and the stats.
void ForwardAndStats(const HostLayer &w, int64_t T, uint64_t seed, const char *what) {
  std::vector<float> x = RandomTokens(T, w.cfg.hidden, w.cfg.dtype, seed);
  CpuLayer L(w.cfg);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  StatsBuffers st(w.cfg.num_experts);
  moeRouterStats_t s = st.Get();
  std::vector<float> y;
  MOE_ASSERT_OK(L.Forward(x, T, &y, &s));
  NaiveStatsBuffers ns(w.cfg.num_experts);
  std::vector<double> ref = NaiveForward(w, x, T, &ns.s);
  EXPECT_LE(RelError(y, ref), Tolerance(w.cfg.dtype)) << what;
  ExpectSameStats(st, ns, what);
}

class TopPThreshold : public ::testing::TestWithParam<float> {};

}  // namespace

TEST_P(TopPThreshold, ExpertsPerTokenMatchNaive) {
  moeLayerConfig_t c = MakeConfig(32, 16, 16, 16, moeRoutingTopP, moeFloat32);
  c.top_p_threshold = GetParam();
  HostLayer w = MakeRandomLayer(c, 1);
  // Sharper router: probabilities spread from peaked to flat across tokens.
  for (auto &v : w.router_weight) v *= 2.0f;
  const int64_t T = 80;
  std::vector<float> x = RandomTokens(T, 32, moeFloat32, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  std::vector<int32_t> ids, rids;
  std::vector<float> wts;
  std::vector<double> rw;
  StatsBuffers st(16);
  moeRouterStats_t s = st.Get();
  MOE_ASSERT_OK(L.Route(x, T, &ids, &wts, &s));
  NaiveRoute(w, x, T, &rids, &rw);
  int64_t total = 0, rtotal = 0;
  for (int64_t t = 0; t < T; ++t) {
    int n = 0, rn = 0;
    for (int j = 0; j < 16; ++j) n += ids[size_t(t * 16 + j)] >= 0, rn += rids[size_t(t * 16 + j)] >= 0;
    EXPECT_EQ(n, rn) << "token " << t;
    EXPECT_GE(n, 1);
    total += n, rtotal += rn;
  }
  EXPECT_TRUE(SameRouting(ids, wts, rids, rw, T, 16));
  EXPECT_NEAR(st.scalars[moeStatExpertsPerToken], double(rtotal) / T, 1e-5);
  if (GetParam() >= 1.0f) {
    EXPECT_EQ(total, 16 * T);
  }
}

INSTANTIATE_TEST_SUITE_P(Features, TopPThreshold, ::testing::Values(0.2f, 0.4f, 0.7f, 0.95f, 1.0f),
                         [](const ::testing::TestParamInfo<float> &i) {
                           return "P" + std::to_string(int(i.param * 100));
                         });

TEST(Features, TopPCapKeepsTheTopKMax) {
  moeLayerConfig_t c = MakeConfig(32, 16, 16, 2, moeRoutingTopP, moeFloat32);
  c.top_p_threshold = 0.95f;  // almost every token wants more than 2
  ForwardAndStats(MakeRandomLayer(c, 3), 64, 4, "top-p k_max 2");
}

namespace {
using CapCase = std::tuple<moeDropPolicy_t, moeRouting_t, float>;
class Capacity : public ::testing::TestWithParam<CapCase> {};
}  // namespace

TEST_P(Capacity, DropsCountedPerExpertAsNaive) {
  moeLayerConfig_t c = FamilyConfig(std::get<1>(GetParam()), moeFloat32, 32, 16);
  c.drop_policy = std::get<0>(GetParam());
  c.capacity_factor = std::get<2>(GetParam());
  HostLayer w = MakeRandomLayer(c, 5, true);
  for (int e = 0; e < 2; ++e) w.router_bias[size_t(e)] += 1.5f;  // overload experts 0 and 1
  const int64_t T = 96;
  ForwardAndStats(w, T, 6, "capacity");
  // Kept + dropped = every selection the routing made (fixed-k families).
  if (c.routing != moeRoutingTopP) {
    std::vector<float> x = RandomTokens(T, 32, moeFloat32, 6);
    CpuLayer L(c);
    MOE_ASSERT_OK(L.status());
    MOE_ASSERT_OK(L.Upload(w));
    StatsBuffers st(c.num_experts);
    moeRouterStats_t s = st.Get();
    std::vector<float> y;
    MOE_ASSERT_OK(L.Forward(x, T, &y, &s));
    int64_t kept = 0, dropped = 0;
    for (int e = 0; e < c.num_experts; ++e) kept += st.counts[size_t(e)], dropped += st.dropped[size_t(e)];
    EXPECT_EQ(kept + dropped, T * c.top_k);
    EXPECT_GT(dropped, 0) << "the overloaded experts should drop";
    const int64_t C = int64_t(std::ceil(double(T * c.top_k) / c.num_experts * c.capacity_factor));
    for (int e = 0; e < c.num_experts; ++e) EXPECT_LE(st.counts[size_t(e)], C) << "expert " << e;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Features, Capacity,
    ::testing::Combine(::testing::Values(moeDropByPosition, moeDropByProbs),
                       ::testing::Values(moeRoutingTopKSoftmax, moeRoutingSoftmaxTopK,
                                         moeRoutingSigmoidGroupTopK, moeRoutingTopP),
                       ::testing::Values(0.5f, 1.25f)),
    [](const ::testing::TestParamInfo<CapCase> &i) {
      return std::string(std::get<0>(i.param) == moeDropByPosition ? "Position" : "Probs") +
             RoutingName(std::get<1>(i.param)) + (std::get<2>(i.param) < 1 ? "Half" : "Loose");
    });

TEST(Features, ExpertChoiceGivesEveryExpertExactlyC) {
  for (float cf : {0.5f, 1.0f, 2.0f}) {
    moeLayerConfig_t c = FamilyConfig(moeRoutingExpertChoice, moeFloat32, 32, 16);
    c.capacity_factor = cf;
    const int64_t T = 64;
    ForwardAndStats(MakeRandomLayer(c, 7), T, 8, "expert choice");
    CpuLayer L(c);
    MOE_ASSERT_OK(L.status());
    MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 7)));
    StatsBuffers st(c.num_experts);
    moeRouterStats_t s = st.Get();
    std::vector<int32_t> ids;
    std::vector<float> wts;
    MOE_ASSERT_OK(L.Route(RandomTokens(T, 32, moeFloat32, 8), T, &ids, &wts, &s));
    const int64_t C = int64_t(std::floor(T * cf / c.num_experts));
    for (int e = 0; e < c.num_experts; ++e) EXPECT_EQ(st.counts[size_t(e)], C) << "cf " << cf;
    EXPECT_NEAR(st.scalars[moeStatExpertsPerToken], double(C * c.num_experts) / T, 1e-6);
  }
}

TEST(Features, DenseForwardReturnsEveryExpertsOutput) {
  for (moeDtype_t dt : {moeFloat32, moeBFloat16}) {
    moeLayerConfig_t c = MakeConfig(24, 16, 5, 1, moeRoutingDense, dt);
    c.num_shared_experts = 1;
    HostLayer w = MakeRandomLayer(c, 9);
    CpuLayer L(c);
    MOE_ASSERT_OK(L.status());
    MOE_ASSERT_OK(L.Upload(w));
    const int64_t T = 19, H = 24, E = 5;
    std::vector<float> x = RandomTokens(T, H, dt, 10);
    size_t ws = 0;
    MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.layer(), T, &ws));
    AlignedBuffer work(ws), yb(size_t(T * H) * DtypeSize(dt)), eo(size_t(E * T * H) * DtypeSize(dt));
    auto xb = ToBytes(x, dt);
    MOE_ASSERT_OK(moeLayerForwardDense(L.layer(), T, xb.data(), yb.data(), eo.data(), work.data(),
                                       ws, nullptr));
    EXPECT_LE(RelError(FromBytes(yb.data(), size_t(T * H), dt), NaiveForward(w, x, T)), Tolerance(dt));
    std::vector<double> ref(static_cast<size_t>(E * T * H)), in(static_cast<size_t>(H)),
        out(static_cast<size_t>(H));
    moeNaiveLayer n = w.Naive();
    for (int64_t e = 0; e < E; ++e)
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < H; ++i) in[size_t(i)] = x[size_t(t * H + i)];
        moe_naive_ffn(&n, int32_t(e), in.data(), out.data());
        for (int64_t i = 0; i < H; ++i) ref[size_t((e * T + t) * H + i)] = out[size_t(i)];
      }
    EXPECT_LE(RelError(FromBytes(eo.data(), size_t(E * T * H), dt), ref), Tolerance(dt))
        << "expert_outputs [E, T, H] " << DtypeName(dt);
    // The dense y equals the plain forward of the same layer.
    std::vector<float> y2;
    MOE_ASSERT_OK(L.Forward(x, T, &y2));
    EXPECT_TRUE(BitwiseEqual(y2, FromBytes(yb.data(), size_t(T * H), dt)));
  }
}

TEST(Features, MultiHeadMoE) {
  moeLayerConfig_t c = MakeConfig(64, 24, 8, 2, moeRoutingSoftmaxTopK, moeFloat32);
  c.num_heads = 4;
  ForwardAndStats(MakeRandomLayer(c, 11), 23, 12, "MH-MoE");
  c.num_shared_experts = 2;  // shared experts act on the full-width x after the merge
  c.routing = moeRoutingTopKSoftmax, c.num_heads = 2;
  ForwardAndStats(MakeRandomLayer(c, 13), 17, 14, "MH-MoE + shared");
}

TEST(Features, MultiHeadMoEInBF16) {
  // The library stores x_hat = head x + b in the layer's dtype before routing; the naive
  // reference rounds it the same way, so a near-tie flipped by that rounding cannot decide it.
  moeLayerConfig_t c = MakeConfig(32, 24, 8, 2, moeRoutingSoftmaxTopK, moeBFloat16);
  c.num_heads = 4;
  c.num_shared_experts = 1;
  HostLayer w = MakeRandomLayer(c, 15);
  const int64_t T = 29;
  std::vector<float> x = RandomTokens(T, 32, moeBFloat16, 16);
  EXPECT_LE(RelError(RunCpuForward(w, x, T), NaiveForward(w, x, T)), 1e-2);
}

namespace {
class RouterStats : public ::testing::TestWithParam<moeRouting_t> {};
}  // namespace

TEST_P(RouterStats, MatchNaive) {
  moeLayerConfig_t c = FamilyConfig(GetParam(), moeFloat32, 32, 16);
  ForwardAndStats(MakeRandomLayer(c, 17, true), 90, 18, RoutingName(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Features, RouterStats, ::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                         [](const ::testing::TestParamInfo<moeRouting_t> &i) {
                           return std::string(RoutingName(i.param));
                         });

TEST(Features, RouteStageStatsEqualForwardStats) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingSoftmaxTopK, moeFloat32, 32, 16);
  HostLayer w = MakeRandomLayer(c, 19);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  std::vector<float> x = RandomTokens(50, 32, moeFloat32, 20), y;
  StatsBuffers a(c.num_experts), b(c.num_experts);
  moeRouterStats_t sa = a.Get(), sb = b.Get();
  MOE_ASSERT_OK(L.Forward(x, 50, &y, &sa));
  std::vector<int32_t> ids;
  std::vector<float> wts;
  MOE_ASSERT_OK(L.Route(x, 50, &ids, &wts, &sb));
  EXPECT_EQ(a.counts, b.counts);
  EXPECT_TRUE(BitwiseEqual(a.prob_mean, b.prob_mean));
  EXPECT_TRUE(BitwiseEqual(a.scalars, b.scalars));
}

TEST(Features, PartialAndOlderStatsStructs) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingTopKSoftmax, moeFloat32, 32, 16);
  HostLayer w = MakeRandomLayer(c, 21);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  std::vector<float> x = RandomTokens(30, 32, moeFloat32, 22), y;
  NaiveStatsBuffers ns(c.num_experts);
  NaiveForward(w, x, 30, &ns.s);
  // Only the scalars.
  std::vector<float> scalars(moeStatScalarCount, NAN);
  moeRouterStats_t s = MOE_ROUTER_STATS_INIT;
  s.scalars = scalars.data();
  MOE_ASSERT_OK(L.Forward(x, 30, &y, &s));
  EXPECT_NEAR(scalars[moeStatAuxLoss], ns.s.scalars[moeStatAuxLoss], 1e-4);
  // An older caller whose struct ends after expert_counts: the fields past its size are ignored.
  std::vector<int64_t> counts(size_t(c.num_experts), -1);
  moeRouterStats_t old = MOE_ROUTER_STATS_INIT;
  old.size = offsetof(moeRouterStats_t, dropped_counts);
  old.expert_counts = counts.data();
  old.dropped_counts = reinterpret_cast<int64_t *>(0x8);  // garbage beyond its size
  old.scalars = reinterpret_cast<float *>(0x8);
  MOE_ASSERT_OK(L.Forward(x, 30, &y, &old));
  EXPECT_EQ(counts, ns.counts);
}

TEST(Features, UpdateSelectionBiasFollowsTheSignRule) {
  moeLayerConfig_t c = MakeConfig(32, 16, 8, 2, moeRoutingSigmoidGroupTopK, moeFloat32);
  c.n_group = 2, c.topk_group = 2, c.norm_topk_prob = 1;
  HostLayer w = MakeRandomLayer(c, 23, true);
  w.router_bias[0] += 2.0f;  // expert 0 is overloaded at first
  w.selection_bias.assign(8, 0.0f);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 64;
  std::vector<float> x = RandomTokens(T, 32, moeFloat32, 24);
  const float rate = 0.05f;
  int changed = 0;
  std::vector<int32_t> prev;
  for (int step = 0; step < 6; ++step) {
    std::vector<int32_t> ids, rids;
    std::vector<float> wts;
    std::vector<double> rw;
    StatsBuffers st(8);
    moeRouterStats_t s = st.Get();
    MOE_ASSERT_OK(L.Route(x, T, &ids, &wts, &s));
    NaiveRoute(w, x, T, &rids, &rw);
    ASSERT_TRUE(SameRouting(ids, wts, rids, rw, T, 2)) << "step " << step;
    if (!prev.empty() && prev != ids) ++changed;
    prev = ids;
    MOE_ASSERT_OK(moeLayerUpdateSelectionBias(L.layer(), st.counts.data(), rate, nullptr));
    double mean = 0;
    for (int64_t v : st.counts) mean += double(v) / 8;
    for (int e = 0; e < 8; ++e) {
      double d = mean - double(st.counts[size_t(e)]);
      w.selection_bias[size_t(e)] += rate * float((d > 0) - (d < 0));
    }
  }
  EXPECT_GT(changed, 0) << "the bias updates never changed the routing";
}

TEST(Features, UpdateSelectionBiasWithBalancedCountsChangesNothing) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingSigmoidGroupTopK, moeFloat32, 32, 16);
  HostLayer w = MakeRandomLayer(c, 25);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  std::vector<float> x = RandomTokens(40, 32, moeFloat32, 26), a, b;
  MOE_ASSERT_OK(L.Forward(x, 40, &a));
  std::vector<int64_t> counts(size_t(c.num_experts), 10);
  MOE_ASSERT_OK(moeLayerUpdateSelectionBias(L.layer(), counts.data(), 0.5f, nullptr));
  MOE_ASSERT_OK(L.Forward(x, 40, &b));
  EXPECT_TRUE(BitwiseEqual(a, b)) << "sign(mean - c) = 0 must leave the bias alone";
}

TEST(Features, CapacityTiesGoToTheLowerPairIndex) {
  // Identical tokens tie on every score: both policies keep the first C tokens' selections.
  for (moeDropPolicy_t pol : {moeDropByPosition, moeDropByProbs}) {
    moeLayerConfig_t c = MakeConfig(16, 8, 4, 1, moeRoutingSoftmaxTopK, moeFloat32);
    c.capacity_factor = 1.0f;  // C = ceil(10 * 1 / 4) = 3
    c.drop_policy = pol;
    HostLayer w = MakeRandomLayer(c, 27);
    CpuLayer L(c);
    MOE_ASSERT_OK(L.status());
    MOE_ASSERT_OK(L.Upload(w));
    std::vector<float> one = RandomTokens(1, 16, moeFloat32, 28), x;
    for (int t = 0; t < 10; ++t) x.insert(x.end(), one.begin(), one.end());
    std::vector<int32_t> ids;
    std::vector<float> wts;
    StatsBuffers st(4);
    moeRouterStats_t s = st.Get();
    MOE_ASSERT_OK(L.Route(x, 10, &ids, &wts, &s));
    for (int t = 0; t < 10; ++t) EXPECT_EQ(ids[size_t(t)] >= 0, t < 3) << "policy " << pol << " token " << t;
    int64_t dropped = 0;
    for (int64_t v : st.dropped) dropped += v;
    EXPECT_EQ(dropped, 7);
    EXPECT_FLOAT_EQ(st.scalars[moeStatDropped], 7.0f);
  }
}

namespace {
class MultiHeadFamily : public ::testing::TestWithParam<moeRouting_t> {};
}  // namespace

TEST_P(MultiHeadFamily, MatchesNaiveWithStats) {
  // Every family routes the T * h sub-tokens as one batch (capacity and expert choice included).
  moeLayerConfig_t c = FamilyConfig(GetParam(), moeFloat32, 64, 24);
  c.num_heads = 2;
  if (c.routing == moeRoutingSoftmaxTopK) c.capacity_factor = 0.75f;  // drops over sub-tokens
  ForwardAndStats(MakeRandomLayer(c, 29, true), 26, 30, RoutingName(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Features, MultiHeadFamily,
                         ::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                         [](const ::testing::TestParamInfo<moeRouting_t> &i) {
                           return std::string(RoutingName(i.param));
                         });

TEST(Features, SelectionBiasDefaultsToZero) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingSigmoidGroupTopK, moeFloat32, 32, 16);
  HostLayer w = MakeRandomLayer(c, 31);
  w.selection_bias.clear();  // never set: UploadLayer skips the setter, the reference uses zeros
  ForwardAndStats(w, 45, 32, "no selection bias");
}

TEST(Features, MultiHeadWithoutHeadAndMergeBiases) {
  moeLayerConfig_t c = MakeConfig(32, 16, 8, 2, moeRoutingTopKSoftmax, moeFloat32);
  c.num_heads = 4;
  HostLayer w = MakeRandomLayer(c, 33);
  w.head_bias.clear(), w.merge_bias.clear();  // NULL biases mean zeros
  ForwardAndStats(w, 21, 34, "MH-MoE, NULL biases");
}
