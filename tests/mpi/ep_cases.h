// Expert-parallel test cases shared by the loopback suite (threads as ranks, runs in CI) and
// the MPI suite (mpirun -np 1, 2, 4). Every rank draws every rank's inputs from one seed, so
// each can compute the single-process expected output with a layer holding all experts.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "moe/moe.h"
#include "moe/moe_ep.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace ep_test {

#define EP_ASSERT_OK(expr) ASSERT_EQ((expr), moeSuccess) << moeGetLastErrorMessage()

inline float RoundTo(float v, moeDtype_t dt) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if (dt == moeBFloat16) {
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
  } else if (dt == moeFloat16) {
    return v;  // not used by these suites
  }
  std::memcpy(&v, &u, 4);
  return v;
}

inline std::vector<uint8_t> ToBytes(const std::vector<float> &v, moeDtype_t dt) {
  if (dt == moeFloat32) {
    std::vector<uint8_t> b(v.size() * 4);
    if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
  }
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t u;
    float r = RoundTo(v[i], dt);
    std::memcpy(&u, &r, 4);
    uint16_t h = (uint16_t)(u >> 16);
    std::memcpy(&b[2 * i], &h, 2);
  }
  return b;
}

inline std::vector<float> FromBytes(const std::vector<uint8_t> &b, moeDtype_t dt) {
  if (dt == moeFloat32) {
    std::vector<float> v(b.size() / 4);
    if (!v.empty()) std::memcpy(v.data(), b.data(), b.size());
    return v;
  }
  std::vector<float> v(b.size() / 2);
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, &b[2 * i], 2);
    uint32_t u = (uint32_t)h << 16;
    std::memcpy(&v[i], &u, 4);
  }
  return v;
}

// The weights of a whole layer (all E experts), fp32 values representable in cfg.dtype.
struct Weights {
  moeLayerConfig_t cfg;
  std::vector<float> router, router_bias, gate_up, down, shared_gate_up, shared_down;
  int64_t I, Is, H;
};

inline Weights MakeWeights(const moeLayerConfig_t &cfg, uint64_t seed, float rank_bias[] = nullptr,
                           int P = 1) {
  Weights w;
  w.cfg = cfg;
  w.H = cfg.hidden;
  w.I = cfg.intermediate;
  w.Is = cfg.shared_intermediate ? cfg.shared_intermediate : cfg.intermediate;
  std::mt19937_64 g(seed);
  auto fill = [&](std::vector<float> &v, size_t n, float scale) {
    std::uniform_real_distribution<float> d(-scale, scale);
    v.resize(n);
    for (auto &x : v) x = RoundTo(d(g), cfg.dtype);
  };
  const int64_t E = cfg.num_experts, H = w.H;
  fill(w.router, (size_t)(E * H), 1.0f / std::sqrt((float)H));
  w.router_bias.assign((size_t)E, 0.0f);
  if (rank_bias)  // a bias per block of E/P experts: skews routing towards some ranks
    for (int64_t e = 0; e < E; ++e) w.router_bias[e] = rank_bias[e / (E / P)];
  fill(w.gate_up, (size_t)(E * 2 * w.I * H), 1.0f / std::sqrt((float)H));
  fill(w.down, (size_t)(E * H * w.I), 1.0f / std::sqrt((float)w.I));
  fill(w.shared_gate_up, (size_t)(cfg.num_shared_experts * 2 * w.Is * H), 1.0f / std::sqrt((float)H));
  fill(w.shared_down, (size_t)(cfg.num_shared_experts * H * w.Is), 1.0f / std::sqrt((float)w.Is));
  return w;
}

// Router, shared experts and the routed experts [begin, begin + count) of w into layer.
inline moeStatus_t Upload(moeLayer_t layer, const Weights &w, int32_t begin, int32_t count) {
  const int64_t H = w.H, I = w.I, Is = w.Is;
  moeStatus_t st = moeLayerSetRouterWeights(layer, w.router.data(), w.router_bias.data(), moeFloat32);
  for (int32_t e = begin; e < begin + count && st == moeSuccess; ++e) {
    const float *gu = w.gate_up.data() + (size_t)e * 2 * I * H;
    st = moeLayerSetExpertWeights(layer, e, gu, gu + I * H, w.down.data() + (size_t)e * H * I,
                                  moeFloat32);
  }
  for (int32_t s = 0; s < w.cfg.num_shared_experts && st == moeSuccess; ++s) {
    const float *gu = w.shared_gate_up.data() + (size_t)s * 2 * Is * H;
    st = moeLayerSetSharedExpertWeights(layer, s, gu, gu + Is * H,
                                        w.shared_down.data() + (size_t)s * H * Is, moeFloat32);
  }
  return st;
}

inline std::vector<float> Tokens(int64_t T, int64_t H, moeDtype_t dt, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> x((size_t)(T * H));
  for (auto &v : x) v = RoundTo(d(g), dt);
  return x;
}

// Single process, all experts, CPU backend: the expected output of every rank's tokens.
inline std::vector<float> Reference(const Weights &w, const std::vector<float> &x, int64_t T) {
  std::vector<float> y;
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t ctx = nullptr;
  moeLayer_t layer = nullptr;
  if (moeContextCreate(&ctx, &cc) != moeSuccess) return y;
  if (moeLayerCreate(&layer, ctx, &w.cfg) == moeSuccess &&
      Upload(layer, w, 0, w.cfg.num_experts) == moeSuccess) {
    auto xb = ToBytes(x, w.cfg.dtype);
    std::vector<uint8_t> yb(xb.size());
    if (T == 0 ||
        moeLayerForward(layer, T, xb.data(), yb.data(), nullptr, nullptr, 0, nullptr) == moeSuccess)
      y = FromBytes(yb, w.cfg.dtype);
  }
  moeLayerDestroy(layer);
  moeContextDestroy(ctx);
  return y;
}

inline double RelError(const float *got, const float *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    double d = (double)got[i] - ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline double Tol(moeDtype_t dt) { return dt == moeFloat32 ? 1e-5 : 1e-2; }

// Backend memory for x / y / workspace on the context's backend.
struct Buffer {
  moeBackend_t backend = moeBackendCpu;
  void *ptr = nullptr;
  size_t bytes = 0;
  Buffer(moeBackend_t b, size_t n) : backend(b), bytes(n) {
#ifdef MOE_WITH_CUDA
    if (b == moeBackendCuda) {
      if (cudaMalloc(&ptr, n ? n : 1) != cudaSuccess) ptr = nullptr;
      return;
    }
#endif
    ptr = std::aligned_alloc(256, (n + 255) / 256 * 256 + 256);  // workspace alignment
    std::memset(ptr, 0xff, n);  // NaN poison in every dtype
  }
  ~Buffer() {
#ifdef MOE_WITH_CUDA
    if (backend == moeBackendCuda) { cudaFree(ptr); return; }
#endif
    std::free(ptr);
  }
  void Put(const std::vector<uint8_t> &h) {
    if (h.empty()) return;
#ifdef MOE_WITH_CUDA
    if (backend == moeBackendCuda) { cudaMemcpy(ptr, h.data(), h.size(), cudaMemcpyHostToDevice); return; }
#endif
    std::memcpy(ptr, h.data(), h.size());
  }
  std::vector<uint8_t> Get(size_t n) const {
    std::vector<uint8_t> h(n);
    if (n == 0) return h;
#ifdef MOE_WITH_CUDA
    if (backend == moeBackendCuda) { cudaMemcpy(h.data(), ptr, n, cudaMemcpyDeviceToHost); return h; }
#endif
    std::memcpy(h.data(), ptr, n);
    return h;
  }
};

// One EP case: token counts per rank, a config, optional per-rank router biases.
struct Case {
  moeLayerConfig_t cfg;
  std::vector<int64_t> tokens;  // per rank (size P)
  uint64_t seed = 1234;
  std::vector<float> rank_bias; // per rank, or empty
  bool user_workspace = false;
  int repeat = 1;               // forwards; every one must give bitwise the same y
};

inline moeLayerConfig_t SmallConfig(moeDtype_t dt, int32_t E, int32_t k, int32_t shared) {
  moeLayerConfig_t c = MOE_LAYER_CONFIG_INIT;
  c.hidden = 24;
  c.intermediate = 16;
  c.num_experts = E;
  c.top_k = k;
  c.routing = moeRoutingTopKSoftmax;
  c.dtype = dt;
  c.num_shared_experts = shared;
  c.shared_intermediate = shared ? 12 : 0;
  return c;
}

// Runs the case on this rank of comm; records gtest failures (call from any thread).
// backend: that of the communicator's context (where x, y and the workspace live).
// Returns the timings of the last forward.
inline moeEpTimings_t RunCase(moeEpComm_t comm, const Case &cs,
                              moeBackend_t backend = moeBackendCpu) {
  moeEpTimings_t tm = MOE_EP_TIMINGS_INIT;
  int rank = 0, P = 1;
  moeEpCommGetRank(comm, &rank);
  moeEpCommGetSize(comm, &P);
  EXPECT_EQ((int)cs.tokens.size(), P);
  const moeDtype_t dt = cs.cfg.dtype;
  std::vector<float> rb = cs.rank_bias;
  Weights w = MakeWeights(cs.cfg, cs.seed, rb.empty() ? nullptr : rb.data(), P);
  int64_t T_all = 0, off = 0;
  for (int r = 0; r < P; ++r) {
    if (r == rank) off = T_all;
    T_all += cs.tokens[r];
  }
  const int64_t H = cs.cfg.hidden, T = cs.tokens[rank];
  std::vector<float> x = Tokens(T_all, H, dt, cs.seed + 1);
  std::vector<float> ref = Reference(w, x, T_all);
  EXPECT_EQ(ref.size(), (size_t)(T_all * H)) << "reference forward failed: " << moeGetLastErrorMessage();

  moeEpLayer_t ep = nullptr;
  moeEpLayerConfig_t epc = MOE_EP_LAYER_CONFIG_INIT;
  epc.collect_timings = 1;
  moeStatus_t st = moeEpLayerCreate(&ep, comm, &cs.cfg, &epc);
  EXPECT_EQ(st, moeSuccess) << moeGetLastErrorMessage();
  if (st != moeSuccess) return tm;
  moeLayer_t local = nullptr;
  int32_t begin = -1, count = -1;
  EXPECT_EQ(moeEpLayerGetLocalLayer(ep, &local), moeSuccess);
  EXPECT_EQ(moeEpLayerGetExpertRange(ep, &begin, &count), moeSuccess);
  EXPECT_EQ(begin, rank * (cs.cfg.num_experts / P));
  EXPECT_EQ(count, cs.cfg.num_experts / P);
  // Upload failures must not leave peers waiting: report them through forward's agreement.
  moeStatus_t up = Upload(local, w, begin, count);
  EXPECT_EQ(up, moeSuccess) << moeGetLastErrorMessage();
  // An expert outside the range is rejected.
  if (P > 1) {
    int32_t other = (begin + count) % cs.cfg.num_experts;
    const float *gu = w.gate_up.data();
    EXPECT_NE(moeLayerSetExpertWeights(local, other, gu, gu, w.down.data(), moeFloat32), moeSuccess);
  }

  const size_t es = dt == moeFloat32 ? 4 : 2;
  std::vector<float> xs(x.begin() + off * H, x.begin() + (off + T) * H);
  Buffer xb(backend, (size_t)(T * H) * es), yb(backend, (size_t)(T * H) * es);
  xb.Put(ToBytes(xs, dt));
  size_t ws_bytes = 0;
  int64_t T_max = 0;
  for (int64_t t : cs.tokens) T_max = t > T_max ? t : T_max;
  EXPECT_EQ(moeEpLayerGetWorkspaceSize(ep, T_max, &ws_bytes), moeSuccess);
  Buffer ws(backend, cs.user_workspace ? ws_bytes : 0);
  std::vector<uint8_t> first;
  for (int it = 0; it < cs.repeat; ++it) {
    st = moeEpLayerForward(ep, T, xb.ptr, yb.ptr, nullptr, cs.user_workspace ? ws.ptr : nullptr,
                           cs.user_workspace ? ws_bytes : 0, nullptr);
    EXPECT_EQ(st, moeSuccess) << "rank " << rank << ": " << moeGetLastErrorMessage();
    if (st != moeSuccess) break;
    std::vector<uint8_t> got = yb.Get((size_t)(T * H) * es);
    if (it == 0) {
      first = got;
      std::vector<float> y = FromBytes(got, dt);
      if (ref.size() == (size_t)(T_all * H) && T > 0) {
        double err = RelError(y.data(), ref.data() + off * H, y.size());
        EXPECT_LE(err, Tol(dt)) << "rank " << rank << " of " << P << ", T = " << T;
      }
    } else {
      EXPECT_TRUE(got == first) << "rank " << rank << ": forward " << it << " differs bitwise";
    }
  }
  EXPECT_EQ(moeEpLayerGetTimings(ep, &tm), moeSuccess);
  EXPECT_EQ(moeEpLayerDestroy(ep), moeSuccess);
  return tm;
}


// ---- the cases: each is called on every rank (a thread in loopback, a process with MPI) ----
inline std::vector<int64_t> PerRank(int P, std::vector<int64_t> pattern) {
  std::vector<int64_t> t((size_t)P);
  for (int r = 0; r < P; ++r) t[r] = pattern[r % pattern.size()];
  return t;
}

inline int Size(moeEpComm_t c) { int p = 0; moeEpCommGetSize(c, &p); return p; }
inline int Rank(moeEpComm_t c) { int r = 0; moeEpCommGetRank(c, &r); return r; }

// fp32, a shared expert, a rank with zero tokens, two forwards bitwise equal.
inline void CaseFp32(moeEpComm_t c, moeBackend_t b) {
  Case cs;
  cs.cfg = SmallConfig(moeFloat32, 8, 2, 1);
  cs.tokens = PerRank(Size(c), {5, 0, 13, 3});
  cs.repeat = 2;
  RunCase(c, cs, b);
}

// bf16, k = 4 of 16, caller workspace, token counts not multiples of anything.
inline void CaseBf16(moeEpComm_t c, moeBackend_t b) {
  Case cs;
  cs.cfg = SmallConfig(moeBFloat16, 16, 4, 0);
  cs.cfg.routing = moeRoutingSoftmaxTopK;
  cs.cfg.norm_topk_prob = 1;
  cs.tokens = PerRank(Size(c), {17, 9, 0, 31});
  cs.user_workspace = true;
  RunCase(c, cs, b);
}

// DeepSeek-V3 routing: sigmoid scores, 4 groups of 4 keep 2, k = 4, renormalized and scaled.
inline void CaseDeepSeek(moeEpComm_t c, moeBackend_t b) {
  Case cs;
  cs.cfg = SmallConfig(moeBFloat16, 16, 4, 1);
  cs.cfg.routing = moeRoutingSigmoidGroupTopK;
  cs.cfg.n_group = 4;
  cs.cfg.topk_group = 2;
  cs.cfg.norm_topk_prob = 1;
  cs.cfg.routed_scaling_factor = 2.5f;
  cs.tokens = PerRank(Size(c), {12, 5, 0, 20});
  RunCase(c, cs, b);
}

// Llama-4 routing: the weight scales the routed expert's input, on the rank that holds it.
inline void CaseInputScale(moeEpComm_t c, moeBackend_t b) {
  Case cs;
  cs.cfg = SmallConfig(moeFloat32, 8, 1, 1);
  cs.cfg.routing = moeRoutingSigmoidTop1InputScale;
  cs.tokens = PerRank(Size(c), {9, 4, 15, 0});
  RunCase(c, cs, b);
}

// k = E: every token reaches every rank.
inline void CaseKEqualsE(moeEpComm_t c, moeBackend_t b) {
  Case cs;
  cs.cfg = SmallConfig(moeFloat32, 8, 8, 0);
  cs.tokens = PerRank(Size(c), {4, 1});
  moeEpTimings_t tm = RunCase(c, cs, b);
  EXPECT_EQ(tm.tokens_sent, cs.tokens[Rank(c)] * Size(c));  // once per rank, not once per expert
}

// A router bias sends every selection to rank 0's experts.
inline void CaseAllToOneRank(moeEpComm_t c, moeBackend_t b) {
  const int P = Size(c);
  Case cs;
  cs.cfg = SmallConfig(moeFloat32, 8, 2, 1);
  cs.tokens = PerRank(P, {6, 11, 0, 2});
  cs.rank_bias.assign((size_t)P, 0.0f);
  cs.rank_bias[0] = 50.0f;
  moeEpTimings_t tm = RunCase(c, cs, b);
  int64_t all = 0;
  for (int64_t t : cs.tokens) all += t;
  EXPECT_EQ(tm.tokens_received, Rank(c) == 0 ? all : 0);
  EXPECT_EQ(tm.tokens_sent, cs.tokens[Rank(c)]);
}

// Skewed routing: ranks get very different loads.
inline void CaseUneven(moeEpComm_t c, moeBackend_t b) {
  const int P = Size(c);
  Case cs;
  cs.cfg = SmallConfig(moeBFloat16, 8, 2, 1);
  cs.tokens = PerRank(P, {23, 3, 8, 1});
  const float bias[4] = {2.0f, 0.0f, 1.0f, -3.0f};
  for (int r = 0; r < P; ++r) cs.rank_bias.push_back(bias[r % 4]);
  RunCase(c, cs, b);
}

// No rank has tokens: the exchange still completes.
inline void CaseNoTokens(moeEpComm_t c, moeBackend_t b) {
  Case cs;
  cs.cfg = SmallConfig(moeFloat32, 8, 2, 1);
  cs.tokens = PerRank(Size(c), {0});
  moeEpTimings_t tm = RunCase(c, cs, b);
  EXPECT_EQ(tm.tokens_sent, 0);
  EXPECT_EQ(tm.tokens_received, 0);
}

// Configs that differ across ranks: every rank fails with InvalidConfig, nobody hangs.
inline void CaseConfigMismatch(moeEpComm_t c, moeBackend_t b) {
  const int P = Size(c), rank = Rank(c);
  moeLayerConfig_t cfg = SmallConfig(moeFloat32, 8, 2, 0);
  if (rank == P - 1) cfg.top_k = 1;
  moeEpLayer_t ep = reinterpret_cast<moeEpLayer_t>(1);
  moeStatus_t st = moeEpLayerCreate(&ep, c, &cfg, nullptr);
  if (P == 1) {  // nothing to differ from
    EXPECT_EQ(st, moeSuccess);
    moeEpLayerDestroy(st == moeSuccess ? ep : nullptr);
    return;
  }
  EXPECT_EQ(ep, nullptr);
  EXPECT_EQ(st, moeErrorInvalidConfig) << "rank " << rank;
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("differ"), std::string::npos)
      << moeGetLastErrorMessage();
}

// E not divisible by the EP size: a clear error naming both, on every rank.
inline void CaseIndivisible(moeEpComm_t c, moeBackend_t b) {
  const int P = Size(c);
  if (P == 1) return;
  moeLayerConfig_t cfg = SmallConfig(moeFloat32, 2 * P + 1, 2, 0);
  moeEpLayer_t ep = nullptr;
  EXPECT_EQ(moeEpLayerCreate(&ep, c, &cfg, nullptr), moeErrorInvalidConfig);
  std::string msg = moeGetLastErrorMessage();
  EXPECT_NE(msg.find("E = " + std::to_string(2 * P + 1)), std::string::npos) << msg;
  EXPECT_NE(msg.find("EP size " + std::to_string(P)), std::string::npos) << msg;
  EXPECT_EQ(ep, nullptr);
}

// A rank-local failure during create (an invalid config on one rank only): every rank fails.
inline void CaseCreateFailsOnOneRank(moeEpComm_t c, moeBackend_t b) {
  const int P = Size(c), rank = Rank(c);
  moeLayerConfig_t cfg = SmallConfig(moeFloat32, 8, 2, 0);
  if (rank == 0) cfg.hidden = 0;  // invalid on rank 0 only
  moeEpLayer_t ep = nullptr;
  EXPECT_NE(moeEpLayerCreate(&ep, c, &cfg, nullptr), moeSuccess) << "rank " << rank << " of " << P;
  EXPECT_EQ(ep, nullptr);
}

// A rank-local failure during forward (router weights never set on the last rank), and a
// workspace too small on rank 0: every rank returns an error, and the layer still works after.
inline void CaseForwardFailsOnOneRank(moeEpComm_t c, moeBackend_t b) {
  const int P = Size(c), rank = Rank(c);
  moeLayerConfig_t cfg = SmallConfig(moeFloat32, 8, 2, 0);
  Weights w = MakeWeights(cfg, 77);
  moeEpLayer_t ep = nullptr;
  EP_ASSERT_OK(moeEpLayerCreate(&ep, c, &cfg, nullptr));
  moeLayer_t local = nullptr;
  int32_t begin = 0, count = 0;
  EP_ASSERT_OK(moeEpLayerGetLocalLayer(ep, &local));
  EP_ASSERT_OK(moeEpLayerGetExpertRange(ep, &begin, &count));
  const int64_t T = 5, H = cfg.hidden;
  Buffer x(b, (size_t)(T * H) * 4), y(b, (size_t)(T * H) * 4);
  x.Put(ToBytes(Tokens(T, H, cfg.dtype, 5 + rank), cfg.dtype));
  if (rank != P - 1) EP_ASSERT_OK(Upload(local, w, begin, count));
  moeStatus_t st = moeEpLayerForward(ep, T, x.ptr, y.ptr, nullptr, nullptr, 0, nullptr);
  EXPECT_EQ(st, moeErrorInvalidState) << "rank " << rank << ": " << moeGetLastErrorMessage();
  if (rank == P - 1) EP_ASSERT_OK(Upload(local, w, begin, count));
  // Workspace too small on rank 0 only.
  size_t need = 0;
  EP_ASSERT_OK(moeEpLayerGetWorkspaceSize(ep, T, &need));
  Buffer ws(b, need);
  st = moeEpLayerForward(ep, T, x.ptr, y.ptr, nullptr, ws.ptr, rank == 0 ? 256 : need, nullptr);
  EXPECT_NE(st, moeSuccess) << "rank " << rank;
  // Bad arguments on one rank (negative T) must not hang the others either.
  st = moeEpLayerForward(ep, rank == 0 ? -1 : T, x.ptr, y.ptr, nullptr, nullptr, 0, nullptr);
  EXPECT_EQ(st, moeErrorInvalidArgument) << "rank " << rank;
  // And everything is fine again.
  st = moeEpLayerForward(ep, T, x.ptr, y.ptr, nullptr, ws.ptr, need, nullptr);
  EXPECT_EQ(st, moeSuccess) << "rank " << rank << ": " << moeGetLastErrorMessage();
  EXPECT_EQ(moeEpLayerDestroy(ep), moeSuccess);
}

// Caller-owned routing (moeEpLayerForwardRouted) equals routing inside the layer.
inline void CaseRouted(moeEpComm_t c, moeBackend_t b) {
  const int rank = Rank(c);
  moeLayerConfig_t cfg = SmallConfig(moeFloat32, 8, 2, 1);
  Weights w = MakeWeights(cfg, 99);
  moeEpLayer_t ep = nullptr;
  EP_ASSERT_OK(moeEpLayerCreate(&ep, c, &cfg, nullptr));
  moeLayer_t local = nullptr;
  int32_t begin = 0, count = 0;
  EP_ASSERT_OK(moeEpLayerGetLocalLayer(ep, &local));
  EP_ASSERT_OK(moeEpLayerGetExpertRange(ep, &begin, &count));
  EP_ASSERT_OK(Upload(local, w, begin, count));
  const int64_t T = 7 + rank, H = cfg.hidden, K = cfg.top_k;
  Buffer x(b, (size_t)(T * H) * 4), y1(b, (size_t)(T * H) * 4), y2(b, (size_t)(T * H) * 4);
  Buffer ids(b, (size_t)(T * K) * 4), wts(b, (size_t)(T * K) * 4);
  x.Put(ToBytes(Tokens(T, H, cfg.dtype, 1000 + rank), cfg.dtype));
  EP_ASSERT_OK(moeEpLayerForward(ep, T, x.ptr, y1.ptr, nullptr, nullptr, 0, nullptr));
  EP_ASSERT_OK(moeLayerRoute(local, T, x.ptr, (int32_t *)ids.ptr, (float *)wts.ptr, nullptr,
                             nullptr, 0, nullptr));
  EP_ASSERT_OK(moeEpLayerForwardRouted(ep, T, x.ptr, (const int32_t *)ids.ptr,
                                       (const float *)wts.ptr, y2.ptr, nullptr, 0, nullptr));
  EXPECT_TRUE(y1.Get((size_t)(T * H) * 4) == y2.Get((size_t)(T * H) * 4));
  // Argument checks that stay local (no communication).
  size_t bytes = 0;
  EXPECT_EQ(moeEpLayerGetWorkspaceSize(ep, -1, &bytes), moeErrorInvalidArgument);
  moeEpTimings_t bad = MOE_EP_TIMINGS_INIT;
  bad.size = 8;
  EXPECT_EQ(moeEpLayerGetTimings(ep, &bad), moeErrorInvalidArgument);
  EXPECT_EQ(moeEpLayerGetLocalLayer(ep, nullptr), moeErrorInvalidArgument);
  EXPECT_EQ(moeEpLayerDestroy(ep), moeSuccess);
}

// Every case above, by name: the suites that run on threads (loopback, NCCL) take them all.
using CaseFn = void (*)(moeEpComm_t, moeBackend_t);
struct NamedCase {
  const char *name;
  CaseFn fn;
};
inline const NamedCase kCases[] = {
    {"Fp32MatchesSingleProcess", CaseFp32},
    {"Bf16MatchesSingleProcess", CaseBf16},
    {"TopKEqualsESendsEachTokenOncePerRank", CaseKEqualsE},
    {"AllTokensToOneRank", CaseAllToOneRank},
    {"UnevenRouting", CaseUneven},
    {"NoRankHasTokens", CaseNoTokens},
    {"ConfigsThatDifferFailEveryRank", CaseConfigMismatch},
    {"ExpertsNotDivisibleByEpSize", CaseIndivisible},
    {"CreateFailureOnOneRankFailsEveryRank", CaseCreateFailsOnOneRank},
    {"ForwardFailureOnOneRankFailsEveryRank", CaseForwardFailsOnOneRank},
    {"CallerRoutingEqualsLayerRouting", CaseRouted},
    {"DeepSeekV3Routing", CaseDeepSeek},
    {"InputScaledRouting", CaseInputScale},
};
inline constexpr int kNumCases = (int)(sizeof kCases / sizeof kCases[0]);

}  // namespace ep_test
