// The dispatch layout (csrc/ep/layout.c, internal) and the cost model, without any transport.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#include "ep/layout.h"
#include "moe/moe_ep.h"

namespace {

struct Layout {
  moeEpLayout L;
  Layout(int P, int E, int K) { EXPECT_EQ(moe_ep_layout_init(&L, P, E, K), moeSuccess); }
  ~Layout() { moe_ep_layout_free(&L); }
};

TEST(EpLayout, TokenGoesOncePerRankWithItsLocalIdsOnly) {
  // P = 2, E = 4 (rank 0: experts 0,1; rank 1: 2,3), K = 3.
  Layout lay(2, 4, 3);
  const std::vector<int32_t> ids = {0, 1, 2,    // t0: rank 0 (twice) and rank 1
                                    3, -1, 2,   // t1: rank 1 only (twice)
                                    -1, -1, -1, // t2: nowhere
                                    1, 3, 0};   // t3: both
  const std::vector<float> w = {.5f, .3f, .2f, .6f, 0, .4f, 0, 0, 0, .1f, .2f, .7f};
  moeEpLayout &L = lay.L;
  ASSERT_EQ(moe_ep_layout_compute(&L, 4, ids.data(), w.data()), moeSuccess);
  EXPECT_EQ(L.S, 5);
  EXPECT_EQ(L.send_counts[0], 2);  // t0, t3
  EXPECT_EQ(L.send_counts[1], 3);  // t0, t1, t3
  EXPECT_EQ(L.send_displs[1], 2);
  EXPECT_EQ(L.rank_counts[0], 4);
  EXPECT_EQ(L.rank_counts[1], 4);
  const std::vector<int64_t> send_token = {0, 3, 0, 1, 3};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(L.send_token[i], send_token[i]) << i;
  // row 0 = t0 to rank 0: ids {0, 1, -1}
  EXPECT_EQ(L.send_ids[0], 0);
  EXPECT_EQ(L.send_ids[1], 1);
  EXPECT_EQ(L.send_ids[2], -1);
  EXPECT_EQ(L.send_weights[2], 0.0f);
  // row 3 = t1 to rank 1: ids {3, -1, 2}, weights {.6, 0, .4}
  EXPECT_EQ(L.send_ids[9], 3);
  EXPECT_EQ(L.send_ids[10], -1);
  EXPECT_EQ(L.send_ids[11], 2);
  EXPECT_FLOAT_EQ(L.send_weights[11], .4f);
  // per token: its rows in rank order
  const std::vector<int64_t> tok_ptr = {0, 2, 3, 3, 5};
  for (int t = 0; t < 5; ++t) EXPECT_EQ(L.tok_ptr[t], tok_ptr[t]);
  const std::vector<int64_t> tok_rows = {0, 2, 3, 1, 4};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(L.tok_rows[i], tok_rows[i]) << i;
  const std::vector<int64_t> expert_counts = {2, 2, 2, 2};
  for (int e = 0; e < 4; ++e) EXPECT_EQ(L.expert_counts[e], expert_counts[e]);
  const int64_t recv[2] = {7, 0};
  moe_ep_layout_set_recv(&L, recv);
  EXPECT_EQ(L.R, 7);
  EXPECT_EQ(L.recv_displs[1], 7);
}

TEST(EpLayout, RejectsIdsOutsideTheLayer) {
  Layout lay(2, 4, 1);
  const int32_t ids[2] = {1, 4};
  const float w[2] = {1, 1};
  EXPECT_EQ(moe_ep_layout_compute(&lay.L, 2, ids, w), moeErrorInvalidArgument);
  const int32_t neg[1] = {-2};
  EXPECT_EQ(moe_ep_layout_compute(&lay.L, 1, neg, w), moeErrorInvalidArgument);
}

TEST(EpLayout, ReduceSumsInRankOrderPlusShared) {
  const int64_t tok_ptr[3] = {0, 2, 2}, tok_rows[2] = {1, 0};
  const float back[4] = {1, 2, 10, 20}, shared[4] = {100, 200, 300, 400};
  float y[4];
  moe_ep_reduce_rows_host(y, back, shared, tok_ptr, tok_rows, 2, 2, moeFloat32);
  EXPECT_EQ(y[0], 111);
  EXPECT_EQ(y[1], 222);
  EXPECT_EQ(y[2], 300);  // a token with no experts: shared only
  EXPECT_EQ(y[3], 400);
  const int64_t idx[2] = {1, 1};
  float g[4];
  moe_ep_gather_rows_host(g, back, idx, 2, 2 * sizeof(float));
  EXPECT_EQ(g[0], 10);
  EXPECT_EQ(g[3], 20);
}

TEST(EpCostModel, LimitsAndDeepSeek) {
  moeEpCost_t c = MOE_EP_COST_INIT;
  ASSERT_EQ(moeEpCostModel(nullptr, 1, 4096, 7168, 256, 8, moeBFloat16, &c), moeSuccess);
  EXPECT_DOUBLE_EQ(c.ranks_per_token, 1.0);
  EXPECT_EQ(c.total_s, 0.0);
  // k = E: every token reaches every rank.
  ASSERT_EQ(moeEpCostModel(nullptr, 8, 16, 64, 16, 16, moeBFloat16, &c), moeSuccess);
  EXPECT_NEAR(c.ranks_per_token, 8.0, 1e-12);
  // DeepSeek-V3 on 8 GPUs (one node): all remote traffic on NVLink.
  ASSERT_EQ(moeEpCostModel(nullptr, 8, 4096, 7168, 256, 8, moeBFloat16, &c), moeSuccess);
  EXPECT_GT(c.ranks_per_token, 5.0);
  EXPECT_LT(c.ranks_per_token, 6.0);
  EXPECT_EQ(c.dispatch_bytes_ib, 0.0);
  EXPECT_EQ(c.messages_nvlink, 7);
  const double t8 = c.total_s;
  // 64 GPUs: IB carries most rows and dominates.
  ASSERT_EQ(moeEpCostModel(nullptr, 64, 4096, 7168, 256, 8, moeBFloat16, &c), moeSuccess);
  EXPECT_GT(c.dispatch_bytes_ib, c.dispatch_bytes_nvlink);
  EXPECT_GT(c.total_s, 4 * t8);
  EXPECT_EQ(moeEpCostModel(nullptr, 3, 1, 8, 256, 8, moeBFloat16, &c), moeErrorInvalidArgument);
}

// The size fields: a caller built against an older, smaller struct is served (its missing
// input fields keep their defaults, only its own output fields are written); a size outside
// [first field, sizeof] is refused.
TEST(EpCostModel, OlderCallersSmallerStructs) {
  moeEpCost_t full = MOE_EP_COST_INIT;
  ASSERT_EQ(moeEpCostModel(nullptr, 16, 128, 7168, 256, 8, moeBFloat16, &full), moeSuccess);
  moeEpCostParams_t old_params = MOE_EP_COST_PARAMS_INIT;
  old_params.size = offsetof(moeEpCostParams_t, ib_bw);  // knows gpus_per_node, nvlink_bw only
  old_params.ib_bw = -1.0;                                // beyond its size: must not be read
  moeEpCost_t old_cost;
  std::memset(&old_cost, 0x5A, sizeof old_cost);
  old_cost.size = offsetof(moeEpCost_t, dispatch_s);
  ASSERT_EQ(moeEpCostModel(&old_params, 16, 128, 7168, 256, 8, moeBFloat16, &old_cost),
            moeSuccess) << moeGetLastErrorMessage();
  EXPECT_EQ(old_cost.size, offsetof(moeEpCost_t, dispatch_s));
  EXPECT_DOUBLE_EQ(old_cost.ranks_per_token, full.ranks_per_token);
  EXPECT_DOUBLE_EQ(old_cost.combine_bytes_ib, full.combine_bytes_ib);
  unsigned char poison[sizeof(double)];
  std::memset(poison, 0x5A, sizeof poison);
  EXPECT_EQ(std::memcmp(&old_cost.total_s, poison, sizeof poison), 0) << "wrote past its size";
  moeEpCost_t c = MOE_EP_COST_INIT;
  c.size = sizeof(size_t);
  EXPECT_EQ(moeEpCostModel(nullptr, 16, 128, 7168, 256, 8, moeBFloat16, &c), moeErrorInvalidArgument);
  c.size = sizeof(moeEpCost_t) + 8;
  EXPECT_EQ(moeEpCostModel(nullptr, 16, 128, 7168, 256, 8, moeBFloat16, &c), moeErrorInvalidArgument);
  moeEpCostParams_t p = MOE_EP_COST_PARAMS_INIT;
  p.size = 0;
  EXPECT_EQ(moeEpCostModel(&p, 16, 128, 7168, 256, 8, moeBFloat16, &full), moeErrorInvalidArgument);
}

}  // namespace
