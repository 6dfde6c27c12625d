// Expert parallelism from a checkpoint: every virtual rank (loopback communicator, one thread
// each) creates its EP layer from the checkpoint's config, fills its local layer with
// moeLayerLoadCheckpoint (its own experts only) and runs forward on its own tokens; together they
// compute what the naive reference computes on the whole layer.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>

#include "ckpt_writer.h"
#include "common/test_util.h"
#include "moe/moe.h"
#include "moe/moe_ep.h"
#include "moe/moe_io.h"

using namespace moe_io_test;

namespace {

TEST(CheckpointEp, EachRankLoadsItsExpertsAndForwardMatchesNaive) {
  const int P = 2;
  Spec s;
  s.family = Family::DeepSeekV3;  // shared expert, selection bias, groups: every part travels
  s.dtype = moeFloat32;
  s.shards = 3;  // shard 1: experts 0..3 (rank 0), shard 2: experts 4..7 (rank 1)
  TempDir dir;
  Weights w = RandomWeights(s, 77);
  WriteCheckpoint(dir.path, s, w);
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  MOE_ASSERT_OK(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg));

  const int64_t T = 11;  // tokens per rank
  std::vector<float> x = moe_test::RandomTokens(P * T, s.H, moeFloat32, 3);
  moeNaiveLayer naive = w.Naive();
  naive.cfg = cfg;
  std::vector<double> ref((size_t)(P * T * s.H));
  ASSERT_EQ(moe_naive_forward(&naive, P * T, x.data(), ref.data(), nullptr), 0);

  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t ctx = nullptr;
  MOE_ASSERT_OK(moeContextCreate(&ctx, &cc));
  std::vector<moeEpComm_t> comms(P, nullptr);
  MOE_ASSERT_OK(moeEpCommCreateLoopback(comms.data(), ctx, P));
  std::vector<float> y((size_t)(P * T * s.H), NAN);
  std::vector<moeStatus_t> load(P, moeErrorInternal), fwd(P, moeErrorInternal);
  std::vector<int32_t> begin(P, -1), count(P, -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r)
    threads.emplace_back([&, r] {
      moeEpLayer_t ep = nullptr;
      if (moeEpLayerCreate(&ep, comms[r], &cfg, nullptr) != moeSuccess) return;
      moeLayer_t local = nullptr;
      moeEpLayerGetLocalLayer(ep, &local);
      moeEpLayerGetExpertRange(ep, &begin[r], &count[r]);
      load[r] = moeLayerLoadCheckpoint(local, dir.path.c_str(), s.layer, nullptr);
      // Forward is collective: every rank enters it even when its load failed (then it fails
      // on every rank, which the test reports).
      fwd[r] = moeEpLayerForward(ep, T, &x[(size_t)(r * T * s.H)], &y[(size_t)(r * T * s.H)],
                                 nullptr, nullptr, 0, nullptr);
      moeEpLayerDestroy(ep);
    });
  for (auto &t : threads) t.join();
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(load[r], moeSuccess) << "rank " << r;
    EXPECT_EQ(fwd[r], moeSuccess) << "rank " << r;
    EXPECT_EQ(begin[r], r * s.E / P);
    EXPECT_EQ(count[r], s.E / P);
  }
  EXPECT_LE(moe_test::RelError(y, ref), moe_test::Tolerance(moeFloat32));
  for (auto c : comms) moeEpCommDestroy(c);
  moeContextDestroy(ctx);
}

// A rank reads only its shard: with rank 1's shard gone, rank 0 still loads.
TEST(CheckpointEp, ARankNeverOpensAnotherRanksShard) {
  Spec s;
  s.family = Family::Qwen3Moe;
  s.shards = 3;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 5));
  std::remove((dir / ShardName(2, 3)).c_str());
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  MOE_ASSERT_OK(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg));
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t ctx = nullptr;
  MOE_ASSERT_OK(moeContextCreate(&ctx, &cc));
  moeEpComm_t comms[2] = {nullptr, nullptr};
  MOE_ASSERT_OK(moeEpCommCreateLoopback(comms, ctx, 2));
  moeStatus_t load[2] = {moeErrorInternal, moeErrorInternal};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      moeEpLayer_t ep = nullptr;
      if (moeEpLayerCreate(&ep, comms[r], &cfg, nullptr) != moeSuccess) return;
      moeLayer_t local = nullptr;
      moeEpLayerGetLocalLayer(ep, &local);
      load[r] = moeLayerLoadCheckpoint(local, dir.path.c_str(), s.layer, nullptr);
      moeEpLayerDestroy(ep);
    });
  for (auto &t : threads) t.join();
  EXPECT_EQ(load[0], moeSuccess);
  EXPECT_EQ(load[1], moeErrorIo);
  for (auto c : comms) moeEpCommDestroy(c);
  moeContextDestroy(ctx);
}

}  // namespace
