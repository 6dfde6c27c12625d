// Each family's naming and layout, written by the test, read back through the public API:
// config from config.json and the weights, bit for bit, in libmoe's layout.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ckpt_writer.h"
#include "moe/moe.h"
#include "moe/moe_io.h"

using namespace moe_io_test;

#define IO_ASSERT_OK(expr) ASSERT_EQ((expr), moeSuccess) << moeGetLastErrorMessage()

namespace {


void ExpectSameConfig(const moeLayerConfig_t &got, const moeLayerConfig_t &want) {
  EXPECT_EQ(got.size, sizeof(moeLayerConfig_t));
  EXPECT_EQ(got.hidden, want.hidden);
  EXPECT_EQ(got.intermediate, want.intermediate);
  EXPECT_EQ(got.num_experts, want.num_experts);
  EXPECT_EQ(got.top_k, want.top_k);
  EXPECT_EQ(got.routing, want.routing);
  EXPECT_EQ(got.norm_topk_prob, want.norm_topk_prob);
  EXPECT_EQ(got.n_group, want.n_group);
  EXPECT_EQ(got.topk_group, want.topk_group);
  EXPECT_FLOAT_EQ(got.routed_scaling_factor, want.routed_scaling_factor);
  EXPECT_EQ(got.activation, want.activation);
  EXPECT_FLOAT_EQ(got.swiglu_alpha, want.swiglu_alpha);
  EXPECT_FLOAT_EQ(got.swiglu_limit, want.swiglu_limit);
  EXPECT_EQ(got.expert_bias, want.expert_bias);
  EXPECT_EQ(got.dtype, want.dtype);
  EXPECT_EQ(got.num_shared_experts, want.num_shared_experts);
  EXPECT_EQ(got.shared_intermediate, want.shared_intermediate);
  EXPECT_EQ(got.num_heads, 1);
}

// got[0..n) == want[off..off+n), bit for bit.
void ExpectSlice(const float *got, const std::vector<float> &want, size_t off, size_t n,
                 const char *what) {
  ASSERT_NE(got, nullptr) << what;
  ASSERT_LE(off + n, want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i)
    if (memcmp(&got[i], &want[off + i], sizeof(float)) != 0 && bad++ < 3)
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", want " << want[off + i];
  EXPECT_EQ(bad, 0u) << what;
}

void ExpectWeights(const moeCheckpointWeights_t *r, const Weights &w, int32_t begin,
                   int32_t count) {
  const size_t H = (size_t)w.cfg.hidden, I = (size_t)w.cfg.intermediate;
  const size_t E = (size_t)w.cfg.num_experts, b = (size_t)begin, n = (size_t)count;
  EXPECT_EQ(r->expert_begin, begin);
  EXPECT_EQ(r->expert_count, count);
  ExpectSlice(r->router_weight, w.router, 0, E * H, "router");
  if (w.router_bias.empty()) EXPECT_EQ(r->router_bias, nullptr);
  else ExpectSlice(r->router_bias, w.router_bias, 0, E, "router_bias");
  if (w.selection_bias.empty()) EXPECT_EQ(r->selection_bias, nullptr);
  else ExpectSlice(r->selection_bias, w.selection_bias, 0, E, "selection_bias");
  ExpectSlice(r->gate_up, w.gate_up, b * 2 * I * H, n * 2 * I * H, "gate_up");
  ExpectSlice(r->down, w.down, b * H * I, n * H * I, "down");
  if (w.gate_up_bias.empty()) {
    EXPECT_EQ(r->gate_up_bias, nullptr);
    EXPECT_EQ(r->down_bias, nullptr);
  } else {
    ExpectSlice(r->gate_up_bias, w.gate_up_bias, b * 2 * I, n * 2 * I, "gate_up_bias");
    ExpectSlice(r->down_bias, w.down_bias, b * H, n * H, "down_bias");
  }
  if (w.shared_gate_up.empty()) {
    EXPECT_EQ(r->shared_gate_up, nullptr);
  } else {
    ExpectSlice(r->shared_gate_up, w.shared_gate_up, 0, w.shared_gate_up.size(), "shared_gate_up");
    ExpectSlice(r->shared_down, w.shared_down, 0, w.shared_down.size(), "shared_down");
  }
}

class Families : public ::testing::TestWithParam<Case> {};

TEST_P(Families, ConfigAndWeightsRoundTrip) {
  const Case &c = GetParam();
  const Spec s = SpecOf(c);
  TempDir dir;
  Weights w = RandomWeights(s, 1234);
  WriteCheckpoint(dir.path, s, w);

  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  IO_ASSERT_OK(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg));
  ExpectSameConfig(cfg, ExpectedConfig(s));

  moeCheckpointWeights_t *r = nullptr;
  IO_ASSERT_OK(moeCheckpointReadWeights(dir.path.c_str(), s.layer, nullptr, &r));
  ExpectSameConfig(r->config, ExpectedConfig(s));
  ExpectWeights(r, w, 0, s.E);
  moeCheckpointWeightsDestroy(r);
}

INSTANTIATE_TEST_SUITE_P(
    Io, Families,
    ::testing::Values(
        Case{"MixtralBf16", Family::Mixtral, Scheme::PerExpert, moeBFloat16, 1},
        Case{"MixtralF32Sharded", Family::Mixtral, Scheme::PerExpert, moeFloat32, 3},
        Case{"Qwen3MoeBf16", Family::Qwen3Moe, Scheme::PerExpert, moeBFloat16, 1},
        Case{"Qwen3MoeF16Sharded", Family::Qwen3Moe, Scheme::PerExpert, moeFloat16, 4},
        Case{"OlmoeF32", Family::Olmoe, Scheme::PerExpert, moeFloat32, 1},
        Case{"DeepSeekV3Bf16", Family::DeepSeekV3, Scheme::PerExpert, moeBFloat16, 1},
        Case{"DeepSeekV3Sharded", Family::DeepSeekV3, Scheme::PerExpert, moeBFloat16, 3},
        Case{"DeepSeekV2Bf16", Family::DeepSeekV2, Scheme::PerExpert, moeBFloat16, 2},
        Case{"GptOssBf16", Family::GptOss, Scheme::GptOss, moeBFloat16, 1},
        Case{"GptOssF32", Family::GptOss, Scheme::GptOss, moeFloat32, 1},
        Case{"MixtralV5Stacked", Family::Mixtral, Scheme::StackedV5, moeBFloat16, 1},
        Case{"Qwen3MoeV5StackedF32", Family::Qwen3Moe, Scheme::StackedV5, moeFloat32, 1},
        Case{"DeepSeekV3V5Stacked", Family::DeepSeekV3, Scheme::StackedV5, moeBFloat16, 1}),
    [](const ::testing::TestParamInfo<Case> &i) { return std::string(i.param.name); });

TEST(Io, DtypeOverrideKeepsValues) {
  Spec s;
  s.dtype = moeBFloat16;
  TempDir dir;
  Weights w = RandomWeights(s, 7);
  WriteCheckpoint(dir.path, s, w);
  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  o.dtype_override = 1;
  o.dtype = moeFloat32;  // bf16 values are exact in f32
  moeCheckpointWeights_t *r = nullptr;
  IO_ASSERT_OK(moeCheckpointReadWeights(dir.path.c_str(), s.layer, &o, &r));
  EXPECT_EQ(r->config.dtype, moeFloat32);
  ExpectWeights(r, w, 0, s.E);
  moeCheckpointWeightsDestroy(r);
}

TEST(Io, DtypeOverrideRoundsToTheLayerDtype) {
  Spec s;
  s.dtype = moeFloat32;
  TempDir dir;
  Weights w = RandomWeights(s, 8);
  WriteCheckpoint(dir.path, s, w);
  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  o.dtype_override = 1;
  o.dtype = moeBFloat16;
  moeCheckpointWeights_t *r = nullptr;
  IO_ASSERT_OK(moeCheckpointReadWeights(dir.path.c_str(), s.layer, &o, &r));
  EXPECT_EQ(r->config.dtype, moeBFloat16);
  for (size_t i = 0; i < w.gate_up.size(); ++i) {  // every value now a bf16 value
    uint32_t bits;
    memcpy(&bits, &r->gate_up[i], 4);
    ASSERT_EQ(bits & 0xffffu, 0u) << i;
  }
  ExpectSlice(r->router_weight, w.router, 0, w.router.size(), "router stays fp32");
  moeCheckpointWeightsDestroy(r);
}

// Expert parallelism: a rank reading experts [0, 4) of 8 never opens the shard of experts 4..7,
// which the test deletes first; reading that range is then an I/O error naming the shard.
TEST(Io, ExpertRangeReadsOnlyItsShards) {
  Spec s;
  s.family = Family::Qwen3Moe;
  s.E = 8;
  s.shards = 3;  // shard 0: router etc.; shard 1: experts 0..3; shard 2: experts 4..7
  TempDir dir;
  Weights w = RandomWeights(s, 99);
  WriteCheckpoint(dir.path, s, w);
  ASSERT_EQ(ShardOf(s, "model.layers.1.mlp.experts.3.up_proj.weight"), 1);
  ASSERT_EQ(ShardOf(s, "model.layers.1.mlp.experts.4.up_proj.weight"), 2);
  ASSERT_EQ(std::remove((dir / ShardName(2, 3)).c_str()), 0);

  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  o.expert_begin = 1;
  o.expert_count = 3;
  moeCheckpointWeights_t *r = nullptr;
  IO_ASSERT_OK(moeCheckpointReadWeights(dir.path.c_str(), s.layer, &o, &r));
  ExpectWeights(r, w, 1, 3);
  moeCheckpointWeightsDestroy(r);

  o.expert_begin = 4;
  o.expert_count = -1;
  EXPECT_EQ(moeCheckpointReadWeights(dir.path.c_str(), s.layer, &o, &r), moeErrorIo);
  EXPECT_EQ(r, nullptr);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find(ShardName(2, 3)), std::string::npos)
      << moeGetLastErrorMessage();
}

TEST(Io, ExpertRangeOfStackedTensors) {
  Spec s;
  s.family = Family::GptOss;
  s.scheme = Scheme::GptOss;
  TempDir dir;
  Weights w = RandomWeights(s, 5);
  WriteCheckpoint(dir.path, s, w);
  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  o.expert_begin = 5;
  o.expert_count = 2;
  moeCheckpointWeights_t *r = nullptr;
  IO_ASSERT_OK(moeCheckpointReadWeights(dir.path.c_str(), s.layer, &o, &r));
  ExpectWeights(r, w, 5, 2);
  moeCheckpointWeightsDestroy(r);
}

TEST(Io, BadExpertRangeIsInvalidArgument) {
  Spec s;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 1));
  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  o.expert_begin = s.E;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, &o, &cfg), moeErrorInvalidArgument);
  o.expert_begin = 2;
  o.expert_count = s.E - 1;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, &o, &cfg), moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("expert_count"), std::string::npos);
  o.expert_count = 0;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, &o, &cfg), moeErrorInvalidArgument);
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, nullptr),
            moeErrorInvalidArgument);
  EXPECT_EQ(moeCheckpointConfig(nullptr, s.layer, nullptr, &cfg), moeErrorInvalidArgument);
  moeCheckpointOptions_t bad = MOE_CHECKPOINT_OPTIONS_INIT;
  bad.size = 0;  // not started from the INIT macro
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, &bad, &cfg), moeErrorInvalidArgument);
  bad = MOE_CHECKPOINT_OPTIONS_INIT;
  bad.dtype_override = 1;
  bad.dtype = (moeDtype_t)7;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, &bad, &cfg), moeErrorInvalidArgument);
  EXPECT_EQ(moeCheckpointWeightsDestroy(nullptr), moeSuccess);
}

TEST(Io, LayerIndexOutOfRange) {
  Spec s;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 1));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.num_layers, nullptr, &cfg),
            moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("num_hidden_layers"), std::string::npos);
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), -1, nullptr, &cfg), moeErrorInvalidArgument);
}

}  // namespace

namespace {

// DeepSeek-V2-Lite routes with topk_method "greedy": softmax top-k without groups.
TEST(Io, DeepSeekV2LiteGreedy) {
  Spec s;
  s.family = Family::DeepSeekV2;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 6));
  auto keys = ConfigKeys(s);
  keys["topk_method"] = "\"greedy\"";
  keys.erase("n_group");
  keys.erase("topk_group");
  keys["routed_scaling_factor"] = "1.0";
  WriteFile(dir / "config.json", ConfigJson(keys));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  IO_ASSERT_OK(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg));
  EXPECT_EQ(cfg.routing, moeRoutingSoftmaxTopK);
  EXPECT_EQ(cfg.n_group, 1);
  EXPECT_EQ(cfg.norm_topk_prob, 0);
  EXPECT_EQ(cfg.num_shared_experts, 1);
  EXPECT_EQ(cfg.shared_intermediate, 2 * s.I);
  keys["topk_method"] = "\"noaux_tc\"";  // V3's method with V2's softmax: refused by name
  WriteFile(dir / "config.json", ConfigJson(keys));
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg), moeErrorNotSupported);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("noaux_tc"), std::string::npos);
}

}  // namespace
