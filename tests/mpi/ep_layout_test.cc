// The dispatch layout (csrc/ep/layout.c, internal) and the cost model, without any transport.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <string>
#include <algorithm>
#include <vector>

#include "ep/layout.h"
#ifdef MOE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ep_layout.h"
#endif
#include "moe/moe_ep.h"

namespace {

// One layout's buffers in host memory, sized for T tokens, and the host driver run over them.
struct HostLayout {
  moeEpLayout L;
  std::vector<int64_t> pos, tok_ptr, send_token, tok_rows, summary;
  std::vector<int32_t> send_ids;
  std::vector<float> send_w;
  moeEpLayoutArgs a{};

  HostLayout(int P, int E, int K) { EXPECT_EQ(moe_ep_layout_init(&L, P, E, K), moeSuccess); }
  ~HostLayout() { moe_ep_layout_free(&L); }

  moeStatus_t Build(int64_t T, const int32_t *ids, const float *w) {
    const int P = L.P, K = L.K;
    const int64_t S = T * std::min(K, P);
    pos.assign(P * T + 1, -7);  // every entry is written: poison shows one that is not
    tok_ptr.assign(T + 1, -7);
    send_token.assign(S, -7);
    tok_rows.assign(S, -7);
    send_ids.assign(S * K, -7);
    send_w.assign(S * K, -7.0f);
    summary.assign(P + 2, -7);
    a = moeEpLayoutArgs{P, L.E, L.E_per, K, T, ids, w, pos.data(), tok_ptr.data(),
                        send_token.data(), tok_rows.data(), send_ids.data(), send_w.data(),
                        summary.data(), nullptr, 0};
    moe_ep_layout_build_host(&a);
    const int64_t bad = summary[P + 1];
    return moe_ep_layout_finish(&L, T, summary.data(), bad == MOE_EP_NO_BAD_ID ? 0 : ids[bad]);
  }
};

TEST(EpLayout, TokenGoesOncePerRankWithItsLocalIdsOnly) {
  // P = 2, E = 4 (rank 0: experts 0,1; rank 1: 2,3), K = 3.
  HostLayout lay(2, 4, 3);
  const std::vector<int32_t> ids = {0, 1, 2,    // t0: rank 0 (twice) and rank 1
                                    3, -1, 2,   // t1: rank 1 only (twice)
                                    -1, -1, -1, // t2: nowhere
                                    1, 3, 0};   // t3: both
  const std::vector<float> w = {.5f, .3f, .2f, .6f, 0, .4f, 0, 0, 0, .1f, .2f, .7f};
  ASSERT_EQ(lay.Build(4, ids.data(), w.data()), moeSuccess) << moeGetLastErrorMessage();
  const moeEpLayout &L = lay.L;
  EXPECT_EQ(L.S, 5);
  EXPECT_EQ(L.send_counts[0], 2);  // t0, t3
  EXPECT_EQ(L.send_counts[1], 3);  // t0, t1, t3
  EXPECT_EQ(L.send_displs[1], 2);
  const std::vector<int64_t> send_token = {0, 3, 0, 1, 3};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(lay.send_token[i], send_token[i]) << i;
  // row 0 = t0 to rank 0: ids {0, 1, -1}
  EXPECT_EQ(lay.send_ids[0], 0);
  EXPECT_EQ(lay.send_ids[1], 1);
  EXPECT_EQ(lay.send_ids[2], -1);
  EXPECT_EQ(lay.send_w[2], 0.0f);
  // row 3 = t1 to rank 1: ids {3, -1, 2}, weights {.6, 0, .4}
  EXPECT_EQ(lay.send_ids[9], 3);
  EXPECT_EQ(lay.send_ids[10], -1);
  EXPECT_EQ(lay.send_ids[11], 2);
  EXPECT_FLOAT_EQ(lay.send_w[11], .4f);
  // per token: its rows in rank order
  const std::vector<int64_t> tok_ptr = {0, 2, 3, 3, 5};
  for (int t = 0; t < 5; ++t) EXPECT_EQ(lay.tok_ptr[t], tok_ptr[t]);
  const std::vector<int64_t> tok_rows = {0, 2, 3, 1, 4};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(lay.tok_rows[i], tok_rows[i]) << i;
  const int64_t recv[2] = {7, 0};
  moe_ep_layout_set_recv(&lay.L, recv);
  EXPECT_EQ(L.R, 7);
  EXPECT_EQ(L.recv_displs[1], 7);
}

TEST(EpLayout, RejectsIdsOutsideTheLayerNamingTheFirst) {
  HostLayout lay(2, 4, 2);
  const int32_t ids[4] = {1, -1, 0, 4};
  const float w[4] = {1, 0, 1, 1};
  EXPECT_EQ(lay.Build(2, ids, w), moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("expert_ids[1][1] = 4"), std::string::npos)
      << moeGetLastErrorMessage();
  EXPECT_EQ(lay.L.S, 0);
  const int32_t neg[2] = {-2, 0};
  EXPECT_EQ(lay.Build(1, neg, w), moeErrorInvalidArgument);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("= -2"), std::string::npos);
}

// The summary agrees with a direct count, on random routings with -1 holes (host driver).
TEST(EpLayout, CountsMatchADirectCount) {
  const int P = 4, E = 16, K = 5;
  const int64_t T = 333;
  std::mt19937 rng(7);
  std::vector<int32_t> ids(T * K);
  std::vector<float> w(T * K);
  for (auto &e : ids) e = static_cast<int32_t>(rng() % (E + 3)) - 1;  // some -1
  for (auto &e : ids) if (e >= E) e = -1;
  for (auto &x : w) x = static_cast<float>(rng() % 1000) / 1000.0f;
  HostLayout lay(P, E, K);
  ASSERT_EQ(lay.Build(T, ids.data(), w.data()), moeSuccess);
  std::vector<int64_t> expect(P, 0);
  for (int64_t t = 0; t < T; ++t)
    for (int r = 0; r < P; ++r) {
      bool hit = false;
      for (int j = 0; j < K; ++j) hit = hit || (ids[t * K + j] >= 0 && ids[t * K + j] / (E / P) == r);
      expect[r] += hit;
    }
  int64_t S = 0;
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(lay.L.send_counts[r], expect[r]) << r;
    EXPECT_EQ(lay.L.send_displs[r], S) << r;
    S += expect[r];
  }
  EXPECT_EQ(lay.L.S, S);
  // every selection is in exactly one sent row of its token, with its weight
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < K; ++j) {
      const int32_t e = ids[t * K + j];
      int found = 0;
      for (int64_t i = lay.tok_ptr[t]; i < lay.tok_ptr[t + 1]; ++i) {
        const int64_t row = lay.tok_rows[i];
        EXPECT_EQ(lay.send_token[row], t);
        if (e >= 0 && lay.send_ids[row * K + j] == e) {
          ++found;
          EXPECT_EQ(lay.send_w[row * K + j], w[t * K + j]);
        }
      }
      EXPECT_EQ(found, e >= 0 ? 1 : 0) << t << "," << j;
    }
}

#ifdef MOE_WITH_CUDA
// The device driver against the host driver: every array bitwise equal, on random routings with
// holes, one rank, more ranks than slots, and a bad id. Device buffers start poisoned.
class DeviceArray {
 public:
  explicit DeviceArray(size_t bytes) : bytes_(bytes ? bytes : 1) {
    if (cudaMalloc(&p_, bytes_) != cudaSuccess) p_ = nullptr;
    if (p_) cudaMemset(p_, 0xA5, bytes_);
  }
  ~DeviceArray() { cudaFree(p_); }
  template <typename T> T *as() { return static_cast<T *>(p_); }
  template <typename T> std::vector<T> Get(size_t n) {
    std::vector<T> v(n);
    cudaDeviceSynchronize();
    if (n) cudaMemcpy(v.data(), p_, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
  bool ok() const { return p_ != nullptr; }

 private:
  void *p_ = nullptr;
  size_t bytes_;
};

struct DeviceCase {
  int P, E, K;
  int64_t T;
  bool bad;
};

TEST(EpLayoutCuda, DeviceDriverEqualsHostDriver) {
  int n = 0;
  if (moeGetCudaDeviceCount(&n) != moeSuccess || n == 0) GTEST_SKIP() << "no GPU";
  const DeviceCase cases[] = {{4, 16, 5, 333, false}, {8, 64, 8, 1000, false}, {1, 8, 2, 17, false},
                              {16, 16, 2, 5, false},  {2, 4, 1, 1, false},     {4, 16, 3, 50, true}};
  for (const DeviceCase &c : cases) {
    SCOPED_TRACE(testing::Message() << "P=" << c.P << " E=" << c.E << " K=" << c.K << " T=" << c.T);
    std::mt19937 rng(static_cast<unsigned>(c.P * 131 + c.T));
    std::vector<int32_t> ids(c.T * c.K);
    std::vector<float> w(c.T * c.K);
    for (auto &e : ids) e = static_cast<int32_t>(rng() % (c.E + 2)) - 1;
    for (auto &e : ids) if (e >= c.E) e = -1;
    if (c.bad) ids[(c.T / 2) * c.K + 1] = c.E + 3;
    for (auto &x : w) x = static_cast<float>(rng() % 1000) / 1000.0f;
    HostLayout host(c.P, c.E, c.K);
    const moeStatus_t host_st = host.Build(c.T, ids.data(), w.data());
    ASSERT_EQ(host_st, c.bad ? moeErrorInvalidArgument : moeSuccess);

    const int64_t S = c.T * std::min(c.K, c.P);
    DeviceArray d_ids(ids.size() * 4), d_w(w.size() * 4), pos((c.P * c.T + 1) * 8),
        tok_ptr((c.T + 1) * 8), send_token(S * 8), tok_rows(S * 8), send_ids(S * c.K * 4),
        send_w(S * c.K * 4), summary((c.P + 2) * 8);
    const size_t scan_bytes = moe_ep_layout_scan_bytes_cuda(c.P, c.T);
    ASSERT_GT(scan_bytes, 0u);
    DeviceArray scan(scan_bytes);
    ASSERT_TRUE(d_ids.ok() && d_w.ok() && pos.ok() && scan.ok() && summary.ok());
    cudaMemcpy(d_ids.as<int32_t>(), ids.data(), ids.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(d_w.as<float>(), w.data(), w.size() * 4, cudaMemcpyHostToDevice);
    moeEpLayoutArgs a{c.P, c.E, c.E / c.P, c.K, c.T, d_ids.as<int32_t>(), d_w.as<float>(),
                      pos.as<int64_t>(), tok_ptr.as<int64_t>(), send_token.as<int64_t>(),
                      tok_rows.as<int64_t>(), send_ids.as<int32_t>(), send_w.as<float>(),
                      summary.as<int64_t>(), scan.as<void>(), scan_bytes};
    ASSERT_EQ(moe_ep_layout_build_cuda(&a, nullptr), 0);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(summary.Get<int64_t>(c.P + 2), host.summary);
    // A refused layout is still consistent (bad ids skipped), so compare it all: both drivers
    // must stay inside their arrays until the host sees the summary.
    const int64_t rows = c.bad ? host.summary[c.P] : host.L.S;
    EXPECT_EQ(pos.Get<int64_t>(c.P * c.T + 1), host.pos);
    EXPECT_EQ(tok_ptr.Get<int64_t>(c.T + 1), host.tok_ptr);
    auto head = [rows](const std::vector<int64_t> &v, int64_t n) {
      return std::vector<int64_t>(v.begin(), v.begin() + n);
    };
    EXPECT_EQ(send_token.Get<int64_t>(rows), head(host.send_token, rows));
    EXPECT_EQ(tok_rows.Get<int64_t>(rows), head(host.tok_rows, rows));
    EXPECT_EQ(send_ids.Get<int32_t>(rows * c.K),
              std::vector<int32_t>(host.send_ids.begin(), host.send_ids.begin() + rows * c.K));
    const auto dw = send_w.Get<float>(rows * c.K);
    EXPECT_EQ(std::memcmp(dw.data(), host.send_w.data(), dw.size() * 4), 0);
  }
}
#endif

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
