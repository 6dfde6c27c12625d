// Expert parallelism over MPI on the CPU backend: run by ctest as
// `mpirun -np N moe_mpi_tests` for N = 1, 2, 4. Each case compares every rank's output with
// the single-process layer holding all experts.
#include <gtest/gtest.h>
#include <mpi.h>

#include "ep_cases.h"

namespace {

class EpMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
    cc.backend = moeBackendCpu;
    EP_ASSERT_OK(moeContextCreate(&ctx_, &cc));
    MPI_Comm world = MPI_COMM_WORLD;
    EP_ASSERT_OK(moeEpCommCreateMpi(&comm_, ctx_, &world));
  }
  void TearDown() override {
    EXPECT_EQ(moeEpCommDestroy(comm_), moeSuccess);
    moeContextDestroy(ctx_);
  }
  moeContext_t ctx_ = nullptr;
  moeEpComm_t comm_ = nullptr;
};

TEST_F(EpMpi, RankAndSize) {
  int r = -1, p = -1, mr = 0, mp = 0;
  EP_ASSERT_OK(moeEpCommGetRank(comm_, &r));
  EP_ASSERT_OK(moeEpCommGetSize(comm_, &p));
  MPI_Comm_rank(MPI_COMM_WORLD, &mr);
  MPI_Comm_size(MPI_COMM_WORLD, &mp);
  EXPECT_EQ(r, mr);
  EXPECT_EQ(p, mp);
  int dev = -1;
  MPI_Comm world = MPI_COMM_WORLD;
  EP_ASSERT_OK(moeEpGetLocalDevice(&world, &dev));
  EXPECT_GE(dev, 0);
}

TEST_F(EpMpi, Fp32MatchesSingleProcess) { ep_test::CaseFp32(comm_, moeBackendCpu); }
TEST_F(EpMpi, Bf16MatchesSingleProcess) { ep_test::CaseBf16(comm_, moeBackendCpu); }
TEST_F(EpMpi, TopKEqualsESendsEachTokenOncePerRank) { ep_test::CaseKEqualsE(comm_, moeBackendCpu); }
TEST_F(EpMpi, AllTokensToOneRank) { ep_test::CaseAllToOneRank(comm_, moeBackendCpu); }
TEST_F(EpMpi, UnevenRouting) { ep_test::CaseUneven(comm_, moeBackendCpu); }
TEST_F(EpMpi, NoRankHasTokens) { ep_test::CaseNoTokens(comm_, moeBackendCpu); }
TEST_F(EpMpi, ConfigsThatDifferFailEveryRank) { ep_test::CaseConfigMismatch(comm_, moeBackendCpu); }
TEST_F(EpMpi, ExpertsNotDivisibleByEpSize) { ep_test::CaseIndivisible(comm_, moeBackendCpu); }
TEST_F(EpMpi, CreateFailureOnOneRankFailsEveryRank) {
  ep_test::CaseCreateFailsOnOneRank(comm_, moeBackendCpu);
}
TEST_F(EpMpi, ForwardFailureOnOneRankFailsEveryRank) {
  ep_test::CaseForwardFailsOnOneRank(comm_, moeBackendCpu);
}
TEST_F(EpMpi, CallerRoutingEqualsLayerRouting) { ep_test::CaseRouted(comm_, moeBackendCpu); }
TEST_F(EpMpi, DeepSeekV3Routing) { ep_test::CaseDeepSeek(comm_, moeBackendCpu); }
TEST_F(EpMpi, InputScaledRouting) { ep_test::CaseInputScale(comm_, moeBackendCpu); }

TEST(EpMpiComm, NullArguments) {
  moeEpComm_t c = nullptr;
  EXPECT_EQ(moeEpCommCreateMpi(&c, nullptr, nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(moeEpCommDestroy(nullptr), moeSuccess);
  EXPECT_EQ(moeEpCommAbort(nullptr), moeSuccess);
  EXPECT_EQ(moeEpLayerDestroy(nullptr), moeSuccess);
}

}  // namespace

// The same cases with a CUDA context: NCCL bootstrapped over MPI, one GPU per rank (node-local
// rank modulo the device count). Skips without a GPU.
namespace {

class EpMpiCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    int any_gpu = moeGetCudaDeviceCount(&n) == moeSuccess && n > 0;
    int all_gpu = 0;
    MPI_Allreduce(&any_gpu, &all_gpu, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_gpu) GTEST_SKIP() << "no GPU on some rank";
#ifdef MOE_CUDA_EMULATION
    // Each process has its own emulated device, and the emulated NCCL connects the threads of
    // one process only: one rank runs the MPI bootstrap of NCCL, more would wait for each other.
    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) GTEST_SKIP() << "the emulated NCCL does not connect processes";
#endif
    MPI_Comm world = MPI_COMM_WORLD;
    moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
    cc.backend = moeBackendCuda;
    EP_ASSERT_OK(moeEpGetLocalDevice(&world, &cc.device));
    EP_ASSERT_OK(moeContextCreate(&ctx_, &cc));
    moeStatus_t st = moeEpCommCreateMpi(&comm_, ctx_, &world);
    if (st == moeErrorNotSupported) GTEST_SKIP() << moeGetLastErrorMessage();
    EP_ASSERT_OK(st);
  }
  void TearDown() override {
    if (comm_) EXPECT_EQ(moeEpCommDestroy(comm_), moeSuccess);
    moeContextDestroy(ctx_);
  }
  moeContext_t ctx_ = nullptr;
  moeEpComm_t comm_ = nullptr;
};

TEST_F(EpMpiCuda, Fp32MatchesSingleProcess) { ep_test::CaseFp32(comm_, moeBackendCuda); }
TEST_F(EpMpiCuda, Bf16MatchesSingleProcess) { ep_test::CaseBf16(comm_, moeBackendCuda); }
TEST_F(EpMpiCuda, DeepSeekV3Routing) { ep_test::CaseDeepSeek(comm_, moeBackendCuda); }
TEST_F(EpMpiCuda, AllTokensToOneRank) { ep_test::CaseAllToOneRank(comm_, moeBackendCuda); }
TEST_F(EpMpiCuda, NoRankHasTokens) { ep_test::CaseNoTokens(comm_, moeBackendCuda); }
TEST_F(EpMpiCuda, ConfigsThatDifferFailEveryRank) {
  ep_test::CaseConfigMismatch(comm_, moeBackendCuda);
}
TEST_F(EpMpiCuda, ForwardFailureOnOneRankFailsEveryRank) {
  ep_test::CaseForwardFailsOnOneRank(comm_, moeBackendCuda);
}

}  // namespace
