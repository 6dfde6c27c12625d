// Invalid configurations and arguments: each is rejected with the documented status and a
// message that names the offending field (and, for ranges, carries its limit).
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "common/test_util.h"

using namespace moe_test;

namespace {

struct BadConfig {
  const char *name;
  std::function<void(moeLayerConfig_t &)> mutate;
  const char *field;  // must appear in the message
};

std::ostream &operator<<(std::ostream &os, const BadConfig &b) { return os << b.name; }

bool HasDigit(const std::string &s) {
  for (char ch : s)
    if (ch >= '0' && ch <= '9') return true;
  return false;
}

moeLayerConfig_t Good() { return MakeConfig(32, 16, 8, 2); }

const BadConfig kBad[] = {
    {"HiddenZero", [](moeLayerConfig_t &c) { c.hidden = 0; }, "hidden"},
    {"HiddenNegative", [](moeLayerConfig_t &c) { c.hidden = -4; }, "hidden"},
    {"HiddenTooLarge", [](moeLayerConfig_t &c) { c.hidden = (int64_t(1) << 20) + 1; }, "hidden"},
    {"IntermediateZero", [](moeLayerConfig_t &c) { c.intermediate = 0; }, "intermediate"},
    {"IntermediateTooLarge", [](moeLayerConfig_t &c) { c.intermediate = int64_t(1) << 40; }, "intermediate"},
    {"ExpertsZero", [](moeLayerConfig_t &c) { c.num_experts = 0; }, "num_experts"},
    {"ExpertsTooMany", [](moeLayerConfig_t &c) { c.num_experts = 4097; }, "num_experts"},
    {"TopKZero", [](moeLayerConfig_t &c) { c.top_k = 0; }, "top_k"},
    {"TopKAboveE", [](moeLayerConfig_t &c) { c.top_k = 9; }, "top_k"},
    {"TopPCapAboveE", [](moeLayerConfig_t &c) { c.routing = moeRoutingTopP, c.top_k = 9; }, "top_k"},
    {"UnknownDtype", [](moeLayerConfig_t &c) { c.dtype = static_cast<moeDtype_t>(7); }, "dtype"},
    {"NegativeDtype", [](moeLayerConfig_t &c) { c.dtype = static_cast<moeDtype_t>(-1); }, "dtype"},
    {"UnknownRouting", [](moeLayerConfig_t &c) { c.routing = static_cast<moeRouting_t>(99); }, "routing"},
    {"RoutingCount", [](moeLayerConfig_t &c) { c.routing = moeRoutingCount; }, "routing"},
    {"UnknownActivation", [](moeLayerConfig_t &c) { c.activation = static_cast<moeActivation_t>(42); }, "activation"},
    {"UnknownDropPolicy", [](moeLayerConfig_t &c) { c.capacity_factor = 1.0f, c.drop_policy = static_cast<moeDropPolicy_t>(7); }, "drop_policy"},
    {"GroupsDoNotDivideE",
     [](moeLayerConfig_t &c) { c.routing = moeRoutingSigmoidGroupTopK, c.n_group = 3; }, "n_group"},
    {"GroupsZero", [](moeLayerConfig_t &c) { c.routing = moeRoutingSoftmaxGroupTopK, c.n_group = 0; }, "n_group"},
    {"TopkGroupAboveNGroup",
     [](moeLayerConfig_t &c) { c.routing = moeRoutingSigmoidGroupTopK, c.n_group = 4, c.topk_group = 5; },
     "topk_group"},
    {"TopkGroupZero",
     [](moeLayerConfig_t &c) { c.routing = moeRoutingSigmoidGroupTopK, c.n_group = 4, c.topk_group = 0; },
     "topk_group"},
    {"TooFewExpertsInKeptGroups",  // 1 group of 2 experts kept, k = 3
     [](moeLayerConfig_t &c) {
       c.routing = moeRoutingSigmoidGroupTopK, c.n_group = 4, c.topk_group = 1, c.top_k = 3;
     },
     "top_k"},
    {"ScalingZero", [](moeLayerConfig_t &c) { c.routed_scaling_factor = 0.0f; }, "routed_scaling_factor"},
    {"ScalingNegative", [](moeLayerConfig_t &c) { c.routed_scaling_factor = -1.0f; }, "routed_scaling_factor"},
    {"ScalingNaN", [](moeLayerConfig_t &c) { c.routed_scaling_factor = NAN; }, "routed_scaling_factor"},
    {"ScalingInf", [](moeLayerConfig_t &c) { c.routed_scaling_factor = INFINITY; }, "routed_scaling_factor"},
    {"TopPZero", [](moeLayerConfig_t &c) { c.routing = moeRoutingTopP, c.top_p_threshold = 0.0f; }, "top_p_threshold"},
    {"TopPNegative", [](moeLayerConfig_t &c) { c.routing = moeRoutingTopP, c.top_p_threshold = -0.2f; }, "top_p_threshold"},
    {"TopPAboveOne", [](moeLayerConfig_t &c) { c.routing = moeRoutingTopP, c.top_p_threshold = 1.01f; }, "top_p_threshold"},
    {"TopPNaN", [](moeLayerConfig_t &c) { c.routing = moeRoutingTopP, c.top_p_threshold = NAN; }, "top_p_threshold"},
    {"CapacityNegative", [](moeLayerConfig_t &c) { c.capacity_factor = -0.5f; }, "capacity_factor"},
    {"CapacityNaN", [](moeLayerConfig_t &c) { c.capacity_factor = NAN; }, "capacity_factor"},
    {"ExpertChoiceCapacityZero",
     [](moeLayerConfig_t &c) { c.routing = moeRoutingExpertChoice, c.capacity_factor = 0.0f; }, "capacity_factor"},
    {"ExpertChoiceCapacityNegative",
     [](moeLayerConfig_t &c) { c.routing = moeRoutingExpertChoice, c.capacity_factor = -1.0f; }, "capacity_factor"},
    {"HeadsDoNotDivideH", [](moeLayerConfig_t &c) { c.num_heads = 3; }, "num_heads"},
    {"HeadsZero", [](moeLayerConfig_t &c) { c.num_heads = 0; }, "num_heads"},
    {"SharedNegative", [](moeLayerConfig_t &c) { c.num_shared_experts = -1; }, "num_shared_experts"},
    {"SharedTooMany", [](moeLayerConfig_t &c) { c.num_shared_experts = 65; }, "num_shared_experts"},
    {"SharedWidthNegative",
     [](moeLayerConfig_t &c) { c.num_shared_experts = 1, c.shared_intermediate = -3; }, "shared_intermediate"},
    {"SwigluLimitZero",
     [](moeLayerConfig_t &c) { c.activation = moeActivationSwiGLUClamped, c.swiglu_limit = 0.0f; }, "swiglu_limit"},
    {"SwigluLimitNegative",
     [](moeLayerConfig_t &c) { c.activation = moeActivationSwiGLUClamped, c.swiglu_limit = -7.0f; }, "swiglu_limit"},
    {"SizeFieldZero", [](moeLayerConfig_t &c) { c.size = 0; }, "size"},
};

class InvalidConfig : public ::testing::TestWithParam<BadConfig> {};

}  // namespace

TEST_P(InvalidConfig, ValidateAndCreateRejectWithANamedField) {
  moeLayerConfig_t c = Good();
  ASSERT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
  GetParam().mutate(c);
  EXPECT_EQ(moeLayerConfigValidate(&c), moeErrorInvalidConfig);
  std::string msg = moeGetLastErrorMessage();
  EXPECT_NE(msg.find(GetParam().field), std::string::npos) << "message: " << msg;
  EXPECT_TRUE(HasDigit(msg)) << "no value or limit in: " << msg;

  moeContext_t ctx = nullptr;
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  ASSERT_EQ(moeContextCreate(&ctx, &cc), moeSuccess);
  moeLayer_t layer = reinterpret_cast<moeLayer_t>(0x10);
  EXPECT_EQ(moeLayerCreate(&layer, ctx, &c), moeErrorInvalidConfig);
  EXPECT_EQ(layer, nullptr);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find(GetParam().field), std::string::npos);
  moeContextDestroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(Config, InvalidConfig, ::testing::ValuesIn(kBad),
                         [](const ::testing::TestParamInfo<BadConfig> &i) { return i.param.name; });

TEST(Config, EveryFamilyConfigIsValid) {
  for (int r = 0; r < moeRoutingCount; ++r) {
    moeLayerConfig_t c = FamilyConfig(static_cast<moeRouting_t>(r));
    EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << RoutingName(c.routing) << ": "
                                                      << moeGetLastErrorMessage();
  }
}

TEST(Config, BoundaryValuesAreAccepted) {
  moeLayerConfig_t c = Good();
  c.top_k = c.num_experts;  // k = E
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
  c = Good();
  c.routing = moeRoutingTopP, c.top_p_threshold = 1.0f;  // closed at 1
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
  c = Good();
  c.num_heads = 32;  // H / h = 1
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
  c = Good();
  c.routing = moeRoutingSigmoidGroupTopK, c.n_group = 8, c.topk_group = 2, c.top_k = 2;
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
  c = MakeConfig(1, 1, 1, 1);
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
  c = MakeConfig(int64_t(1) << 20, 1, 4096, 4096);
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
}

TEST(Config, NullPointersAreInvalidArguments) {
  EXPECT_EQ(moeLayerConfigValidate(nullptr), moeErrorInvalidArgument);
  moeContext_t ctx = nullptr;
  ASSERT_EQ(moeContextCreate(&ctx, nullptr), moeSuccess);
  moeLayerConfig_t c = Good();
  moeLayer_t layer = nullptr;
  EXPECT_EQ(moeLayerCreate(nullptr, ctx, &c), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerCreate(&layer, nullptr, &c), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerCreate(&layer, ctx, nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(layer, nullptr);
  moeContextDestroy(ctx);
}

TEST(Config, HugeLayerFailsCleanly) {
  // 4096 experts of 64 x 2^20: 2^40 bytes of expert weights. Must fail (memory, not a crash).
  // (H stays small so that no smaller buffer, e.g. the router, gets allocated and touched first.)
  moeLayerConfig_t c = MakeConfig(64, int64_t(1) << 20, 4096, 8);
  CpuLayer L(c);
  EXPECT_NE(L.status(), moeSuccess);
  EXPECT_TRUE(L.status() == moeErrorOutOfMemory || L.status() == moeErrorInvalidConfig)
      << moeGetErrorString(L.status());
  EXPECT_EQ(L.layer(), nullptr);
}

TEST(Config, WorkspaceSizeOverflowIsRejected) {
  CpuLayer L(Good());
  MOE_ASSERT_OK(L.status());
  size_t bytes = 0;
  EXPECT_EQ(moeLayerGetWorkspaceSize(L.layer(), std::numeric_limits<int64_t>::max() / 2, &bytes),
            moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()), "");
  EXPECT_EQ(moeLayerGetWorkspaceSize(L.layer(), -1, &bytes), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerGetWorkspaceSize(L.layer(), 4, nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerGetWorkspaceSize(nullptr, 4, &bytes), moeErrorInvalidArgument);
}

TEST(Config, ExpertChoiceCapacityAboveTokensIsRejected) {
  // C = floor(T * 8 / 4) = 2T > T: invalid, either when the layer is created or at forward.
  moeLayerConfig_t c = MakeConfig(16, 8, 4, 1, moeRoutingExpertChoice);
  c.capacity_factor = 8.0f;
  CpuLayer L(c);
  if (L.status() == moeSuccess) {
    MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 1)));
    std::vector<float> y;
    moeStatus_t st = L.Forward(RandomTokens(8, 16, moeFloat32, 2), 8, &y);
    EXPECT_TRUE(st == moeErrorInvalidConfig || st == moeErrorInvalidArgument) << moeGetErrorString(st);
  } else {
    EXPECT_EQ(L.status(), moeErrorInvalidConfig);
  }
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("capacity"), std::string::npos)
      << moeGetLastErrorMessage();
}

TEST(Config, ForwardBeforeWeightsIsInvalidState) {
  moeLayerConfig_t c = Good();
  c.num_shared_experts = 1;
  HostLayer w = MakeRandomLayer(c, 4);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  std::vector<float> x = RandomTokens(3, 32, moeFloat32, 5), y;
  EXPECT_EQ(L.Forward(x, 3, &y), moeErrorInvalidState);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("router"), std::string::npos);
  auto rw = ToBytes(w.router_weight, moeFloat32);
  MOE_ASSERT_OK(moeLayerSetRouterWeights(L.layer(), rw.data(), nullptr, moeFloat32));
  EXPECT_EQ(L.Forward(x, 3, &y), moeErrorInvalidState) << "experts unset";
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("expert"), std::string::npos);
  auto gu = ToBytes(w.gate_up, moeFloat32), dn = ToBytes(w.down, moeFloat32);
  MOE_ASSERT_OK(moeLayerSetExpertWeightsStacked(L.layer(), gu.data(), dn.data(), moeFloat32));
  EXPECT_EQ(L.Forward(x, 3, &y), moeErrorInvalidState) << "shared expert unset";
  MOE_ASSERT_OK(L.Upload(w));
  MOE_EXPECT_OK(L.Forward(x, 3, &y));
}

TEST(Config, MultiHeadForwardBeforeHeadWeightsIsInvalidState) {
  moeLayerConfig_t c = Good();
  c.num_heads = 2;
  HostLayer w = MakeRandomLayer(c, 4);
  w.head.clear();  // UploadLayer skips nothing: set everything but the head by hand
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  auto rw = ToBytes(w.router_weight, moeFloat32);
  MOE_ASSERT_OK(moeLayerSetRouterWeights(L.layer(), rw.data(), nullptr, moeFloat32));
  auto gu = ToBytes(w.gate_up, moeFloat32), dn = ToBytes(w.down, moeFloat32);
  MOE_ASSERT_OK(moeLayerSetExpertWeightsStacked(L.layer(), gu.data(), dn.data(), moeFloat32));
  std::vector<float> y;
  EXPECT_EQ(L.Forward(RandomTokens(2, 32, moeFloat32, 1), 2, &y), moeErrorInvalidState);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("head"), std::string::npos);
}

TEST(Config, WorkspaceTooSmallIsRejected) {
  moeLayerConfig_t c = Good();
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 1)));
  size_t ws = 0;
  MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.layer(), 7, &ws));
  ASSERT_GT(ws, 0u);
  AlignedBuffer work(ws), y(7 * 32 * 4);
  auto x = ToBytes(RandomTokens(7, 32, moeFloat32, 1), moeFloat32);
  EXPECT_EQ(moeLayerForward(L.layer(), 7, x.data(), y.data(), nullptr, work.data(), ws - 1, nullptr),
            moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("workspace"), std::string::npos);
  MOE_EXPECT_OK(moeLayerForward(L.layer(), 7, x.data(), y.data(), nullptr, work.data(), ws, nullptr));
}

TEST(Config, ForwardArgumentsAreChecked) {
  moeLayerConfig_t c = Good();
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 1)));
  std::vector<float> x(4 * 32, 0.5f), y(4 * 32);
  EXPECT_EQ(moeLayerForward(L.layer(), -1, x.data(), y.data(), nullptr, nullptr, 0, nullptr),
            moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerForward(L.layer(), 4, nullptr, y.data(), nullptr, nullptr, 0, nullptr),
            moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerForward(L.layer(), 4, x.data(), nullptr, nullptr, nullptr, 0, nullptr),
            moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerForward(nullptr, 4, x.data(), y.data(), nullptr, nullptr, 0, nullptr),
            moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerForwardDense(L.layer(), 4, x.data(), y.data(), y.data(), nullptr, 0, nullptr),
            moeErrorInvalidConfig)
      << "dense forward on a top-k layer";
  EXPECT_EQ(moeLayerSharedExperts(L.layer(), 4, x.data(), y.data(), nullptr, 0, nullptr),
            moeErrorInvalidConfig)
      << "shared experts on a layer without them";
  std::vector<int64_t> counts(8, 1);
  EXPECT_EQ(moeLayerUpdateSelectionBias(L.layer(), nullptr, 0.001f, nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerUpdateSelectionBias(L.layer(), counts.data(), NAN, nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerUpdateSelectionBias(L.layer(), counts.data(), 0.001f, nullptr),
            moeErrorInvalidConfig)
      << "a top-k softmax layer has no selection bias to update";
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("moeRoutingSigmoidGroupTopK"),
            std::string::npos);
}

// y must not share a byte with x (the layer reads x while writing y); touching is fine.
TEST(Config, ForwardRefusesOverlappingInputAndOutput) {
  moeLayerConfig_t c = Good();
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 1)));
  const int64_t T = 4, H = 32;
  std::vector<float> buf(size_t(3 * T * H), 0.5f);
  float *x = buf.data() + T * H;
  for (int64_t shift : {int64_t(0), H, -H, T * H - 1, 1 - T * H}) {
    EXPECT_EQ(moeLayerForward(L.layer(), T, x, x + shift, nullptr, nullptr, 0, nullptr),
              moeErrorInvalidArgument)
        << "y = x + " << shift;
    EXPECT_NE(std::string(moeGetLastErrorMessage()).find("y overlaps x"), std::string::npos)
        << moeGetLastErrorMessage();
  }
  MOE_EXPECT_OK(moeLayerForward(L.layer(), T, x, x + T * H, nullptr, nullptr, 0, nullptr));
  MOE_EXPECT_OK(moeLayerForward(L.layer(), T, x, x - T * H, nullptr, nullptr, 0, nullptr));
}

TEST(Config, WeightSettersCheckTheirArguments) {
  moeLayerConfig_t c = Good();  // SwiGLU: gated
  HostLayer w = MakeRandomLayer(c, 1);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  auto rw = ToBytes(w.router_weight, moeFloat32);
  auto gu = ToBytes(w.gate_up, moeFloat32), dn = ToBytes(w.down, moeFloat32);
  const uint8_t *gate = gu.data(), *up = gu.data() + 16 * 32 * 4;
  moeLayer_t l = L.layer();
  EXPECT_EQ(moeLayerSetRouterWeights(l, nullptr, nullptr, moeFloat32), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerSetRouterWeights(l, rw.data(), nullptr, static_cast<moeDtype_t>(7)),
            moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("dtype"), std::string::npos);
  EXPECT_EQ(moeLayerSetExpertWeights(l, -1, gate, up, dn.data(), moeFloat32), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerSetExpertWeights(l, 8, gate, up, dn.data(), moeFloat32), moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("expert"), std::string::npos);
  EXPECT_EQ(moeLayerSetExpertWeights(l, 0, nullptr, up, dn.data(), moeFloat32), moeErrorInvalidArgument)
      << "a gated activation needs its gate";
  EXPECT_EQ(moeLayerSetExpertWeights(l, 0, gate, up, nullptr, moeFloat32), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerSetExpertWeightsStacked(l, nullptr, dn.data(), moeFloat32), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerSetSelectionBias(l, nullptr), moeErrorInvalidArgument);
  const std::vector<float> bias(8, 0.1f);
  EXPECT_EQ(moeLayerSetSelectionBias(l, bias.data()), moeErrorInvalidConfig)
      << "only the sigmoid-group routing reads a selection bias";
  EXPECT_EQ(moeLayerSetSharedExpertWeights(l, 0, gate, up, dn.data(), moeFloat32),
            moeErrorInvalidArgument)
      << "no shared experts in this layer";
}
