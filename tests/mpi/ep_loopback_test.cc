// Expert parallelism with the loopback communicator: P virtual ranks, one thread each, in one
// process. The same cases as the MPI suite, on the CPU backend (runs in CI) and on the CUDA
// backend (skips without a GPU).
#include <gtest/gtest.h>

#include <functional>
#include <thread>
#include <vector>

#include "ep_cases.h"

namespace {

using ep_test::CaseFn;
using ep_test::kCases;

bool GpuAvailable() {
  int n = 0;
  return moeGetCudaDeviceCount(&n) == moeSuccess && n > 0;
}

// Runs fn on every virtual rank of a loopback communicator of size P.
void OnLoopback(moeBackend_t backend, int P, CaseFn fn) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = backend;
  moeContext_t ctx = nullptr;
  EP_ASSERT_OK(moeContextCreate(&ctx, &cc));
  std::vector<moeEpComm_t> comms((size_t)P, nullptr);
  EP_ASSERT_OK(moeEpCommCreateLoopback(comms.data(), ctx, P));
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) threads.emplace_back([&, r] { fn(comms[r], backend); });
  for (auto &t : threads) t.join();
  for (auto c : comms) EXPECT_EQ(moeEpCommDestroy(c), moeSuccess);
  moeContextDestroy(ctx);
}

class EpLoopback : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(EpLoopback, Case) {
  const int backend = std::get<0>(GetParam()), P = std::get<1>(GetParam());
  const ep_test::NamedCase &c = kCases[std::get<2>(GetParam())];
  if (backend == moeBackendCuda && !GpuAvailable()) GTEST_SKIP() << "no GPU";
  SCOPED_TRACE(c.name);
  OnLoopback((moeBackend_t)backend, P, c.fn);
}

std::string Name(const ::testing::TestParamInfo<std::tuple<int, int, int>> &info) {
  return std::string(std::get<0>(info.param) == moeBackendCuda ? "Cuda" : "Cpu") + "_P" +
         std::to_string(std::get<1>(info.param)) + "_" + kCases[std::get<2>(info.param)].name;
}

INSTANTIATE_TEST_SUITE_P(
    All, EpLoopback,
    ::testing::Combine(::testing::Values((int)moeBackendCpu, (int)moeBackendCuda),
                       ::testing::Values(1, 2, 4),
                       ::testing::Range(0, ep_test::kNumCases)),
    Name);

// Abort releases a virtual rank blocked in a collective.
TEST(EpLoopbackComm, AbortReleasesBlockedRanks) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t ctx = nullptr;
  EP_ASSERT_OK(moeContextCreate(&ctx, &cc));
  moeEpComm_t comms[2] = {nullptr, nullptr};
  EP_ASSERT_OK(moeEpCommCreateLoopback(comms, ctx, 2));
  moeLayerConfig_t cfg = ep_test::SmallConfig(moeFloat32, 8, 2, 0);
  moeStatus_t st = moeSuccess;
  moeEpLayer_t ep = nullptr;
  std::thread waiter([&] { st = moeEpLayerCreate(&ep, comms[1], &cfg, nullptr); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(moeEpCommAbort(comms[0]), moeSuccess);
  waiter.join();
  EXPECT_EQ(st, moeErrorInvalidState);
  EXPECT_EQ(ep, nullptr);
  EXPECT_EQ(moeEpCommDestroy(comms[1]), moeSuccess);
  moeContextDestroy(ctx);
}

TEST(EpLoopbackComm, Arguments) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t ctx = nullptr;
  EP_ASSERT_OK(moeContextCreate(&ctx, &cc));
  moeEpComm_t c[2];
  EXPECT_EQ(moeEpCommCreateLoopback(c, ctx, 0), moeErrorInvalidArgument);
  EXPECT_EQ(moeEpCommCreateLoopback(nullptr, ctx, 2), moeErrorInvalidArgument);
  EP_ASSERT_OK(moeEpCommCreateLoopback(c, ctx, 1));
  int r = -1, p = -1;
  EP_ASSERT_OK(moeEpCommGetRank(c[0], &r));
  EP_ASSERT_OK(moeEpCommGetSize(c[0], &p));
  EXPECT_EQ(r, 0);
  EXPECT_EQ(p, 1);
  EXPECT_EQ(moeEpCommDestroy(c[0]), moeSuccess);
  EXPECT_EQ(moeEpCommCreateNccl(c, ctx, nullptr), moeErrorInvalidArgument);
  moeContextDestroy(ctx);
}

}  // namespace
