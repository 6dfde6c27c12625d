// Expert parallelism over NCCL without MPI, in one process.
//  EpNcclOneRank: one rank on one GPU, the communicator from ncclCommInitAll, as a serving stack
//    that owns its NCCL communicator would hand it over (moeEpCommCreateNccl).
//  EpNccl: P ranks as threads, each with its own stream, CUDA context and NCCL communicator
//    (ncclCommInitAll in the main thread, or ncclGetUniqueId + ncclCommInitRank in every
//    thread), running every case of the loopback suite over the NCCL transport. On a machine
//    with P GPUs each rank takes its own; in the emulation build (tests/emulator: one emulated
//    device, the emulated NCCL) every rank shares device 0 with its own stream, so these run in
//    CI.
// Skips without a GPU; compiled only when the build has NCCL.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "ep_cases.h"
#include "ep/comm.h"  // the transport's operations, for the group test

#if defined(MOE_WITH_CUDA) && defined(MOE_WITH_NCCL)
#include <nccl.h>

namespace {

int DeviceCount() {
  int n = 0;
  if (moeGetCudaDeviceCount(&n) != moeSuccess) return 0;
  return n;
}

class EpNcclOneRank : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) GTEST_SKIP() << "no GPU";
    int dev = 0;
    ASSERT_EQ(ncclCommInitAll(&nccl_, 1, &dev), ncclSuccess);
    moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
    cc.backend = moeBackendCuda;
    cc.device = dev;
    EP_ASSERT_OK(moeContextCreate(&ctx_, &cc));
    EP_ASSERT_OK(moeEpCommCreateNccl(&comm_, ctx_, nccl_));
  }
  void TearDown() override {
    if (comm_) EXPECT_EQ(moeEpCommDestroy(comm_), moeSuccess);
    moeContextDestroy(ctx_);
    if (nccl_) ncclCommDestroy(nccl_);  // the caller's communicator: libmoe never destroys it
  }
  ncclComm_t nccl_ = nullptr;
  moeContext_t ctx_ = nullptr;
  moeEpComm_t comm_ = nullptr;
};

TEST_F(EpNcclOneRank, Fp32MatchesSingleProcess) { ep_test::CaseFp32(comm_, moeBackendCuda); }
TEST_F(EpNcclOneRank, Bf16MatchesSingleProcess) { ep_test::CaseBf16(comm_, moeBackendCuda); }
TEST_F(EpNcclOneRank, DeepSeekV3Routing) { ep_test::CaseDeepSeek(comm_, moeBackendCuda); }
TEST_F(EpNcclOneRank, NoRankHasTokens) { ep_test::CaseNoTokens(comm_, moeBackendCuda); }

// ---- P ranks as threads ------------------------------------------------------------------------
enum Init { kInitAll, kInitRank };

// The device of rank r: its own GPU where there are enough, else all share device 0 (the
// emulated device; a real NCCL refuses two ranks on one GPU).
int RankDevice(int r, int P) { return DeviceCount() >= P ? r : 0; }

// Why P ranks cannot run here, or "" when they can.
std::string CannotRun(int P) {
  const int n = DeviceCount();
  if (n == 0) return "no GPU";
#ifndef MOE_EMU_NCCL
  if (n < P) return "needs " + std::to_string(P) + " GPUs (NCCL wants one per rank)";
#endif
  return "";
}

// One rank's CUDA side: its device, its own stream and a CUDA context on that stream.
struct RankCuda {
  cudaStream_t stream = nullptr;
  moeContext_t ctx = nullptr;
  moeStatus_t Create(int device) {
    if (cudaSetDevice(device) != cudaSuccess ||
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess)
      return moeErrorCuda;
    moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
    cc.backend = moeBackendCuda;
    cc.device = device;
    cc.stream = stream;
    return moeContextCreate(&ctx, &cc);
  }
  ~RankCuda() {
    moeContextDestroy(ctx);
    if (stream) cudaStreamDestroy(stream);
  }
};

// Runs body(rank, nccl communicator, context) on P threads (body may abort the communicator
// and null it). The NCCL communicators come from
// ncclCommInitAll (main thread) or ncclCommInitRank (each thread, one unique id); the caller
// owns them, as a serving stack does, and destroys them after the EP communicators.
template <typename Body>
void OnNcclRanks(int P, Init init, Body body) {
  std::vector<ncclComm_t> nccl((size_t)P, nullptr);
  ncclUniqueId id;
  if (init == kInitAll) {
    std::vector<int> devs((size_t)P);
    for (int r = 0; r < P; ++r) devs[(size_t)r] = RankDevice(r, P);
    ASSERT_EQ(ncclCommInitAll(nccl.data(), P, devs.data()), ncclSuccess) << ncclGetLastError(nullptr);
  } else {
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess) << ncclGetLastError(nullptr);
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r)
    threads.emplace_back([&, r] {
      RankCuda cuda;
      EP_ASSERT_OK(cuda.Create(RankDevice(r, P)));
      if (init == kInitRank)  // on the thread's current device, blocks until every rank joined
        ASSERT_EQ(ncclCommInitRank(&nccl[(size_t)r], P, id, r), ncclSuccess) << ncclGetLastError(nullptr);
      body(r, nccl[(size_t)r], cuda.ctx);
      EXPECT_EQ(ncclCommDestroy(nccl[(size_t)r]), ncclSuccess);
    });
  for (auto &t : threads) t.join();
}

class EpNccl : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(EpNccl, Case) {
  const int P = std::get<0>(GetParam());
  const Init init = (Init)std::get<1>(GetParam());
  const ep_test::NamedCase &c = ep_test::kCases[std::get<2>(GetParam())];
  const std::string why = CannotRun(P);
  if (!why.empty()) GTEST_SKIP() << why;
  SCOPED_TRACE(c.name);
  OnNcclRanks(P, init, [&](int rank, ncclComm_t &nc, moeContext_t ctx) {
    moeEpComm_t comm = nullptr;
    EP_ASSERT_OK(moeEpCommCreateNccl(&comm, ctx, nc));
    int r = -1, p = -1;
    EXPECT_EQ(moeEpCommGetRank(comm, &r), moeSuccess);
    EXPECT_EQ(moeEpCommGetSize(comm, &p), moeSuccess);
    EXPECT_EQ(r, rank);
    EXPECT_EQ(p, P);
    c.fn(comm, moeBackendCuda);
    EXPECT_EQ(moeEpCommDestroy(comm), moeSuccess);  // not nc: the caller's
  });
}

std::string Name(const ::testing::TestParamInfo<std::tuple<int, int, int>> &info) {
  return "P" + std::to_string(std::get<0>(info.param)) +
         (std::get<1>(info.param) == kInitAll ? "_InitAll_" : "_InitRank_") +
         ep_test::kCases[std::get<2>(info.param)].name;
}

INSTANTIATE_TEST_SUITE_P(All, EpNccl,
                         ::testing::Combine(::testing::Values(1, 2, 4),
                                            ::testing::Values((int)kInitAll, (int)kInitRank),
                                            ::testing::Range(0, ep_test::kNumCases)),
                         Name);

// A rank that aborts its NCCL communicator releases the others: a rank blocked in a collective
// EP call returns moeErrorNccl instead of waiting forever. The emulated NCCL releases every
// peer; a real one only the aborting rank's own operations, so this runs in the emulation only.
TEST(EpNcclComm, AbortReleasesBlockedRank) {
#ifndef MOE_EMU_NCCL
  GTEST_SKIP() << "the emulated NCCL's abort semantics";
#endif
  if (DeviceCount() == 0) GTEST_SKIP() << "no GPU";
  std::atomic<int> waiting{0};
  OnNcclRanks(2, kInitRank, [&](int rank, ncclComm_t &nc, moeContext_t ctx) {
    moeEpComm_t comm = nullptr;
    EP_ASSERT_OK(moeEpCommCreateNccl(&comm, ctx, nc));
    if (rank == 0) {
      while (waiting.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // rank 1 is inside create
      EXPECT_EQ(ncclCommAbort(nc), ncclSuccess);
      nc = nullptr;
      EXPECT_EQ(moeEpCommAbort(comm), moeSuccess);  // caller-owned nc: not aborted again
      return;
    }
    moeLayerConfig_t cfg = ep_test::SmallConfig(moeFloat32, 8, 2, 0);
    moeEpLayer_t ep = nullptr;
    waiting = 1;
    EXPECT_EQ(moeEpLayerCreate(&ep, comm, &cfg, nullptr), moeErrorNccl);
    EXPECT_NE(std::string(moeGetLastErrorMessage()).find("ncclCommAbort"), std::string::npos)
        << moeGetLastErrorMessage();
    EXPECT_EQ(ep, nullptr);
    EXPECT_EQ(moeEpCommDestroy(comm), moeSuccess);
  });
}

// A transport call that NCCL refuses halfway through its group still ends the group. NCCL's
// group state is per thread: a group left open would swallow this thread's later NCCL calls,
// so the next status agreement would "succeed" without talking to anyone. (Host buffers make
// ncclSend refuse; the emulated NCCL always checks them.)
TEST(EpNcclComm, RefusedExchangeStillEndsItsGroup) {
#ifndef MOE_EMU_NCCL
  GTEST_SKIP() << "relies on the emulated NCCL refusing host buffers";
#endif
  if (DeviceCount() == 0) GTEST_SKIP() << "no GPU";
  OnNcclRanks(2, kInitAll, [&](int rank, ncclComm_t &nc, moeContext_t ctx) {
    moeEpComm_t comm = nullptr;
    EP_ASSERT_OK(moeEpCommCreateNccl(&comm, ctx, nc));
    std::vector<char> host(64);
    const moeEpPlane plane = {host.data(), host.data() + 32, 8};
    const int64_t counts[2] = {1, 1}, displs[2] = {0, 1};
    EXPECT_EQ(comm->ops->alltoallv(comm, &plane, 1, counts, displs, counts, displs, nullptr),
              moeErrorNccl);
    int64_t v[2] = {rank + 1, -rank};
    EXPECT_EQ(comm->ops->allreduce_max_i64(comm, v, 2), moeSuccess) << moeGetLastErrorMessage();
    EXPECT_EQ(v[0], 2) << "rank " << rank;
    EXPECT_EQ(v[1], 0) << "rank " << rank;
    EXPECT_EQ(moeEpCommDestroy(comm), moeSuccess);
  });
}

}  // namespace
#endif
