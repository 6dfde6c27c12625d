// CUDA stages against the CPU backend's stages on the same inputs: route (every family, groups,
// capacity, expert choice, statistics), permute (including T * K * H > 2^31), experts.
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/test_util.h"

#if defined(MOE_WITH_CUDA)
#include "gpu/gpu_pair.h"

namespace {

using moe_gpu_test::DevBuf;
using moe_gpu_test::LayerPair;

struct RouteCase {
  const char *name;
  moeRouting_t routing;
  int32_t E, k, n_group, topk_group;
  int64_t H;
  int32_t norm;
  float scale, capacity_factor;
  moeDropPolicy_t policy;
  bool router_bias;
  moeDtype_t dtype;
};

moeLayerConfig_t RouteConfig(const RouteCase &c) {
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  cfg.hidden = c.H;
  cfg.intermediate = 8;
  cfg.num_experts = c.E;
  cfg.top_k = c.k;
  cfg.routing = c.routing;
  cfg.n_group = c.n_group;
  cfg.topk_group = c.topk_group;
  cfg.norm_topk_prob = c.norm;
  cfg.routed_scaling_factor = c.scale;
  cfg.capacity_factor = c.capacity_factor;
  cfg.drop_policy = c.policy;
  cfg.dtype = c.dtype;
  return cfg;
}

// Routes T tokens on both backends (GPU outputs poisoned first) and compares ids, weights and
// every statistic.
void CheckRoute(const RouteCase &c, int64_t T, uint64_t seed) {
  SCOPED_TRACE(std::string(c.name) + " T=" + std::to_string(T));
  const moeLayerConfig_t cfg = RouteConfig(c);
  LayerPair L(cfg, seed, c.router_bias);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  const int32_t K = L.K(), E = c.E;
  const std::vector<float> x = moe_test::RandomTokens(T, c.H, c.dtype, seed + 1);
  const std::vector<uint8_t> xb = moe_test::ToBytes(x, c.dtype);

  std::vector<int32_t> ids_c(T * K);
  std::vector<float> w_c(T * K);
  std::vector<int64_t> cnt_c(E), drop_c(E);
  std::vector<float> pm_c(E), sc_c(moeStatScalarCount);
  moeRouterStats_t st_c = MOE_ROUTER_STATS_INIT;
  st_c.expert_counts = cnt_c.data();
  st_c.dropped_counts = drop_c.data();
  st_c.expert_prob_mean = pm_c.data();
  st_c.scalars = sc_c.data();
  MOE_ASSERT_OK(moeLayerRoute(L.cpu, T, xb.data(), ids_c.data(), w_c.data(), &st_c, nullptr, 0, nullptr));

  DevBuf dx(xb.size()), dids(T * K * 4), dw(T * K * 4), dcnt(E * 8), ddrop(E * 8), dpm(E * 4),
      dsc(moeStatScalarCount * 4);
  dx.Put(xb.data(), xb.size());
  moeRouterStats_t st_g = MOE_ROUTER_STATS_INIT;
  st_g.expert_counts = dcnt.as<int64_t>();
  st_g.dropped_counts = ddrop.as<int64_t>();
  st_g.expert_prob_mean = dpm.as<float>();
  st_g.scalars = dsc.as<float>();
  MOE_ASSERT_OK(moeLayerRoute(L.gpu, T, dx.get(), dids.as<int32_t>(), dw.as<float>(), &st_g, nullptr,
                              0, nullptr));
  CUDA_ASSERT_OK(cudaDeviceSynchronize());
  const auto ids_g = dids.Get<int32_t>(T * K);
  const auto w_g = dw.Get<float>(T * K);
  EXPECT_TRUE(moe_gpu_test::SameRoutingSets(ids_g, w_g, ids_c, w_c, T, K, E,
                                            moe_gpu_test::EmulatedDevice() ? 0.0 : 1e-5));
  EXPECT_EQ(dcnt.Get<int64_t>(E), cnt_c);
  EXPECT_EQ(ddrop.Get<int64_t>(E), drop_c);
  const auto pm_g = dpm.Get<float>(E);
  for (int32_t e = 0; e < E; ++e) EXPECT_NEAR(pm_g[e], pm_c[e], 1e-5 + 1e-5 * std::fabs(pm_c[e])) << "P_" << e;
  const auto sc_g = dsc.Get<float>(moeStatScalarCount);
  for (int i = 0; i < moeStatScalarCount; ++i)
    EXPECT_NEAR(sc_g[i], sc_c[i], 1e-4 * std::max(1.0f, std::fabs(sc_c[i]))) << "scalar " << i;
}

const RouteCase kRouteCases[] = {
    {"mixtral", moeRoutingTopKSoftmax, 8, 2, 1, 1, 64, 0, 1.0f, 0.0f, moeDropByPosition, false, moeBFloat16},
    {"k_eq_E", moeRoutingTopKSoftmax, 8, 8, 1, 1, 72, 0, 1.0f, 0.0f, moeDropByPosition, false, moeFloat32},
    {"gpt_oss", moeRoutingTopKSoftmax, 32, 4, 1, 1, 40, 0, 1.0f, 0.0f, moeDropByPosition, true, moeBFloat16},
    {"qwen3", moeRoutingSoftmaxTopK, 128, 8, 1, 1, 64, 1, 1.0f, 0.0f, moeDropByPosition, false, moeBFloat16},
    {"olmoe", moeRoutingSoftmaxTopK, 64, 8, 1, 1, 13, 0, 1.0f, 0.0f, moeDropByPosition, false, moeFloat16},
    {"switch", moeRoutingSoftmaxTopK, 16, 1, 1, 1, 32, 0, 1.0f, 0.0f, moeDropByPosition, false, moeFloat32},
    {"e512", moeRoutingSoftmaxTopK, 512, 8, 1, 1, 64, 1, 1.0f, 0.0f, moeDropByPosition, false, moeBFloat16},
    {"dsv3", moeRoutingSigmoidGroupTopK, 256, 8, 8, 4, 64, 1, 2.5f, 0.0f, moeDropByPosition, false, moeBFloat16},
    {"dsv3_k_eq_E", moeRoutingSigmoidGroupTopK, 64, 64, 8, 8, 32, 1, 1.0f, 0.0f, moeDropByPosition, false, moeFloat32},
    {"dsv2", moeRoutingSoftmaxGroupTopK, 160, 6, 8, 3, 64, 0, 16.0f, 0.0f, moeDropByPosition, false, moeBFloat16},
    {"llama4", moeRoutingSigmoidTop1InputScale, 16, 1, 1, 1, 64, 0, 1.0f, 0.0f, moeDropByPosition, false, moeBFloat16},
    {"top_p", moeRoutingTopP, 64, 8, 1, 1, 64, 0, 1.0f, 0.0f, moeDropByPosition, false, moeFloat32},
    {"expert_choice", moeRoutingExpertChoice, 16, 16, 1, 1, 64, 0, 1.0f, 2.0f, moeDropByPosition, false, moeBFloat16},
    {"dense", moeRoutingDense, 8, 8, 1, 1, 64, 0, 1.0f, 0.0f, moeDropByPosition, false, moeFloat32},
    {"cap_position", moeRoutingTopKSoftmax, 8, 2, 1, 1, 64, 0, 1.0f, 1.0f, moeDropByPosition, false, moeBFloat16},
    {"cap_probs", moeRoutingSoftmaxTopK, 64, 8, 1, 1, 64, 1, 1.0f, 1.25f, moeDropByProbs, false, moeBFloat16},
};

class CudaRoute : public ::testing::TestWithParam<RouteCase> {};

TEST_P(CudaRoute, MatchesCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  for (int64_t T : {1, 97, 4096}) CheckRoute(GetParam(), T, 1000 + T);
}

INSTANTIATE_TEST_SUITE_P(Families, CudaRoute, ::testing::ValuesIn(kRouteCases),
                         [](const ::testing::TestParamInfo<RouteCase> &i) { return std::string(i.param.name); });

TEST(CudaRoute, LargeBatch) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  CheckRoute(kRouteCases[0], 70000, 7);
  CheckRoute(kRouteCases[7], 70000, 8);
}

// Random inputs never tie and never give NaN, so the tie rule (larger score, then the lower
// index) and the NaN rule (never wins, never out of range) of docs/ROUTING.md are checked on
// hand-made logits: an identity router over tokens with values in {-1, 0, 1}, duplicate tokens
// and an all-equal token, then NaN and -inf logits for experts 1 and 2 of every token through
// the router bias. Both backends compute the same fp32 scores, so they must pick the same sets.
std::vector<float> TiedTokens(int64_t T, int64_t H, uint64_t seed) {
  std::vector<float> x = moe_test::RandomTokens(T, H, moeFloat32, seed);
  for (auto &v : x) v = v > 0.5f ? 1.0f : (v < -0.5f ? -1.0f : 0.0f);
  for (int64_t i = 0; i < H; ++i) x[size_t(H + i)] = x[size_t(i)];  // token 1 = token 0
  for (int64_t i = 0; i < H; ++i) x[size_t(3 * H + i)] = 0.0f;       // token 3: all equal
  return x;
}

void CheckRouteOnTokens(LayerPair &L, const std::vector<float> &x, int64_t T, int32_t E) {
  SCOPED_TRACE("T=" + std::to_string(T));
  const int32_t K = L.K();
  const auto xb = moe_test::ToBytes(x, moeFloat32);
  std::vector<int32_t> ids_c(T * K);
  std::vector<float> w_c(T * K);
  MOE_ASSERT_OK(moeLayerRoute(L.cpu, T, xb.data(), ids_c.data(), w_c.data(), nullptr, nullptr, 0, nullptr));
  DevBuf dx(xb.size()), dids(T * K * 4), dw(T * K * 4);
  dx.Put(xb.data(), xb.size());
  MOE_ASSERT_OK(moeLayerRoute(L.gpu, T, dx.get(), dids.as<int32_t>(), dw.as<float>(), nullptr, nullptr,
                              0, nullptr));
  EXPECT_TRUE(moe_gpu_test::SameRoutingSets(dids.Get<int32_t>(T * K), dw.Get<float>(T * K), ids_c, w_c,
                                            T, K, E));
}

class CudaRouteTies : public ::testing::TestWithParam<moeRouting_t> {};

TEST_P(CudaRouteTies, SameAsCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const moeRouting_t r = GetParam();
  const moeLayerConfig_t cfg = moe_test::FamilyConfig(r, moeFloat32, 32, 8);
  const int32_t E = cfg.num_experts;
  LayerPair L(cfg, 5, /*router_bias=*/true);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  moe_test::SetIdentityRouter(&L.w);
  if (!L.w.selection_bias.empty()) L.w.selection_bias.assign(L.w.selection_bias.size(), 0.0f);
  L.w.router_bias.assign(size_t(E), 0.0f);
  MOE_ASSERT_OK(moe_test::UploadLayer(L.cpu, L.w));
  MOE_ASSERT_OK(moe_test::UploadLayer(L.gpu, L.w));
  // T * E below and above 16384: both router logits kernels.
  for (int64_t T : {24, 2500}) CheckRouteOnTokens(L, TiedTokens(T, cfg.hidden, 11 + T), T, E);
  // NaN / -inf scores, in the families whose weights stay finite when a NaN is never picked
  // (the softmax families spread one NaN logit over every probability of the token).
  if (r == moeRoutingTopKSoftmax || r == moeRoutingSigmoidGroupTopK ||
      r == moeRoutingSigmoidTop1InputScale) {
    SCOPED_TRACE("NaN and -inf logits");
    L.w.router_bias[1] = NAN;
    L.w.router_bias[2] = -INFINITY;
    MOE_ASSERT_OK(moe_test::UploadLayer(L.cpu, L.w));
    MOE_ASSERT_OK(moe_test::UploadLayer(L.gpu, L.w));
    for (int64_t T : {24, 2500}) CheckRouteOnTokens(L, TiedTokens(T, cfg.hidden, 31 + T), T, E);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, CudaRouteTies, ::testing::Range(moeRoutingTopKSoftmax, moeRoutingCount),
                         [](const ::testing::TestParamInfo<moeRouting_t> &i) {
                           return std::string(moe_test::RoutingName(i.param));
                         });

// Permute of hand-made ids on both backends: offsets, the sorted order and its inverse.
void CheckPermute(LayerPair &L, const std::vector<int32_t> &ids, int64_t T, int32_t E) {
  const int32_t K = L.K();
  std::vector<int64_t> off_c(E + 1), sp_c(T * K), pr_c(T * K);
  MOE_ASSERT_OK(moeLayerPermute(L.cpu, T, ids.data(), off_c.data(), sp_c.data(), pr_c.data(), nullptr, 0, nullptr));
  DevBuf dids(ids.size() * 4), doff((E + 1) * 8), dsp(T * K * 8), dpr(T * K * 8);
  dids.Put(ids.data(), ids.size() * 4);
  // -1 is a valid pair_rows value (0xFF poison would pass unwritten): poison with 0x7F.
  doff.Poison(0x7F);
  dsp.Poison(0x7F);
  dpr.Poison(0x7F);
  MOE_ASSERT_OK(moeLayerPermute(L.gpu, T, dids.as<int32_t>(), doff.as<int64_t>(), dsp.as<int64_t>(),
                                dpr.as<int64_t>(), nullptr, 0, nullptr));
  const auto off_g = doff.Get<int64_t>(E + 1);
  ASSERT_EQ(off_g, off_c);
  auto sp_g = dsp.Get<int64_t>(T * K);
  sp_g.resize(off_c[E]);
  sp_c.resize(off_c[E]);
  EXPECT_TRUE(sp_g == sp_c) << "sorted_pairs differ";
  EXPECT_TRUE(dpr.Get<int64_t>(T * K) == pr_c) << "pair_rows differ";
}

TEST(CudaPermute, PatternsMatchCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const int32_t E = 64, k = 4;
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  cfg.hidden = 16;
  cfg.intermediate = 8;
  cfg.num_experts = E;
  cfg.top_k = k;
  cfg.dtype = moeFloat32;
  LayerPair L(cfg, 3);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  for (int64_t T : {1, 97, 4096, 70000}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    std::vector<int32_t> ids(T * k);
    uint64_t s = 12345 + T;
    for (auto &v : ids) {  // experts 32..63 never used; some slots empty
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const uint32_t r = static_cast<uint32_t>(s >> 33);
      v = (r % 11 == 0) ? -1 : static_cast<int32_t>(r % 32);
    }
    CheckPermute(L, ids, T, E);
    std::vector<int32_t> one(T * k, 5);  // every selection on one expert
    CheckPermute(L, one, T, E);
  }
}

// T * K * H > 2^31: routing and permutation index math must be 64-bit.
TEST(CudaPermute, HugeRouteAndPermute) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const int64_t T = 70000, H = 4096;
  const int32_t E = 8, k = 8;
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  cfg.hidden = H;
  cfg.intermediate = 8;
  cfg.num_experts = E;
  cfg.top_k = k;
  cfg.dtype = moeBFloat16;
  LayerPair L(cfg, 5);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  ASSERT_GT(T * k * H, int64_t{1} << 31);
  const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, H, moeBFloat16, 6), moeBFloat16);
  std::vector<int32_t> ids_c(T * k);
  std::vector<float> w_c(T * k);
  MOE_ASSERT_OK(moeLayerRoute(L.cpu, T, xb.data(), ids_c.data(), w_c.data(), nullptr, nullptr, 0, nullptr));
  DevBuf dx(xb.size()), dids(T * k * 4), dw(T * k * 4);
  dx.Put(xb.data(), xb.size());
  MOE_ASSERT_OK(moeLayerRoute(L.gpu, T, dx.get(), dids.as<int32_t>(), dw.as<float>(), nullptr, nullptr, 0, nullptr));
  EXPECT_TRUE(moe_gpu_test::SameRoutingSets(dids.Get<int32_t>(T * k), dw.Get<float>(T * k), ids_c, w_c, T, k, E));
  CheckPermute(L, ids_c, T, E);
}

struct ExpertsCase {
  const char *name;
  int64_t H, I;
  int32_t E, k;
  moeActivation_t act;
  int32_t expert_bias;
  moeRouting_t routing;
  bool one_expert;  // every selection on expert 1 (the others get no rows)
  int64_t max_T = 1000;
};

const ExpertsCase kExpertsCases[] = {
    {"swiglu", 64, 128, 8, 2, moeActivationSwiGLU, 0, moeRoutingTopKSoftmax, false},
    {"odd_72_40", 72, 40, 8, 2, moeActivationSwiGLU, 0, moeRoutingTopKSoftmax, false},
    {"odd_13_7", 13, 7, 4, 2, moeActivationSwiGLU, 0, moeRoutingTopKSoftmax, false},
    {"gelu", 48, 136, 16, 4, moeActivationGELU, 0, moeRoutingSoftmaxTopK, false},
    {"relu", 40, 24, 8, 8, moeActivationReLU, 0, moeRoutingTopKSoftmax, false},
    {"sqrelu", 64, 64, 64, 2, moeActivationSquaredReLU, 0, moeRoutingTopKSoftmax, false},
    {"gpt_oss", 96, 96, 8, 4, moeActivationSwiGLUClamped, 1, moeRoutingTopKSoftmax, false},
    {"input_scale", 64, 32, 16, 1, moeActivationSwiGLU, 0, moeRoutingSigmoidTop1InputScale, false},
    {"one_expert", 64, 200, 8, 2, moeActivationSwiGLU, 1, moeRoutingTopKSoftmax, true},
    // K past the skinny kernel's 2048-element A tile, in both GEMMs, odd (scalar loads)
    {"k_tiles", 2100, 2061, 8, 2, moeActivationSwiGLU, 1, moeRoutingTopKSoftmax, false, 24},
    // K % 8 == 0 and K past the wgmma kernel's 5 x 64 stages (11 and 7 K tiles): its pipeline
    // wraps around, so the empty-stage barriers and both phase parities are exercised
    {"k_stages", 648, 392, 8, 2, moeActivationSwiGLU, 1, moeRoutingTopKSoftmax, false, 97},
};

class CudaExperts : public ::testing::TestWithParam<std::tuple<ExpertsCase, moeDtype_t>> {};

TEST_P(CudaExperts, MatchesCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  const ExpertsCase c = std::get<0>(GetParam());
  const moeDtype_t dt = std::get<1>(GetParam());
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  cfg.hidden = c.H;
  cfg.intermediate = c.I;
  cfg.num_experts = c.E;
  cfg.top_k = c.k;
  cfg.activation = c.act;
  cfg.expert_bias = c.expert_bias;
  cfg.routing = c.routing;
  cfg.dtype = dt;
  LayerPair L(cfg, 11);
  ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
  const int32_t K = L.K(), E = c.E;
  const size_t es = dt == moeFloat32 ? 4 : 2;
  // T = 1, 8: every group skinny; 24: skinny and tiled groups in one launch; 97, 1000: tiled
  for (int64_t T : {1, 8, 24, 97, 1000}) {
    if (T > c.max_T) continue;
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto x = moe_test::RandomTokens(T, c.H, dt, 20 + T);
    const auto xb = moe_test::ToBytes(x, dt);
    std::vector<int32_t> ids(T * K);
    std::vector<float> w(T * K);
    MOE_ASSERT_OK(moeLayerRoute(L.cpu, T, xb.data(), ids.data(), w.data(), nullptr, nullptr, 0, nullptr));
    if (c.one_expert)
      for (int64_t t = 0; t < T; ++t)
        for (int32_t j = 0; j < K; ++j) ids[t * K + j] = j == 0 ? 1 : -1;
    std::vector<int64_t> off(E + 1), sp(T * K), pr(T * K);
    MOE_ASSERT_OK(moeLayerPermute(L.cpu, T, ids.data(), off.data(), sp.data(), pr.data(), nullptr, 0, nullptr));
    const float *scales = c.routing == moeRoutingSigmoidTop1InputScale ? w.data() : nullptr;
    std::vector<uint8_t> out_c(T * K * c.H * es);
    MOE_ASSERT_OK(moeLayerExperts(L.cpu, T, xb.data(), scales, off.data(), sp.data(), out_c.data(),
                                  nullptr, 0, nullptr));
    DevBuf dx(xb.size()), dw(w.size() * 4), doff(off.size() * 8), dsp(sp.size() * 8), dout(out_c.size());
    dx.Put(xb.data(), xb.size());
    dw.Put(w.data(), w.size() * 4);
    doff.Put(off.data(), off.size() * 8);
    dsp.Put(sp.data(), sp.size() * 8);
    MOE_ASSERT_OK(moeLayerExperts(L.gpu, T, dx.get(), scales ? dw.as<float>() : nullptr, doff.as<int64_t>(),
                                  dsp.as<int64_t>(), dout.get(), nullptr, 0, nullptr));
    const auto out_g = dout.Bytes();
    const size_t n = static_cast<size_t>(off[E]) * c.H;  // rows past offsets[E] are unspecified
    const auto got = moe_test::FromBytes(out_g.data(), n, dt);
    const auto ref = moe_test::FromBytes(out_c.data(), n, dt);
    EXPECT_LE(moe_test::RelError(got, moe_gpu_test::ToDoubleVec(ref)), moe_test::Tolerance(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaExperts,
    ::testing::Combine(::testing::ValuesIn(kExpertsCases), ::testing::Values(moeFloat32, moeBFloat16, moeFloat16)),
    [](const ::testing::TestParamInfo<std::tuple<ExpertsCase, moeDtype_t>> &i) {
      const moeDtype_t d = std::get<1>(i.param);
      return std::string(std::get<0>(i.param).name) + (d == moeFloat32 ? "_f32" : d == moeBFloat16 ? "_bf16" : "_f16");
    });

// Combine of the same expert outputs: the CUDA kernel does the CPU's arithmetic (multiply, then
// add, slot order, shared last), so y must be bitwise equal.
TEST(CudaCombine, BitwiseEqualToCpu) {
  if (!moe_test::HasGpu()) GTEST_SKIP() << "no GPU";
  for (moeDtype_t dt : {moeFloat32, moeBFloat16, moeFloat16}) {
    for (int64_t H : {13, 64, 72}) {
      SCOPED_TRACE(std::to_string(static_cast<int>(dt)) + " H=" + std::to_string(H));
      moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
      cfg.hidden = H;
      cfg.intermediate = 8;
      cfg.num_experts = 16;
      cfg.top_k = 4;
      cfg.num_shared_experts = 1;
      cfg.dtype = dt;
      LayerPair L(cfg, 91);
      ASSERT_EQ(L.status, moeSuccess) << moeGetLastErrorMessage();
      const int64_t T = 333;
      const int32_t K = 4;
      const auto xb = moe_test::ToBytes(moe_test::RandomTokens(T, H, dt, 92), dt);
      std::vector<int32_t> ids(T * K);
      std::vector<float> w(T * K);
      MOE_ASSERT_OK(moeLayerRoute(L.cpu, T, xb.data(), ids.data(), w.data(), nullptr, nullptr, 0, nullptr));
      for (int64_t t = 0; t < T; t += 7) ids[t * K + 1] = -1, w[t * K + 1] = 0.f;  // holes
      std::vector<int64_t> off(17), sp(T * K), pr(T * K);
      MOE_ASSERT_OK(moeLayerPermute(L.cpu, T, ids.data(), off.data(), sp.data(), pr.data(), nullptr, 0, nullptr));
      const auto eo = moe_test::ToBytes(moe_test::RandomTokens(T * K, H, dt, 93), dt);
      const auto so = moe_test::ToBytes(moe_test::RandomTokens(T, H, dt, 94), dt);
      std::vector<uint8_t> yc(xb.size());
      MOE_ASSERT_OK(moeLayerCombine(L.cpu, T, eo.data(), pr.data(), w.data(), so.data(), yc.data(), nullptr));
      DevBuf deo(eo.size()), dpr(pr.size() * 8), dw(w.size() * 4), dso(so.size()), dy(yc.size());
      deo.Put(eo.data(), eo.size());
      dpr.Put(pr.data(), pr.size() * 8);
      dw.Put(w.data(), w.size() * 4);
      dso.Put(so.data(), so.size());
      MOE_ASSERT_OK(moeLayerCombine(L.gpu, T, deo.get(), dpr.as<int64_t>(), dw.as<float>(), dso.get(), dy.get(), nullptr));
      const size_t n = static_cast<size_t>(T * H) * (dt == moeFloat32 ? 4 : 2);  // ToBytes adds 1
      auto yg = dy.Bytes();
      yg.resize(n);
      yc.resize(n);
      EXPECT_TRUE(yg == yc);
    }
  }
}

}  // namespace

#else
TEST(CudaStages, NotBuilt) { GTEST_SKIP() << "built without CUDA"; }
#endif
