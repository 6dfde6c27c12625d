// Expert parallelism over NCCL with one rank on one GPU, without MPI: the communicator comes
// from ncclCommInitAll, as a serving stack that owns its NCCL communicator would hand it over
// (moeEpCommCreateNccl). The NCCL transport then runs end to end on a single-GPU machine.
// Skips without a GPU; compiled only when the build found NCCL.
#include <gtest/gtest.h>

#include "ep_cases.h"

#if defined(MOE_WITH_CUDA) && defined(MOE_WITH_NCCL)
#include <nccl.h>

namespace {

class EpNcclOneRank : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (moeGetCudaDeviceCount(&n) != moeSuccess || n == 0) GTEST_SKIP() << "no GPU";
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

}  // namespace
#endif
