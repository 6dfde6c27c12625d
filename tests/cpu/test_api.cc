// The API's conventions: version, status strings, last-error messages, handles, NULL destroys,
// the context, the allocator callbacks, T = 0.
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>

#include "common/test_util.h"

using namespace moe_test;

TEST(Api, VersionMatchesHeader) {
  EXPECT_EQ(moeGetVersion(), MOE_VERSION_CODE);
  EXPECT_EQ(MOE_VERSION_CODE, MOE_VERSION_MAJOR * 10000 + MOE_VERSION_MINOR * 100 + MOE_VERSION_PATCH);
}

TEST(Api, EveryStatusHasItsOwnNamedString) {
  std::set<std::string> seen;
  const char *names[] = {"moeSuccess", "moeErrorInvalidArgument", "moeErrorInvalidConfig",
                         "moeErrorOutOfMemory", "moeErrorNotSupported",
                         "moeErrorBackendUnavailable", "moeErrorInvalidState", "moeErrorCuda",
                         "moeErrorCublas", "moeErrorNccl", "moeErrorMpi", "moeErrorIo",
                         "moeErrorFormat", "moeErrorInternal"};
  static_assert(sizeof(names) / sizeof(names[0]) == moeStatusCount, "a status without a test");
  for (int s = 0; s < moeStatusCount; ++s) {
    const char *str = moeGetErrorString(static_cast<moeStatus_t>(s));
    ASSERT_NE(str, nullptr);
    EXPECT_EQ(std::string(str).rfind(names[s], 0), 0u) << str;
    EXPECT_TRUE(seen.insert(str).second) << "duplicate: " << str;
  }
}

TEST(Api, PinnedStatusValues) {
  EXPECT_EQ(moeSuccess, 0);
  EXPECT_EQ(moeErrorInvalidArgument, 1);
  EXPECT_EQ(moeErrorInvalidConfig, 2);
  EXPECT_EQ(moeErrorInvalidState, 6);
  EXPECT_EQ(moeErrorInternal, 13);
}

TEST(Api, UnknownStatusStillGivesAString) {
  for (int s : {-1, int(moeStatusCount), 1000}) {
    const char *str = moeGetErrorString(static_cast<moeStatus_t>(s));
    ASSERT_NE(str, nullptr);
    EXPECT_GT(std::strlen(str), 0u);
  }
}

TEST(Api, DestroyNullIsANoOp) {
  EXPECT_EQ(moeContextDestroy(nullptr), moeSuccess);
  EXPECT_EQ(moeLayerDestroy(nullptr), moeSuccess);
}

TEST(Api, LastErrorIsSetOnFailureAndClearedBySuccess) {
  moeLayerConfig_t c = MakeConfig(0, 32, 8, 2);
  EXPECT_EQ(moeLayerConfigValidate(&c), moeErrorInvalidConfig);
  EXPECT_NE(std::string(moeGetLastErrorMessage()), "");
  c.hidden = 32;
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess);
  EXPECT_EQ(std::string(moeGetLastErrorMessage()), "");
}

TEST(Api, LastErrorIsThreadLocal) {
  moeLayerConfig_t c = MakeConfig(0, 32, 8, 2);
  ASSERT_EQ(moeLayerConfigValidate(&c), moeErrorInvalidConfig);
  std::string mine = moeGetLastErrorMessage();
  std::string other = "unset";
  std::thread th([&] {
    other = moeGetLastErrorMessage();  // nothing failed on this thread
    moeLayerConfig_t d = MakeConfig(32, 32, 0, 2);
    moeLayerConfigValidate(&d);
  });
  th.join();
  EXPECT_EQ(other, "");
  EXPECT_EQ(std::string(moeGetLastErrorMessage()), mine);
}

TEST(Api, NoGpuInThisBuildOrMachineMeansZeroDevices) {
  int n = -1;
  MOE_ASSERT_OK(moeGetCudaDeviceCount(&n));
  EXPECT_GE(n, 0);
  EXPECT_EQ(moeGetCudaDeviceCount(nullptr), moeErrorInvalidArgument);
}

TEST(Api, DefaultContextResolvesToAConcreteBackend) {
  moeContext_t ctx = nullptr;
  MOE_ASSERT_OK(moeContextCreate(&ctx, nullptr));
  moeBackend_t b = moeBackendAuto;
  MOE_EXPECT_OK(moeContextGetBackend(ctx, &b));
  EXPECT_EQ(b, HasGpu() ? moeBackendCuda : moeBackendCpu);
  MOE_EXPECT_OK(moeContextSynchronize(ctx));
  MOE_EXPECT_OK(moeContextDestroy(ctx));
}

TEST(Api, CudaContextWithoutGpuIsUnavailable) {
  if (HasGpu()) GTEST_SKIP() << "a GPU is visible";
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCuda;
  moeContext_t ctx = reinterpret_cast<moeContext_t>(0x1);
  EXPECT_EQ(moeContextCreate(&ctx, &cc), moeErrorBackendUnavailable);
  EXPECT_EQ(ctx, nullptr);
  EXPECT_NE(std::string(moeGetLastErrorMessage()), "");
}

TEST(Api, ContextConfigIsValidated) {
  moeContext_t ctx = nullptr;
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.num_threads = -1;
  EXPECT_EQ(moeContextCreate(&ctx, &cc), moeErrorInvalidConfig);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("num_threads"), std::string::npos);
  EXPECT_EQ(ctx, nullptr);
  cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = static_cast<moeBackend_t>(7);
  EXPECT_EQ(moeContextCreate(&ctx, &cc), moeErrorInvalidConfig);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("backend"), std::string::npos);
  EXPECT_EQ(moeContextCreate(nullptr, nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(moeContextGetBackend(nullptr, nullptr), moeErrorInvalidArgument);
}

namespace {
struct CountingAllocator {
  int allocs = 0, frees = 0;
  size_t bytes = 0;
  static void *Alloc(void *user, size_t n, int on_device) {
    auto *a = static_cast<CountingAllocator *>(user);
    if (on_device) return nullptr;  // the CPU backend must ask for host memory
    a->allocs++;
    a->bytes += n;
    return std::malloc(n);
  }
  static void Free(void *user, void *p, int) {
    static_cast<CountingAllocator *>(user)->frees++;
    std::free(p);
  }
};
}  // namespace

TEST(Api, AllocatorCallbacksServeWeightsAndOwnWorkspace) {
  CountingAllocator a;
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  cc.allocator = {&CountingAllocator::Alloc, &CountingAllocator::Free, &a};
  moeContext_t ctx = nullptr;
  MOE_ASSERT_OK(moeContextCreate(&ctx, &cc));
  moeLayerConfig_t cfg = MakeConfig(16, 8, 4, 2);
  HostLayer w = MakeRandomLayer(cfg, 1);
  moeLayer_t layer = nullptr;
  MOE_ASSERT_OK(moeLayerCreate(&layer, ctx, &cfg));
  EXPECT_GT(a.allocs, 0);
  EXPECT_GE(a.bytes, size_t(4 * (2 * 8 * 16 + 16 * 8) * 4));  // at least the expert weights
  MOE_ASSERT_OK(UploadLayer(layer, w));
  int before = a.allocs;
  auto x = ToBytes(RandomTokens(5, 16, moeFloat32, 2), moeFloat32);
  std::vector<float> y(5 * 16);
  MOE_EXPECT_OK(moeLayerForward(layer, 5, x.data(), y.data(), nullptr, nullptr, 0, nullptr));
  EXPECT_GT(a.allocs, before) << "the layer's own workspace bypassed the allocator";
  MOE_EXPECT_OK(moeLayerDestroy(layer));
  MOE_EXPECT_OK(moeContextDestroy(ctx));
  EXPECT_EQ(a.allocs, a.frees);
}

TEST(Api, FailingAllocatorIsOutOfMemoryNamingTheBufferAndTheCause) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  cc.allocator = {[](void *, size_t, int) -> void * { return nullptr; },
                  [](void *, void *, int) {}, nullptr};
  moeContext_t ctx = nullptr;
  MOE_ASSERT_OK(moeContextCreate(&ctx, &cc));
  moeLayerConfig_t cfg = MakeConfig(16, 8, 4, 2);
  moeLayer_t layer = reinterpret_cast<moeLayer_t>(&cc);
  EXPECT_EQ(moeLayerCreate(&layer, ctx, &cfg), moeErrorOutOfMemory);
  EXPECT_EQ(layer, nullptr);
  const std::string msg = moeGetLastErrorMessage();
  EXPECT_NE(msg.find("w_gate_up"), std::string::npos) << msg;
  EXPECT_NE(msg.find("user allocator returned NULL"), std::string::npos) << msg;
  MOE_EXPECT_OK(moeContextDestroy(ctx));
}

TEST(Api, LayerConfigRoundTripsWithDefaultsFilled) {
  moeLayerConfig_t c = MakeConfig(32, 24, 8, 2);
  c.num_shared_experts = 1;
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  moeLayerConfig_t got = MOE_LAYER_CONFIG_INIT;
  std::memset(&got, 0xAB, sizeof got);
  got.size = sizeof got;
  MOE_ASSERT_OK(moeLayerGetConfig(L.layer(), &got));
  EXPECT_EQ(got.size, sizeof(moeLayerConfig_t));
  EXPECT_EQ(got.hidden, 32);
  EXPECT_EQ(got.intermediate, 24);
  EXPECT_EQ(got.num_experts, 8);
  EXPECT_EQ(got.top_k, 2);
  EXPECT_EQ(got.shared_intermediate, 24) << "0 means intermediate";
  EXPECT_FLOAT_EQ(got.swiglu_alpha, 1.702f);
  EXPECT_FLOAT_EQ(got.swiglu_limit, 7.0f);
  EXPECT_EQ(moeLayerGetConfig(L.layer(), nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(moeLayerGetConfig(nullptr, &got), moeErrorInvalidArgument);
  got.size = 0;  // not initialized with MOE_LAYER_CONFIG_INIT
  EXPECT_EQ(moeLayerGetConfig(L.layer(), &got), moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("moeLayerConfig_t"), std::string::npos)
      << moeGetLastErrorMessage();
}

TEST(Api, GetConfigWritesOnlyWhatAnOlderCallerKnows) {
  // A caller built against a struct that ended at num_heads: bytes past it stay untouched.
  CpuLayer L(MakeConfig(32, 24, 8, 2));
  MOE_ASSERT_OK(L.status());
  moeLayerConfig_t got;
  std::memset(&got, 0xAB, sizeof got);
  got.size = offsetof(moeLayerConfig_t, num_heads);
  MOE_ASSERT_OK(moeLayerGetConfig(L.layer(), &got));
  EXPECT_EQ(got.size, offsetof(moeLayerConfig_t, num_heads));
  EXPECT_EQ(got.hidden, 32);
  EXPECT_EQ(got.top_k, 2);
  const unsigned char *tail = reinterpret_cast<const unsigned char *>(&got) + got.size;
  for (size_t i = 0; i < sizeof got - got.size; ++i) ASSERT_EQ(tail[i], 0xAB) << "byte " << i;
}

TEST(Api, RouteWidthPerFamily) {
  for (int r = 0; r < moeRoutingCount; ++r) {
    moeLayerConfig_t c = FamilyConfig(static_cast<moeRouting_t>(r));
    CpuLayer L(c);
    MOE_ASSERT_OK(L.status()) << RoutingName(c.routing);
    int32_t K = -1;
    MOE_ASSERT_OK(moeLayerGetRouteWidth(L.layer(), &K));
    EXPECT_EQ(K, moe_naive_route_width(&c)) << RoutingName(c.routing);
  }
}

TEST(Api, ZeroTokensReturnAtOnceAndTouchNothing) {
  moeLayerConfig_t c = MakeConfig(16, 8, 4, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  MOE_ASSERT_OK(L.Upload(MakeRandomLayer(c, 3)));
  float x = 1.0f, y = 0.0f;
  Poison(&y, sizeof y);
  StatsBuffers st(4);
  moeRouterStats_t s = st.Get();
  MOE_EXPECT_OK(moeLayerForward(L.layer(), 0, &x, &y, &s, nullptr, 0, nullptr));
  uint32_t bits;
  std::memcpy(&bits, &y, 4);
  EXPECT_EQ(bits, 0xFFFFFFFFu) << "T = 0 wrote to y";
  EXPECT_EQ(st.counts, std::vector<int64_t>(4, -7)) << "T = 0 wrote the stats";
  for (float v : st.scalars) EXPECT_TRUE(std::isnan(v)) << "T = 0 wrote the stats";
  size_t ws = 1;
  MOE_EXPECT_OK(moeLayerGetWorkspaceSize(L.layer(), 0, &ws));
  std::vector<float> out;
  MOE_EXPECT_OK(L.Forward({}, 0, &out));
  EXPECT_TRUE(out.empty());
}

TEST(Api, WorkspaceGrowsWithTokens) {
  moeLayerConfig_t c = MakeConfig(16, 8, 4, 2);
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  size_t a = 0, b = 0;
  MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.layer(), 10, &a));
  MOE_ASSERT_OK(moeLayerGetWorkspaceSize(L.layer(), 1000, &b));
  // At least the routing output and one expert output row per selection.
  EXPECT_GE(b, size_t(1000 * 2 * (4 + 4 + 16 * 4)));
  EXPECT_GT(b, a);
}

TEST(Api, OlderConfigStructsGetDefaultsForMissingFields) {
  // A caller compiled against an older header passes a smaller size; the fields past it must
  // not be read (they hold garbage here) and take their documented defaults.
  moeLayerConfig_t c = MOE_LAYER_CONFIG_INIT;
  std::memset(&c, 0x5A, sizeof c);
  c.size = offsetof(moeLayerConfig_t, routing);
  c.hidden = 16, c.intermediate = 8, c.num_experts = 4, c.top_k = 2;
  EXPECT_EQ(moeLayerConfigValidate(&c), moeSuccess) << moeGetLastErrorMessage();
  CpuLayer L(c);
  MOE_ASSERT_OK(L.status());
  moeLayerConfig_t got = MOE_LAYER_CONFIG_INIT;
  MOE_ASSERT_OK(moeLayerGetConfig(L.layer(), &got));
  EXPECT_EQ(got.routing, moeRoutingTopKSoftmax);
  EXPECT_EQ(got.dtype, moeBFloat16);
  EXPECT_EQ(got.activation, moeActivationSwiGLU);
  EXPECT_EQ(got.num_heads, 1);
  EXPECT_EQ(got.n_group, 1);
  EXPECT_EQ(got.num_shared_experts, 0);
  EXPECT_FLOAT_EQ(got.routed_scaling_factor, 1.0f);
  EXPECT_FLOAT_EQ(got.top_p_threshold, 0.4f);
  EXPECT_FLOAT_EQ(got.capacity_factor, 0.0f);

  moeContextConfig_t cc;
  std::memset(&cc, 0x5A, sizeof cc);
  cc.size = offsetof(moeContextConfig_t, backend);  // nothing but the size field
  moeContext_t ctx = nullptr;
  MOE_ASSERT_OK(moeContextCreate(&ctx, &cc));
  moeContextDestroy(ctx);
}
