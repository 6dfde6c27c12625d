// A layer created from each family's checkpoint computes what the naive reference computes on
// the weights the test wrote: naming, layout, transposes, interleaving and routing all agree.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ckpt_writer.h"
#include "common/test_util.h"
#include "core/dtype.h"
#include "moe/moe.h"
#include "moe/moe_io.h"
#include "naive_moe.h"

using namespace moe_io_test;

#define IO_ASSERT_OK MOE_ASSERT_OK

namespace {


class Forward : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { IO_ASSERT_OK(moeContextCreate(&ctx, &ctx_cfg())); }
  void TearDown() override { moeContextDestroy(ctx); }
  static const moeContextConfig_t &ctx_cfg() {
    static moeContextConfig_t c = [] {
      moeContextConfig_t x = MOE_CONTEXT_CONFIG_INIT;
      x.backend = moeBackendCpu;
      return x;
    }();
    return c;
  }
  moeContext_t ctx = nullptr;
};

// Runs T tokens through layer; returns y as fp32.
std::vector<float> RunLayer(moeLayer_t layer, const std::vector<float> &x, int64_t T, int64_t H,
                            moeDtype_t dt) {
  const size_t es = moe_dtype_size(dt);
  std::vector<uint8_t> xb((size_t)(T * H) * es), yb((size_t)(T * H) * es);
  moe_test::Poison(yb.data(), yb.size());
  for (size_t i = 0; i < x.size(); ++i) moe_store_f32(xb.data(), dt, i, x[i]);
  moeStatus_t st = moeLayerForward(layer, T, xb.data(), yb.data(), nullptr, nullptr, 0, nullptr);
  EXPECT_EQ(st, moeSuccess) << moeGetLastErrorMessage();
  std::vector<float> y((size_t)(T * H));
  for (size_t i = 0; i < y.size(); ++i) y[i] = moe_load_f32(yb.data(), dt, i);
  return y;
}

// The same weights as the shared helpers' HostLayer (same layout), for moe_test::RunCpuForward.
moe_test::HostLayer ToHostLayer(const Weights &w, const moeLayerConfig_t &cfg) {
  moe_test::HostLayer h;
  h.cfg = cfg;
  h.router_weight = w.router;
  h.router_bias = w.router_bias;
  h.selection_bias = w.selection_bias;
  h.gate_up = w.gate_up;
  h.down = w.down;
  h.gate_up_bias = w.gate_up_bias;
  h.down_bias = w.down_bias;
  h.shared_gate_up = w.shared_gate_up;
  h.shared_down = w.shared_down;
  return h;
}

TEST_P(Forward, MatchesNaiveReference) {
  const Case &c = GetParam();
  const Spec s = SpecOf(c);
  TempDir dir;
  Weights w = RandomWeights(s, 2024);
  WriteCheckpoint(dir.path, s, w);

  moeLayer_t layer = nullptr;
  IO_ASSERT_OK(moeLayerCreateFromCheckpoint(&layer, ctx, dir.path.c_str(), s.layer, nullptr));
  ASSERT_NE(layer, nullptr);
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  IO_ASSERT_OK(moeLayerGetConfig(layer, &cfg));
  EXPECT_EQ(cfg.dtype, s.dtype);

  const int64_t T = 37;
  std::vector<float> x = moe_test::RandomTokens(T, s.H, s.dtype, 5);
  std::vector<double> ref((size_t)(T * s.H));
  moeNaiveLayer naive = w.Naive();
  naive.cfg = cfg;
  ASSERT_EQ(moe_naive_forward(&naive, T, x.data(), ref.data(), nullptr), 0);
  std::vector<float> y = RunLayer(layer, x, T, s.H, s.dtype);
  EXPECT_LE(moe_test::RelError(y, ref), moe_test::Tolerance(s.dtype));
  // Loading from the checkpoint builds exactly the layer that uploading the same weights through
  // the setters builds: bitwise the same output.
  std::vector<float> direct = moe_test::RunCpuForward(ToHostLayer(w, cfg), x, T);
  EXPECT_TRUE(moe_test::BitwiseEqual(y, direct));
  moeLayerDestroy(layer);
}

INSTANTIATE_TEST_SUITE_P(
    Io, Forward,
    ::testing::Values(
        Case{"MixtralF32", Family::Mixtral, Scheme::PerExpert, moeFloat32, 1},
        Case{"MixtralBf16Sharded", Family::Mixtral, Scheme::PerExpert, moeBFloat16, 3},
        Case{"Qwen3MoeF32", Family::Qwen3Moe, Scheme::PerExpert, moeFloat32, 1},
        Case{"OlmoeBf16", Family::Olmoe, Scheme::PerExpert, moeBFloat16, 1},
        Case{"DeepSeekV3F32", Family::DeepSeekV3, Scheme::PerExpert, moeFloat32, 2},
        Case{"DeepSeekV2F32", Family::DeepSeekV2, Scheme::PerExpert, moeFloat32, 1},
        Case{"GptOssF32", Family::GptOss, Scheme::GptOss, moeFloat32, 1},
        Case{"GptOssBf16", Family::GptOss, Scheme::GptOss, moeBFloat16, 1},
        Case{"Qwen3MoeV5StackedF32", Family::Qwen3Moe, Scheme::StackedV5, moeFloat32, 1},
        Case{"MixtralV5StackedF16", Family::Mixtral, Scheme::StackedV5, moeFloat16, 1}),
    [](const ::testing::TestParamInfo<Case> &i) { return std::string(i.param.name); });

class ForwardErrors : public Forward {};

// A failure after the layer was created (a missing expert tensor) destroys it: layer stays NULL
// and ASan sees no leak.
TEST_F(ForwardErrors, FailureAfterCreateFreesTheLayer) {
  Spec s;
  s.dtype = moeFloat32;
  TempDir dir;
  Weights w = RandomWeights(s, 1);
  WriteCheckpoint(dir.path, s, w);
  std::vector<Tensor> t = LayerTensors(s, w);
  t.pop_back();  // the last expert's w2
  WriteFile(dir / "model.safetensors", Serialize(t));
  moeLayer_t layer = reinterpret_cast<moeLayer_t>(this);
  EXPECT_EQ(moeLayerCreateFromCheckpoint(&layer, ctx, dir.path.c_str(), s.layer, nullptr),
            moeErrorFormat);
  EXPECT_EQ(layer, nullptr);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("experts.7.w2.weight"), std::string::npos)
      << moeGetLastErrorMessage();
  EXPECT_EQ(moeLayerCreateFromCheckpoint(nullptr, ctx, dir.path.c_str(), s.layer, nullptr),
            moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerCreateFromCheckpoint(&layer, nullptr, dir.path.c_str(), s.layer, nullptr),
            moeErrorInvalidArgument);
}

// Overriding the dtype: a bf16 checkpoint in an f32 layer computes the same as in a bf16 one
// up to the bf16 activations.
TEST_F(ForwardErrors, DtypeOverrideCreatesAnF32Layer) {
  Spec s;
  TempDir dir;
  Weights w = RandomWeights(s, 3);
  WriteCheckpoint(dir.path, s, w);
  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  o.dtype_override = 1;
  o.dtype = moeFloat32;
  moeLayer_t layer = nullptr;
  IO_ASSERT_OK(moeLayerCreateFromCheckpoint(&layer, ctx, dir.path.c_str(), s.layer, &o));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  IO_ASSERT_OK(moeLayerGetConfig(layer, &cfg));
  EXPECT_EQ(cfg.dtype, moeFloat32);
  const int64_t T = 5;
  std::vector<float> x((size_t)(T * s.H), 0.5f);
  std::vector<double> ref((size_t)(T * s.H));
  moeNaiveLayer naive = w.Naive();
  naive.cfg = cfg;
  ASSERT_EQ(moe_naive_forward(&naive, T, x.data(), ref.data(), nullptr), 0);
  EXPECT_LE(moe_test::RelError(RunLayer(layer, x, T, s.H, moeFloat32), ref),
            moe_test::Tolerance(moeFloat32));
  moeLayerDestroy(layer);
}

}  // namespace

namespace {

// Expert parallelism: a range makes a local layer that holds only its experts.
TEST_F(ForwardErrors, ExpertRangeCreatesALocalLayer) {
  Spec s;
  s.dtype = moeFloat32;
  TempDir dir;
  Weights w = RandomWeights(s, 4);
  WriteCheckpoint(dir.path, s, w);
  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  o.expert_begin = 2;
  o.expert_count = 3;
  moeLayer_t layer = nullptr;
  IO_ASSERT_OK(moeLayerCreateFromCheckpoint(&layer, ctx, dir.path.c_str(), s.layer, &o));
  const size_t n = (size_t)(s.I * s.H);
  const float *g = w.gate_up.data(), *d = w.down.data();
  EXPECT_EQ(moeLayerSetExpertWeights(layer, 1, g, g + n, d, moeFloat32), moeErrorInvalidArgument)
      << "expert 1 is outside the local range [2, 5)";
  IO_ASSERT_OK(moeLayerSetExpertWeights(layer, 4, g, g + n, d, moeFloat32));
  moeLayerDestroy(layer);
}

}  // namespace

namespace {

// Loading into a layer the caller created: same output as creating it from the checkpoint.
TEST_F(ForwardErrors, LoadIntoACallersLayer) {
  Spec s;
  s.family = Family::GptOss;
  s.scheme = Scheme::GptOss;
  s.dtype = moeBFloat16;
  TempDir dir;
  Weights w = RandomWeights(s, 12);
  WriteCheckpoint(dir.path, s, w);
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  IO_ASSERT_OK(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg));
  cfg.dtype = moeFloat32;  // the caller's choice; the weights are converted
  moeLayer_t layer = nullptr;
  IO_ASSERT_OK(moeLayerCreate(&layer, ctx, &cfg));
  IO_ASSERT_OK(moeLayerLoadCheckpoint(layer, dir.path.c_str(), s.layer, nullptr));
  const int64_t T = 9;
  std::vector<float> x = moe_test::RandomTokens(T, s.H, moeFloat32, 8);
  std::vector<float> direct = moe_test::RunCpuForward(ToHostLayer(w, cfg), x, T);
  EXPECT_TRUE(moe_test::BitwiseEqual(RunLayer(layer, x, T, s.H, moeFloat32), direct));
  moeLayerDestroy(layer);

  moeLayerConfig_t other = cfg;
  other.top_k = 1;
  IO_ASSERT_OK(moeLayerCreate(&layer, ctx, &other));
  EXPECT_EQ(moeLayerLoadCheckpoint(layer, dir.path.c_str(), s.layer, nullptr),
            moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("top_k = 1"), std::string::npos)
      << moeGetLastErrorMessage();
  EXPECT_EQ(moeLayerLoadCheckpoint(nullptr, dir.path.c_str(), s.layer, nullptr),
            moeErrorInvalidArgument);
  moeLayerDestroy(layer);
}

// A local (expert-parallel) layer loads its own range by default and refuses experts it lacks.
TEST_F(ForwardErrors, LoadIntoALocalLayer) {
  Spec s;
  s.dtype = moeFloat32;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 13));
  moeCheckpointOptions_t o = MOE_CHECKPOINT_OPTIONS_INIT;
  o.expert_begin = 4;
  o.expert_count = 4;
  moeLayer_t layer = nullptr;
  IO_ASSERT_OK(moeLayerCreateFromCheckpoint(&layer, ctx, dir.path.c_str(), s.layer, &o));
  IO_ASSERT_OK(moeLayerLoadCheckpoint(layer, dir.path.c_str(), s.layer, nullptr));
  o.expert_begin = 3;
  o.expert_count = 2;
  EXPECT_EQ(moeLayerLoadCheckpoint(layer, dir.path.c_str(), s.layer, &o), moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("holds experts [4, 8)"), std::string::npos)
      << moeGetLastErrorMessage();
  moeLayerDestroy(layer);
}

}  // namespace
