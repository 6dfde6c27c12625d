// Each stage's own contract (moe.h), fed hand-made inputs rather than the previous stage's
// output: permute, experts (incl. input scaling), combine (incl. -1 slots and weight 1 for
// input-scaled routing); re-uploading weights; layers used from several threads at once.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"

using namespace moe_test;

namespace {

std::vector<uint8_t> F32Bytes(const std::vector<float> &v) { return ToBytes(v, moeFloat32); }

}  // namespace

TEST(Stages, PermuteHandMadeIds) {
  moeLayerConfig_t c = MakeConfig(8, 4, 4, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  const std::vector<int32_t> ids = {2, 0, -1, 2, 0, -1, 3, 2};  // T = 4, K = 2
  std::vector<int64_t> off(5, -7), sorted(8, -7), rows(8, -7);
  MOE_ASSERT_OK(moeLayerPermute(L.layer(), 4, ids.data(), off.data(), sorted.data(), rows.data(),
                                nullptr, 0, nullptr));
  EXPECT_EQ(off, (std::vector<int64_t>{0, 2, 2, 5, 6}));
  EXPECT_EQ(std::vector<int64_t>(sorted.begin(), sorted.begin() + 6),
            (std::vector<int64_t>{1, 4, 0, 3, 7, 6}));
  EXPECT_EQ(rows, (std::vector<int64_t>{2, 0, -1, 3, 1, -1, 5, 4}));
}

// An id outside [-1, E) is the caller's mistake, not "no expert": refused, naming the pair.
TEST(Stages, PermuteRefusesIdsOutsideTheExperts) {
  moeLayerConfig_t c = MakeConfig(8, 4, 4, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  std::vector<int64_t> off(5, -7), sorted(4, -7), rows(4, -7);
  for (int32_t bad : {4, -2, 100}) {
    const std::vector<int32_t> ids = {1, 0, bad, 2};  // T = 2, K = 2
    EXPECT_EQ(moeLayerPermute(L.layer(), 2, ids.data(), off.data(), sorted.data(), rows.data(),
                              nullptr, 0, nullptr),
              moeErrorInvalidArgument);
    const std::string msg = moeGetLastErrorMessage();
    EXPECT_NE(msg.find("expert_ids[2] = " + std::to_string(bad) + " outside [-1, E = 4)"),
              std::string::npos)
        << msg;
  }
}

TEST(Stages, PermuteZeroTokensGivesZeroOffsets) {
  moeLayerConfig_t c = MakeConfig(8, 4, 4, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  std::vector<int64_t> off(5, -7);
  int32_t id = 0;
  int64_t s = 0, r = 0;
  MOE_ASSERT_OK(moeLayerPermute(L.layer(), 0, &id, off.data(), &s, &r, nullptr, 0, nullptr));
  EXPECT_EQ(off, (std::vector<int64_t>(5, 0)));
}

namespace {

// Runs the experts stage on a hand-made permutation and checks every row with the naive FFN.
void CheckExperts(moeRouting_t routing) {
  moeLayerConfig_t c = MakeConfig(12, 10, 4, 2, routing);
  if (routing == moeRoutingSigmoidTop1InputScale) c.top_k = 1;
  const int32_t K = c.top_k;
  HostLayer w = MakeRandomLayer(c, 3);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 5, H = 12;
  std::vector<float> x = RandomTokens(T, H, moeFloat32, 4);
  std::vector<float> weights(size_t(T * K));
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = 0.25f + 0.1f * float(i);
  // Expert 0: rows 0-1, expert 1: none, expert 2: rows 2-4, expert 3: none; rows past 5 unused.
  const std::vector<int64_t> off = {0, 2, 2, 5, 5};
  std::vector<int64_t> sorted(size_t(T * K), 0);
  const int64_t picks[5] = {K * 4, 0, K * 2, K * 1, K * 3 + K - 1};
  for (int r = 0; r < 5; ++r) sorted[size_t(r)] = picks[r];
  AlignedBuffer out(size_t(T * K * H) * 4);
  MOE_ASSERT_OK(moeLayerExperts(L.layer(), T, F32Bytes(x).data(), weights.data(), off.data(),
                                sorted.data(), out.data(), nullptr, 0, nullptr));
  std::vector<float> got = FromBytes(out.data(), size_t(T * K * H), moeFloat32);
  moeNaiveLayer n = w.Naive();
  std::vector<double> in(static_cast<size_t>(H)), o(static_cast<size_t>(H));
  for (int r = 0; r < 5; ++r) {
    const int32_t e = r < 2 ? 0 : 2;
    const int64_t pair = sorted[size_t(r)], t = pair / K;
    const double s = routing == moeRoutingSigmoidTop1InputScale ? weights[size_t(pair)] : 1.0;
    for (int64_t i = 0; i < H; ++i) in[size_t(i)] = s * x[size_t(t * H + i)];
    moe_naive_ffn(&n, e, in.data(), o.data());
    std::vector<float> row(got.begin() + r * H, got.begin() + (r + 1) * H);
    EXPECT_LE(RelError(row, o), 1e-5) << "row " << r;
  }
  for (int64_t r = 5; r < T * K; ++r)
    for (int64_t i = 0; i < H; ++i)
      EXPECT_TRUE(std::isnan(got[size_t(r * H + i)])) << "row " << r << " past offsets[E] was written";
}

}  // namespace

TEST(Stages, ExpertsOnAHandMadePermutation) { CheckExperts(moeRoutingSoftmaxTopK); }

TEST(Stages, ExpertsScaleTheInputForLlama4) { CheckExperts(moeRoutingSigmoidTop1InputScale); }

namespace {

void CheckCombine(moeRouting_t routing, bool with_shared) {
  moeLayerConfig_t c = MakeConfig(8, 4, 4, 3, routing);
  if (routing == moeRoutingSigmoidTop1InputScale) c.top_k = 1;
  const int32_t K = c.top_k;
  const int64_t T = 4, H = 8, P = T * K;
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  std::vector<float> eo = RandomTokens(P, H, moeFloat32, 5), sh = RandomTokens(T, H, moeFloat32, 6);
  std::vector<float> wts(static_cast<size_t>(P));
  std::vector<int64_t> rows(static_cast<size_t>(P));
  for (int64_t q = 0; q < P; ++q) {
    rows[size_t(q)] = (q * 5 + 3) % P;  // a permutation of the rows
    wts[size_t(q)] = 0.5f + 0.25f * float(q % 3);
  }
  if (P > 2) rows[2] = -1, wts[2] = 0.0f;  // a dropped slot
  AlignedBuffer y(size_t(T * H) * 4);
  MOE_ASSERT_OK(moeLayerCombine(L.layer(), T, F32Bytes(eo).data(), rows.data(), wts.data(),
                                with_shared ? F32Bytes(sh).data() : nullptr, y.data(), nullptr));
  const bool unit = routing == moeRoutingSigmoidTop1InputScale;
  std::vector<double> ref(size_t(T * H), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i) {
      double acc = 0.0;
      for (int32_t j = 0; j < K; ++j) {
        const int64_t r = rows[size_t(t * K + j)];
        if (r < 0) continue;
        acc += (unit ? 1.0 : double(wts[size_t(t * K + j)])) * eo[size_t(r * H + i)];
      }
      ref[size_t(t * H + i)] = acc + (with_shared ? sh[size_t(t * H + i)] : 0.0);
    }
  EXPECT_LE(RelError(FromBytes(y.data(), size_t(T * H), moeFloat32), ref), 1e-6);
}

}  // namespace

TEST(Stages, CombineWeightsRowsSkipsDroppedSlots) { CheckCombine(moeRoutingSoftmaxTopK, false); }
TEST(Stages, CombineAddsSharedOutput) { CheckCombine(moeRoutingSoftmaxTopK, true); }
TEST(Stages, CombineSumsInputScaledRoutingWithWeightOne) {
  CheckCombine(moeRoutingSigmoidTop1InputScale, true);
}

TEST(Stages, RouteOnMultiHeadSubTokens) {
  // The route stage of an MH-MoE layer sees T sub-tokens of width Hr = H / num_heads.
  moeLayerConfig_t c = MakeConfig(48, 16, 8, 2, moeRoutingSoftmaxTopK, moeFloat32);
  c.num_heads = 3;
  HostLayer w = MakeRandomLayer(c, 7);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 33;
  std::vector<float> x = RandomTokens(T, 16, moeFloat32, 8);
  std::vector<int32_t> ids, rids;
  std::vector<float> wts;
  std::vector<double> rw;
  MOE_ASSERT_OK(L.Route(x, T, &ids, &wts));
  NaiveRoute(w, x, T, &rids, &rw);
  EXPECT_TRUE(SameRouting(ids, wts, rids, rw, T, 2));
}

TEST(Stages, MisalignedWorkspaceIsRejected) {
  moeLayerConfig_t c = MakeConfig(16, 8, 4, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 1)));
  size_t ws = 0;
  MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.layer(), 3, &ws));
  AlignedBuffer work(ws + 256);
  auto x = F32Bytes(RandomTokens(3, 16, moeFloat32, 2));
  std::vector<float> y(3 * 16);
  EXPECT_EQ(moeLayerForward(L.layer(), 3, x.data(), y.data(), nullptr,
                            static_cast<char *>(work.data()) + 8, ws, nullptr),
            moeErrorInvalidArgument);
}

TEST(Stages, ReuploadingWeightsTakesEffect) {
  // Whatever the backend caches (packed weights, ...) must follow a new upload.
  moeLayerConfig_t c = MakeConfig(32, 16, 4, 2, moeRoutingTopKSoftmax, moeBFloat16);
  HostLayer w = MakeRandomLayer(c, 9), w2 = MakeRandomLayer(c, 10);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(w));
  const int64_t T = 20;
  std::vector<float> x = RandomTokens(T, 32, moeBFloat16, 11), y;
  MOE_ASSERT_OK(L.Forward(x, T, &y));
  ASSERT_LE(RelError(y, NaiveForward(w, x, T)), 1e-2);
  // New expert 1 (per-expert setter) and a new router.
  const int64_t GI = 32, Hr = 32, I = 16;
  std::copy(w2.gate_up.begin() + GI * Hr, w2.gate_up.begin() + 2 * GI * Hr, w.gate_up.begin() + GI * Hr);
  std::copy(w2.down.begin() + Hr * I, w2.down.begin() + 2 * Hr * I, w.down.begin() + Hr * I);
  auto gu = ToBytes(std::vector<float>(w.gate_up.begin() + GI * Hr, w.gate_up.begin() + 2 * GI * Hr), moeBFloat16);
  auto dn = ToBytes(std::vector<float>(w.down.begin() + Hr * I, w.down.begin() + 2 * Hr * I), moeBFloat16);
  MOE_ASSERT_OK(moeLayerSetExpertWeights(L.layer(), 1, gu.data(), gu.data() + I * Hr * 2, dn.data(), moeBFloat16));
  w.router_weight = w2.router_weight;
  auto rw = ToBytes(w.router_weight, moeBFloat16);
  MOE_ASSERT_OK(moeLayerSetRouterWeights(L.layer(), rw.data(), nullptr, moeBFloat16));
  std::vector<float> y2;
  MOE_ASSERT_OK(L.Forward(x, T, &y2));
  EXPECT_LE(RelError(y2, NaiveForward(w, x, T)), 1e-2);
  EXPECT_GT(RelError(y2, ToDouble(y)), 1e-2) << "the new weights made no difference";
}

TEST(Stages, LayersOnSeparateThreadsDoNotInterfere) {
  moeLayerConfig_t c = FamilyConfig(moeRoutingSigmoidGroupTopK, moeFloat32, 48, 32);
  HostLayer w = MakeRandomLayer(c, 12);
  const int64_t T = 64;
  std::vector<float> x = RandomTokens(T, 48, moeFloat32, 13);
  std::vector<float> expect = RunCpuForward(w, x, T);
  ASSERT_EQ(expect.size(), size_t(T * 48));
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> th;
  for (int i = 0; i < 4; ++i)
    th.emplace_back([&, i] {
      CpuLayer L(c, 1 + i % 2);
      if (L.status() != moeSuccess || L.Upload(w) != moeSuccess) return;
      for (int rep = 0; rep < 3; ++rep) {
        std::vector<float> y;
        if (L.Forward(x, T, &y) != moeSuccess) return;
        got[size_t(i)] = y;
        if (!BitwiseEqual(y, expect)) return;  // keep the first mismatch
      }
    });
  for (auto &t : th) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(BitwiseEqual(got[size_t(i)], expect)) << "thread " << i;
}
