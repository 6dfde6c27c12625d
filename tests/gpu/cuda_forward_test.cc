// The whole CUDA forward against the CPU backend's, CUDA graph capture and replay on new inputs,
// bitwise determinism, and the selection-bias update.
#include <cstdint>
#include <vector>

#include "common/test_util.h"

#if defined(MOE_WITH_CUDA)
#include "gpu/gpu_pair.h"

namespace {

using moe_gpu_test::DevBuf;
using moe_gpu_test::LayerPair;

struct ForwardCase {
  const char *name;
  moeRouting_t routing;
  int64_t H, I;
  int32_t E, k, n_group, topk_group, shared, heads;
  moeActivation_t act;
  int32_t expert_bias, norm;
  float scale, capacity_factor;
  bool router_bias;
};

moeLayerConfig_t ForwardConfig(const ForwardCase &c, moeDtype_t dt) {
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  cfg.hidden = c.H;
  cfg.intermediate = c.I;
  cfg.num_experts = c.E;
  cfg.top_k = c.k;
  cfg.routing = c.routing;
  cfg.n_group = c.n_group;
  cfg.topk_group = c.topk_group;
  cfg.num_shared_experts = c.shared;
  cfg.num_heads = c.heads;
  cfg.activation = c.act;
  cfg.expert_bias = c.expert_bias;
  cfg.norm_topk_prob = c.norm;
  cfg.routed_scaling_factor = c.scale;
  cfg.capacity_factor = c.capacity_factor;
  cfg.dtype = dt;
  return cfg;
}

const ForwardCase kForwardCases[] = {
    {"mixtral", moeRoutingTopKSoftmax, 64, 128, 8, 2, 1, 1, 0, 1, moeActivationSwiGLU, 0, 0, 1.0f, 0.0f, false},
    {"odd_72_40", moeRoutingTopKSoftmax, 72, 40, 8, 8, 1, 1, 0, 1, moeActivationSwiGLU, 0, 0, 1.0f, 0.0f, false},
    {"odd_13_7", moeRoutingSoftmaxTopK, 13, 7, 8, 3, 1, 1, 1, 1, moeActivationSwiGLU, 0, 1, 1.0f, 0.0f, false},
    {"qwen3", moeRoutingSoftmaxTopK, 64, 32, 64, 8, 1, 1, 0, 1, moeActivationSwiGLU, 0, 1, 1.0f, 0.0f, false},
    {"dsv3", moeRoutingSigmoidGroupTopK, 64, 32, 256, 8, 8, 4, 1, 1, moeActivationSwiGLU, 0, 1, 2.5f, 0.0f, false},
    {"dsv2", moeRoutingSoftmaxGroupTopK, 64, 32, 64, 6, 8, 3, 2, 1, moeActivationSwiGLU, 0, 0, 16.0f, 0.0f, false},
    {"gpt_oss", moeRoutingTopKSoftmax, 96, 96, 32, 4, 1, 1, 0, 1, moeActivationSwiGLUClamped, 1, 0, 1.0f, 0.0f, true},
    {"llama4", moeRoutingSigmoidTop1InputScale, 64, 64, 16, 1, 1, 1, 1, 1, moeActivationSwiGLU, 0, 0, 1.0f, 0.0f, false},
    {"gelu", moeRoutingSoftmaxTopK, 48, 64, 16, 2, 1, 1, 0, 1, moeActivationGELU, 1, 0, 1.0f, 0.0f, false},
    {"relu_sq", moeRoutingSoftmaxTopK, 64, 64, 8, 2, 1, 1, 0, 1, moeActivationSquaredReLU, 0, 0, 1.0f, 0.0f, false},
    {"top_p", moeRoutingTopP, 64, 32, 16, 4, 1, 1, 0, 1, moeActivationSwiGLU, 0, 0, 1.0f, 0.0f, false},
    {"expert_choice", moeRoutingExpertChoice, 64, 32, 8, 8, 1, 1, 0, 1, moeActivationSwiGLU, 0, 0, 1.0f, 2.0f, false},
    {"dense", moeRoutingDense, 32, 16, 4, 4, 1, 1, 0, 1, moeActivationReLU, 0, 0, 1.0f, 0.0f, false},
    {"capacity", moeRoutingTopKSoftmax, 64, 32, 8, 2, 1, 1, 0, 1, moeActivationSwiGLU, 0, 0, 1.0f, 1.0f, false},
    {"mh_moe", moeRoutingSoftmaxTopK, 64, 32, 8, 2, 1, 1, 1, 2, moeActivationSwiGLU, 0, 1, 1.0f, 0.0f, false},
};

// Runs forward on both backends; GPU y poisoned first. Returns the GPU y as fp32.
std::vector<float> ForwardBoth(LayerPair &L, const ForwardCase &c, moeDtype_t dt, int64_t T,
                               uint64_t seed, std::vector<float> *cpu_y) {
  const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, c.H, dt, seed), dt);
  std::vector<uint8_t> yc(xb.size());
  EXPECT_EQ(moeLayerForward(L.cpu, T, xb.data(), yc.data(), nullptr, nullptr, 0, nullptr), moeSuccess)
      << moeGetLastErrorMessage();
  *cpu_y = moe_test::FromBytes(yc.data(), T * c.H, dt);
  DevBuf dx(xb.size()), dy(xb.size());
  dx.Put(xb.data(), xb.size());
  EXPECT_EQ(moeLayerForward(L.gpu, T, dx.get(), dy.get(), nullptr, nullptr, 0, nullptr), moeSuccess)
      << moeGetLastErrorMessage();
  const auto yb = dy.Bytes();
  return moe_test::FromBytes(yb.data(), T * c.H, dt);
}

class CudaForward : public ::testing::TestWithParam<std::tuple<ForwardCase, moeDtype_t>> {};

TEST_P(CudaForward, MatchesCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const ForwardCase c = std::get<0>(GetParam());
  const moeDtype_t dt = std::get<1>(GetParam());
  LayerPair L(ForwardConfig(c, dt), 31, c.router_bias);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  for (int64_t T : {1, 8, 97, 512}) {  // 1, 8: the skinny kernel takes every group
    SCOPED_TRACE("T=" + std::to_string(T));
    std::vector<float> ref;
    const auto got = ForwardBoth(L, c, dt, T, 40 + T, &ref);
    EXPECT_LE(moe_test::RelError(got, moe_gpu_test::ToDoubleVec(ref)), moe_test::Tolerance(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, CudaForward,
    ::testing::Combine(::testing::ValuesIn(kForwardCases), ::testing::Values(moeFloat32, moeBFloat16, moeFloat16)),
    [](const ::testing::TestParamInfo<std::tuple<ForwardCase, moeDtype_t>> &i) {
      const moeDtype_t d = std::get<1>(i.param);
      return std::string(std::get<0>(i.param).name) + (d == moeFloat32 ? "_f32" : d == moeBFloat16 ? "_bf16" : "_f16");
    });

TEST(CudaForward, LargeBatchBf16) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const ForwardCase c = {"big", moeRoutingSigmoidGroupTopK, 256, 128, 64, 6, 8, 3, 1, 1,
                         moeActivationSwiGLU, 0, 1, 2.5f, 0.0f, false};
  LayerPair L(ForwardConfig(c, moeBFloat16), 51);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  std::vector<float> ref;
  const auto got = ForwardBoth(L, c, moeBFloat16, 4096, 52, &ref);
  EXPECT_LE(moe_test::RelError(got, moe_gpu_test::ToDoubleVec(ref)), 1e-2);
}

// Capture forward in a CUDA graph with a caller workspace, replay it on new contents of x, and
// compare each replay with the CPU; then bitwise determinism across replays.
TEST(CudaForward, GraphCaptureReplayAndDeterminism) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const ForwardCase c = kForwardCases[4];  // DeepSeek-V3-like: groups, shared expert
  const moeDtype_t dt = moeBFloat16;
  LayerPair L(ForwardConfig(c, dt), 61);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  const int64_t T = 300;
  size_t ws_bytes = 0;
  MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.gpu, T, &ws_bytes));
  DevBuf ws(ws_bytes), dx(T * c.H * 2), dy(T * c.H * 2);
  cudaStream_t s;
  CUDA_ASSERT_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph;
  CUDA_ASSERT_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  const moeStatus_t st = moeLayerForward(L.gpu, T, dx.get(), dy.get(), nullptr, ws.get(), ws_bytes, s);
  CUDA_ASSERT_OK(cudaStreamEndCapture(s, &graph));
  ASSERT_EQ(st, moeSuccess) << moeGetLastErrorMessage();
  cudaGraphExec_t exec;
  CUDA_ASSERT_OK(cudaGraphInstantiate(&exec, graph, 0));
  std::vector<uint8_t> first;
  for (uint64_t seed : {71, 72, 73}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, c.H, dt, seed), dt);
    dx.Put(xb.data(), dx.size());  // xb has one spare byte (ToBytes), dx exactly T * H
    dy.Poison();
    CUDA_ASSERT_OK(cudaGraphLaunch(exec, s));
    CUDA_ASSERT_OK(cudaStreamSynchronize(s));
    const auto yb = dy.Bytes();
    std::vector<uint8_t> yc(xb.size());
    MOE_ASSERT_OK(moeLayerForward(L.cpu, T, xb.data(), yc.data(), nullptr, nullptr, 0, nullptr));
    EXPECT_LE(moe_test::RelError(moe_test::FromBytes(yb.data(), T * c.H, dt),
                                 moe_gpu_test::ToDoubleVec(moe_test::FromBytes(yc.data(), T * c.H, dt))),
              1e-2);
    if (seed == 71) first = yb;
  }
  // Same input again: bitwise the same output, by graph replay and by a plain call.
  const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, c.H, dt, 71), dt);
  dx.Put(xb.data(), dx.size());
  for (int rep = 0; rep < 3; ++rep) {
    dy.Poison();
    CUDA_ASSERT_OK(cudaGraphLaunch(exec, s));
    CUDA_ASSERT_OK(cudaStreamSynchronize(s));
    EXPECT_TRUE(dy.Bytes() == first) << "replay " << rep << " differs bitwise";
  }
  dy.Poison();
  MOE_ASSERT_OK(moeLayerForward(L.gpu, T, dx.get(), dy.get(), nullptr, ws.get(), ws_bytes, s));
  CUDA_ASSERT_OK(cudaStreamSynchronize(s));
  EXPECT_TRUE(dy.Bytes() == first) << "direct call differs bitwise from the graph";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

// A context whose stream is cudaStreamNonBlocking: not ordered against the legacy stream, so a
// weight upload or a kernel that slipped onto the legacy stream races with the context's work
// (router_bias: zeroed on the context stream, then uploaded). gpt-oss-like layer: router bias,
// expert biases, clamped SwiGLU; forward with stream NULL (= the context's stream).
TEST(CudaForward, NonBlockingContextStreamMatchesCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const ForwardCase c = kForwardCases[6];
  const moeDtype_t dt = moeBFloat16;
  const moeLayerConfig_t cfg = ForwardConfig(c, dt);
  cudaStream_t s;
  CUDA_ASSERT_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t cpu_ctx = nullptr, gpu_ctx = nullptr;
  MOE_ASSERT_OK(moeContextCreate(&cpu_ctx, &cc));
  cc.backend = moeBackendCuda;
  cc.stream = s;
  MOE_ASSERT_OK(moeContextCreate(&gpu_ctx, &cc));
  moeLayer_t cpu = nullptr, gpu = nullptr;
  MOE_EXPECT_OK(moeLayerCreate(&cpu, cpu_ctx, &cfg));
  MOE_EXPECT_OK(moeLayerCreate(&gpu, gpu_ctx, &cfg));
  if (cpu && gpu) {
    const moe_test::HostLayer w = moe_test::MakeRandomLayer(cfg, 111, /*with_router_bias=*/true);
    MOE_EXPECT_OK(moe_test::UploadLayer(cpu, w));
    MOE_EXPECT_OK(moe_test::UploadLayer(gpu, w));
    const int64_t T = 257;
    const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, c.H, dt, 112), dt);
    std::vector<uint8_t> yc(xb.size());
    MOE_EXPECT_OK(moeLayerForward(cpu, T, xb.data(), yc.data(), nullptr, nullptr, 0, nullptr));
    DevBuf dx(xb.size()), dy(xb.size());
    dx.Put(xb.data(), xb.size());
    MOE_EXPECT_OK(moeLayerForward(gpu, T, dx.get(), dy.get(), nullptr, nullptr, 0, nullptr));
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    const auto yb = dy.Bytes();
    EXPECT_LE(moe_test::RelError(moe_test::FromBytes(yb.data(), T * c.H, dt),
                                 moe_gpu_test::ToDoubleVec(moe_test::FromBytes(yc.data(), T * c.H, dt))),
              moe_test::Tolerance(dt));
  }
  moeLayerDestroy(cpu);
  moeLayerDestroy(gpu);
  moeContextDestroy(cpu_ctx);
  moeContextDestroy(gpu_ctx);
  cudaStreamDestroy(s);
}

// Dense gating's forward also returns every expert's output [E, T, H].
TEST(CudaForward, DenseExpertOutputsMatchCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const ForwardCase c = kForwardCases[12];
  for (moeDtype_t dt : {moeFloat32, moeBFloat16}) {
    LayerPair L(ForwardConfig(c, dt), 101);
    ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
    const int64_t T = 77;
    const size_t es = dt == moeFloat32 ? 4 : 2;
    const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, c.H, dt, 102), dt);
    std::vector<uint8_t> yc(T * c.H * es), eoc(c.E * T * c.H * es);
    MOE_ASSERT_OK(moeLayerForwardDense(L.cpu, T, xb.data(), yc.data(), eoc.data(), nullptr, 0, nullptr));
    DevBuf dx(xb.size()), dy(yc.size()), deo(eoc.size());
    dx.Put(xb.data(), xb.size());
    MOE_ASSERT_OK(moeLayerForwardDense(L.gpu, T, dx.get(), dy.get(), deo.get(), nullptr, 0, nullptr));
    const auto yg = dy.Bytes(), eog = deo.Bytes();
    const double tol = moe_test::Tolerance(dt);
    EXPECT_LE(moe_test::RelError(moe_test::FromBytes(yg.data(), T * c.H, dt),
                                 moe_gpu_test::ToDoubleVec(moe_test::FromBytes(yc.data(), T * c.H, dt))), tol);
    EXPECT_LE(moe_test::RelError(moe_test::FromBytes(eog.data(), c.E * T * c.H, dt),
                                 moe_gpu_test::ToDoubleVec(moe_test::FromBytes(eoc.data(), c.E * T * c.H, dt))), tol);
  }
}

TEST(CudaForward, UpdateSelectionBiasMatchesCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const ForwardCase c = kForwardCases[4];
  LayerPair L(ForwardConfig(c, moeFloat32), 81);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  std::vector<int64_t> counts(c.E);
  for (int32_t e = 0; e < c.E; ++e) counts[e] = (e * 37) % 11;  // mean 5-ish; some equal to it
  MOE_ASSERT_OK(moeLayerUpdateSelectionBias(L.cpu, counts.data(), 0.25f, nullptr));
  DevBuf dc(counts.size() * 8);
  dc.Put(counts.data(), counts.size() * 8);
  MOE_ASSERT_OK(moeLayerUpdateSelectionBias(L.gpu, dc.as<int64_t>(), 0.25f, nullptr));
  CUDA_ASSERT_OK(cudaDeviceSynchronize());
  // The bias only shows through routing: route the same tokens on both.
  const int64_t T = 256;
  const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, c.H, moeFloat32, 82), moeFloat32);
  std::vector<int32_t> ids(T * c.k);
  std::vector<float> w(T * c.k);
  MOE_ASSERT_OK(moeLayerRoute(L.cpu, T, xb.data(), ids.data(), w.data(), nullptr, nullptr, 0, nullptr));
  DevBuf dx(xb.size()), dids(ids.size() * 4), dw(w.size() * 4);
  dx.Put(xb.data(), xb.size());
  MOE_ASSERT_OK(moeLayerRoute(L.gpu, T, dx.get(), dids.as<int32_t>(), dw.as<float>(), nullptr, nullptr, 0, nullptr));
  EXPECT_TRUE(moe_gpu_test::SameRoutingSets(dids.Get<int32_t>(T * c.k), dw.Get<float>(T * c.k), ids, w, T,
                                            c.k, c.E));
}

}  // namespace

#else
TEST(CudaForward, NotBuilt) { GTEST_SKIP() << "built without CUDA"; }
#endif
