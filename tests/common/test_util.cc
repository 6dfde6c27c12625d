// Shared test helpers (see test_util.h). Uses only the public API: dtype rounding is written
// here again on purpose, so that the tests do not share the library's conversion code.
#include "common/test_util.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

namespace moe_test {
namespace {

// ---- deterministic random numbers: splitmix64 + Box-Muller --------------------------------------
struct Rng {
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
  uint64_t s;
  bool has_spare = false;
  double spare = 0.0;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return ((Next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0, 1)
  double Normal() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    double u1 = Uniform(), u2 = Uniform();
    double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    spare = r * std::sin(a);
    has_spare = true;
    return r * std::cos(a);
  }
};

// ---- dtype rounding (round to nearest even, NaN stays NaN) ------------------------------------
uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t F32ToBf16(float f) {
  uint32_t u = Bits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float Bf16ToF32(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

uint16_t F32ToF16(float f) {
  uint32_t u = Bits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7E00u);
  double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7C00u);
  // Quantum of the binade (subnormals share 2^-24); nearbyint rounds half to even.
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int q = e - 11;     // 11 significant bits
  if (q < -24) q = -24;
  double m = std::nearbyint(std::ldexp(a, -q));  // integer mantissa
  double v = std::ldexp(m, q);
  if (v == 0.0) return sign;
  int ev;
  std::frexp(v, &ev);
  if (ev - 1 < -14) return static_cast<uint16_t>(sign | static_cast<uint16_t>(m));  // subnormal
  uint32_t exp = static_cast<uint32_t>(ev - 1 + 15);
  uint32_t mant = static_cast<uint32_t>(std::ldexp(v, -(ev - 1) + 10)) - 1024u;
  return static_cast<uint16_t>(sign | (exp << 10) | mant);
}
float F16ToF32(uint16_t h) {
  int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  double v;
  if (exp == 0x1F) v = mant ? NAN : INFINITY;
  else if (exp == 0) v = std::ldexp(mant, -24);
  else v = std::ldexp(1024 + mant, exp - 25);
  return static_cast<float>(sign ? -v : v);
}

float RoundTo(float v, moeDtype_t dtype) {
  switch (dtype) {
    case moeBFloat16: return Bf16ToF32(F32ToBf16(v));
    case moeFloat16: return F16ToF32(F32ToF16(v));
    default: return v;
  }
}

std::vector<float> Randn(size_t n, double scale, moeDtype_t dtype, Rng &rng) {
  std::vector<float> v(n);
  for (auto &x : v) x = RoundTo(static_cast<float>(rng.Normal() * scale), dtype);
  return v;
}

bool IsGated(moeActivation_t a) {
  return a == moeActivationSwiGLU || a == moeActivationSwiGLUClamped;
}

const float *Ptr(const std::vector<float> &v) { return v.empty() ? nullptr : v.data(); }

}  // namespace

size_t DtypeSize(moeDtype_t dtype) { return dtype == moeFloat32 ? 4 : 2; }

moeNaiveLayer HostLayer::Naive() const {
  moeNaiveLayer n;
  n.cfg = cfg;
  n.router_weight = Ptr(router_weight);
  n.router_bias = Ptr(router_bias);
  n.selection_bias = Ptr(selection_bias);
  n.gate_up = Ptr(gate_up);
  n.down = Ptr(down);
  n.gate_up_bias = Ptr(gate_up_bias);
  n.down_bias = Ptr(down_bias);
  n.shared_gate_up = Ptr(shared_gate_up);
  n.shared_down = Ptr(shared_down);
  n.head = Ptr(head);
  n.head_bias = Ptr(head_bias);
  n.merge = Ptr(merge);
  n.merge_bias = Ptr(merge_bias);
  return n;
}

HostLayer MakeRandomLayer(const moeLayerConfig_t &cfg, uint64_t seed, bool with_router_bias) {
  HostLayer w;
  w.cfg = cfg;
  if (w.cfg.shared_intermediate == 0) w.cfg.shared_intermediate = cfg.intermediate;
  Rng rng(seed);
  const moeDtype_t dt = cfg.dtype;
  const int64_t H = cfg.hidden, heads = cfg.num_heads > 1 ? cfg.num_heads : 1, Hr = H / heads;
  const int64_t I = cfg.intermediate, E = cfg.num_experts, S = cfg.num_shared_experts;
  const int64_t Is = w.cfg.shared_intermediate;
  const int64_t GI = IsGated(cfg.activation) ? 2 * I : I;
  const int64_t GIs = IsGated(cfg.activation) ? 2 * Is : Is;
  w.router_weight = Randn(E * Hr, 1.0 / std::sqrt(double(Hr)), dt, rng);
  if (with_router_bias) w.router_bias = Randn(E, 0.5, dt, rng);
  if (cfg.routing == moeRoutingSigmoidGroupTopK) w.selection_bias = Randn(E, 0.1, moeFloat32, rng);
  w.gate_up = Randn(E * GI * Hr, 1.0 / std::sqrt(double(Hr)), dt, rng);
  w.down = Randn(E * Hr * I, 1.0 / std::sqrt(double(I)), dt, rng);
  if (cfg.expert_bias) {
    w.gate_up_bias = Randn(E * GI, 0.2, dt, rng);
    w.down_bias = Randn(E * Hr, 0.2, dt, rng);
  }
  if (S > 0) {
    w.shared_gate_up = Randn(S * GIs * H, 1.0 / std::sqrt(double(H)), dt, rng);
    w.shared_down = Randn(S * H * Is, 1.0 / std::sqrt(double(Is)), dt, rng);
  }
  if (heads > 1) {
    w.head = Randn(H * H, 1.0 / std::sqrt(double(H)), dt, rng);
    w.head_bias = Randn(H, 0.1, dt, rng);
    w.merge = Randn(H * H, 1.0 / std::sqrt(double(H)), dt, rng);
    w.merge_bias = Randn(H, 0.1, dt, rng);
  }
  return w;
}

moeStatus_t UploadLayer(moeLayer_t layer, const HostLayer &w, bool stacked) {
  const moeLayerConfig_t &c = w.cfg;
  const moeDtype_t dt = c.dtype;
  const size_t es = DtypeSize(dt);
  const int64_t heads = c.num_heads > 1 ? c.num_heads : 1, H = c.hidden, Hr = H / heads;
  const int64_t I = c.intermediate, Is = c.shared_intermediate > 0 ? c.shared_intermediate : I;
  const bool gated = IsGated(c.activation);
  const int64_t GI = gated ? 2 * I : I, GIs = gated ? 2 * Is : Is;
  moeStatus_t st;

  auto rw = ToBytes(w.router_weight, dt), rb = ToBytes(w.router_bias, dt);
  st = moeLayerSetRouterWeights(layer, rw.data(), w.router_bias.empty() ? nullptr : rb.data(), dt);
  if (st != moeSuccess) return st;
  if (!w.selection_bias.empty()) {
    st = moeLayerSetSelectionBias(layer, w.selection_bias.data());
    if (st != moeSuccess) return st;
  }
  auto gu = ToBytes(w.gate_up, dt), dn = ToBytes(w.down, dt);
  if (stacked) {
    st = moeLayerSetExpertWeightsStacked(layer, gu.data(), dn.data(), dt);
    if (st != moeSuccess) return st;
  } else {
    for (int32_t e = 0; e < c.num_experts; ++e) {
      const uint8_t *g = gu.data() + size_t(e * GI * Hr) * es;
      const uint8_t *u = gated ? g + size_t(I * Hr) * es : g;
      st = moeLayerSetExpertWeights(layer, e, gated ? g : nullptr, u,
                                    dn.data() + size_t(e * Hr * I) * es, dt);
      if (st != moeSuccess) return st;
    }
  }
  if (c.expert_bias && !w.gate_up_bias.empty()) {
    auto gb = ToBytes(w.gate_up_bias, dt), db = ToBytes(w.down_bias, dt);
    for (int32_t e = 0; e < c.num_experts; ++e) {
      st = moeLayerSetExpertBiases(layer, e, gb.data() + size_t(e * GI) * es,
                                   db.data() + size_t(e * Hr) * es, dt);
      if (st != moeSuccess) return st;
    }
  }
  if (c.num_shared_experts > 0) {
    auto sg = ToBytes(w.shared_gate_up, dt), sd = ToBytes(w.shared_down, dt);
    for (int32_t s = 0; s < c.num_shared_experts; ++s) {
      const uint8_t *g = sg.data() + size_t(s * GIs * H) * es;
      const uint8_t *u = gated ? g + size_t(Is * H) * es : g;
      st = moeLayerSetSharedExpertWeights(layer, s, gated ? g : nullptr, u,
                                          sd.data() + size_t(s * H * Is) * es, dt);
      if (st != moeSuccess) return st;
    }
  }
  if (heads > 1) {
    auto hw = ToBytes(w.head, dt), hb = ToBytes(w.head_bias, dt);
    auto mw = ToBytes(w.merge, dt), mb = ToBytes(w.merge_bias, dt);
    st = moeLayerSetHeadWeights(layer, hw.data(), w.head_bias.empty() ? nullptr : hb.data(),
                                mw.data(), w.merge_bias.empty() ? nullptr : mb.data(), dt);
    if (st != moeSuccess) return st;
  }
  return moeSuccess;
}

std::vector<float> RandomTokens(int64_t T, int64_t width, moeDtype_t dtype, uint64_t seed,
                                float scale) {
  Rng rng(seed ^ 0x5DEECE66Dull);
  return Randn(size_t(T * width), scale, dtype, rng);
}

std::vector<uint8_t> ToBytes(const std::vector<float> &v, moeDtype_t dtype) {
  std::vector<uint8_t> out(v.size() * DtypeSize(dtype) + 1);  // +1: data() never null
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == moeFloat32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      uint16_t h = dtype == moeBFloat16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

std::vector<float> FromBytes(const void *data, size_t n, moeDtype_t dtype) {
  std::vector<float> out(n);
  const uint8_t *p = static_cast<const uint8_t *>(data);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == moeFloat32) {
      std::memcpy(&out[i], p + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = dtype == moeBFloat16 ? Bf16ToF32(h) : F16ToF32(h);
    }
  }
  return out;
}

double RelError(const std::vector<float> &got, const std::vector<double> &ref) {
  if (got.size() != ref.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || std::isnan(ref[i])) return INFINITY;
    double d = double(got[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (den == 0.0) return std::sqrt(num);
  return std::sqrt(num / den);
}

double Tolerance(moeDtype_t dtype) { return dtype == moeFloat32 ? 1e-5 : 1e-2; }

void Poison(void *data, size_t bytes) {
  if (data && bytes) std::memset(data, 0xFF, bytes);  // NaN in f32, f16 and bf16
}

bool HasGpu() {
  int n = 0;
  return moeGetCudaDeviceCount(&n) == moeSuccess && n > 0;
}

// ---- additions ---------------------------------------------------------------------------------

moeLayerConfig_t MakeConfig(int64_t H, int64_t I, int32_t E, int32_t k, moeRouting_t routing,
                            moeDtype_t dtype) {
  moeLayerConfig_t c = MOE_LAYER_CONFIG_INIT;
  c.hidden = H;
  c.intermediate = I;
  c.num_experts = E;
  c.top_k = k;
  c.routing = routing;
  c.dtype = dtype;
  return c;
}

AlignedBuffer::AlignedBuffer(size_t bytes) : bytes_(bytes) {
  size_t rounded = (bytes + 255) / 256 * 256;
  ptr_ = std::aligned_alloc(256, rounded ? rounded : 256);
  Poison(ptr_, rounded ? rounded : 256);
}
AlignedBuffer::~AlignedBuffer() { std::free(ptr_); }

StatsBuffers::StatsBuffers(int32_t E)
    : counts(E, -7), dropped(E, -7), prob_mean(E, NAN), scalars(moeStatScalarCount, NAN) {}

moeRouterStats_t StatsBuffers::Get() {
  moeRouterStats_t s = MOE_ROUTER_STATS_INIT;
  s.expert_counts = counts.data();
  s.dropped_counts = dropped.data();
  s.expert_prob_mean = prob_mean.data();
  s.scalars = scalars.data();
  return s;
}

CpuLayer::CpuLayer(const moeLayerConfig_t &cfg, int num_threads) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  cc.num_threads = num_threads;
  status_ = moeContextCreate(&ctx_, &cc);
  if (status_ != moeSuccess) return;
  status_ = moeLayerCreate(&layer_, ctx_, &cfg);
}

CpuLayer::~CpuLayer() {
  moeLayerDestroy(layer_);
  moeContextDestroy(ctx_);
}

moeStatus_t CpuLayer::Forward(const std::vector<float> &x, int64_t T, std::vector<float> *y,
                              const moeRouterStats_t *stats) {
  moeLayerConfig_t c = MOE_LAYER_CONFIG_INIT;
  moeStatus_t st = moeLayerGetConfig(layer_, &c);
  if (st != moeSuccess) return st;
  size_t ws = 0;
  st = moeLayerGetWorkspaceSize(layer_, T, &ws);
  if (st != moeSuccess) return st;
  AlignedBuffer work(ws);
  auto xb = ToBytes(x, c.dtype);
  AlignedBuffer yb(size_t(T * c.hidden) * DtypeSize(c.dtype));
  st = moeLayerForward(layer_, T, xb.data(), yb.data(), stats, work.data(), ws, nullptr);
  *y = FromBytes(yb.data(), size_t(T * c.hidden), c.dtype);
  return st;
}

moeStatus_t CpuLayer::Route(const std::vector<float> &x, int64_t T, std::vector<int32_t> *ids,
                            std::vector<float> *weights, const moeRouterStats_t *stats) {
  moeLayerConfig_t c = MOE_LAYER_CONFIG_INIT;
  moeStatus_t st = moeLayerGetConfig(layer_, &c);
  if (st != moeSuccess) return st;
  int32_t K = 0;
  st = moeLayerGetRouteWidth(layer_, &K);
  if (st != moeSuccess) return st;
  size_t ws = 0;
  st = moeLayerGetWorkspaceSize(layer_, T, &ws);
  if (st != moeSuccess) return st;
  AlignedBuffer work(ws);
  auto xb = ToBytes(x, c.dtype);
  ids->assign(size_t(T * K) + 1, 0x7F7F7F7F);  // +1: a valid pointer even for T = 0
  weights->assign(size_t(T * K) + 1, NAN);
  st = moeLayerRoute(layer_, T, xb.data(), ids->data(), weights->data(), stats, work.data(), ws,
                     nullptr);
  ids->resize(size_t(T * K));
  weights->resize(size_t(T * K));
  return st;
}

std::vector<float> RunCpuForward(const HostLayer &w, const std::vector<float> &x, int64_t T,
                                 bool stacked) {
  CpuLayer L(w.cfg);
  if (L.status() != moeSuccess) {
    ADD_FAILURE() << "RunCpuForward: create failed: " << moeGetErrorString(L.status()) << ": "
                  << moeGetLastErrorMessage();
    return {};
  }
  moeStatus_t st = L.Upload(w, stacked);
  if (st != moeSuccess) {
    ADD_FAILURE() << "RunCpuForward: upload failed: " << moeGetErrorString(st) << ": "
                  << moeGetLastErrorMessage();
    return {};
  }
  std::vector<float> y;
  st = L.Forward(x, T, &y);
  if (st != moeSuccess) {
    ADD_FAILURE() << "RunCpuForward: forward failed: " << moeGetErrorString(st) << ": "
                  << moeGetLastErrorMessage();
    return {};
  }
  return y;
}

std::vector<double> NaiveForward(const HostLayer &w, const std::vector<float> &x, int64_t T,
                                 moeNaiveStats *stats) {
  std::vector<double> y(size_t(T * w.cfg.hidden) + 1, NAN);
  moeNaiveLayer n = w.Naive();
  int rc = moe_naive_forward(&n, T, x.data(), y.data(), stats);
  EXPECT_EQ(rc, 0) << "naive reference refused the config";
  y.resize(size_t(T * w.cfg.hidden));
  return y;
}

void NaiveRoute(const HostLayer &w, const std::vector<float> &x, int64_t T,
                std::vector<int32_t> *ids, std::vector<double> *weights, moeNaiveStats *stats) {
  int32_t K = moe_naive_route_width(&w.cfg);
  ids->assign(size_t(T * K) + 1, -2);
  weights->assign(size_t(T * K) + 1, NAN);
  moeNaiveLayer n = w.Naive();
  int rc = moe_naive_route(&n, T, x.data(), ids->data(), weights->data(), stats);
  EXPECT_EQ(rc, 0) << "naive reference refused the config";
  ids->resize(size_t(T * K));
  weights->resize(size_t(T * K));
}

::testing::AssertionResult SameRouting(const std::vector<int32_t> &ids,
                                       const std::vector<float> &weights,
                                       const std::vector<int32_t> &ref_ids,
                                       const std::vector<double> &ref_weights, int64_t T,
                                       int32_t K, double tol) {
  if (ids.size() != size_t(T * K) || weights.size() != size_t(T * K))
    return ::testing::AssertionFailure() << "output sizes differ from T * K";
  int failures = 0;
  ::testing::AssertionResult res = ::testing::AssertionFailure();
  for (int64_t t = 0; t < T && failures < 5; ++t) {
    std::map<int32_t, double> got, ref;
    bool bad = false;
    std::string why;
    for (int32_t j = 0; j < K; ++j) {
      int32_t e = ids[t * K + j];
      if (e == -1) {
        if (weights[t * K + j] != 0.0f) bad = true, why = "nonzero weight on a -1 slot";
        continue;
      }
      if (got.count(e)) bad = true, why = "expert selected twice";
      got[e] = weights[t * K + j];
    }
    for (int32_t j = 0; j < K; ++j)
      if (ref_ids[t * K + j] >= 0) ref[ref_ids[t * K + j]] = ref_weights[t * K + j];
    if (!bad) {
      if (got.size() != ref.size()) bad = true, why = "different number of experts";
      for (auto &kv : ref) {
        if (bad) break;
        auto it = got.find(kv.first);
        if (it == got.end()) {
          bad = true, why = "expert " + std::to_string(kv.first) + " missing";
        } else if (!(std::fabs(it->second - kv.second) <= tol * std::max(1.0, std::fabs(kv.second)))) {
          bad = true, why = "weight of expert " + std::to_string(kv.first) + " " +
                            std::to_string(it->second) + " vs " + std::to_string(kv.second);
        }
      }
    }
    if (bad) {
      ++failures;
      res << "token " << t << ": " << why << "; got {";
      for (int32_t j = 0; j < K; ++j) res << ids[t * K + j] << ":" << weights[t * K + j] << " ";
      res << "} expected {";
      for (int32_t j = 0; j < K; ++j) res << ref_ids[t * K + j] << ":" << ref_weights[t * K + j] << " ";
      res << "}\n";
    }
  }
  if (failures) return res;
  return ::testing::AssertionSuccess();
}

std::vector<double> ToDouble(const std::vector<float> &v) { return {v.begin(), v.end()}; }

bool BitwiseEqual(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

const char *RoutingName(moeRouting_t r) {
  switch (r) {
    case moeRoutingTopKSoftmax: return "TopKSoftmax";
    case moeRoutingSoftmaxTopK: return "SoftmaxTopK";
    case moeRoutingSigmoidGroupTopK: return "SigmoidGroupTopK";
    case moeRoutingSoftmaxGroupTopK: return "SoftmaxGroupTopK";
    case moeRoutingSigmoidTop1InputScale: return "SigmoidTop1InputScale";
    case moeRoutingTopP: return "TopP";
    case moeRoutingExpertChoice: return "ExpertChoice";
    case moeRoutingDense: return "Dense";
    default: return "Unknown";
  }
}

const char *DtypeName(moeDtype_t d) {
  switch (d) {
    case moeFloat32: return "F32";
    case moeFloat16: return "F16";
    case moeBFloat16: return "BF16";
    default: return "Unknown";
  }
}

moeLayerConfig_t FamilyConfig(moeRouting_t routing, moeDtype_t dtype, int64_t H, int64_t I) {
  moeLayerConfig_t c = MakeConfig(H, I, 8, 2, routing, dtype);
  switch (routing) {
    case moeRoutingTopKSoftmax: break;
    case moeRoutingSoftmaxTopK:
      c.num_experts = 16, c.top_k = 4, c.norm_topk_prob = 1;
      break;
    case moeRoutingSigmoidGroupTopK:
      c.num_experts = 16, c.top_k = 4, c.n_group = 4, c.topk_group = 2, c.norm_topk_prob = 1;
      c.routed_scaling_factor = 2.5f, c.num_shared_experts = 1;
      break;
    case moeRoutingSoftmaxGroupTopK:
      c.num_experts = 16, c.top_k = 3, c.n_group = 4, c.topk_group = 2;
      c.routed_scaling_factor = 16.0f;
      break;
    case moeRoutingSigmoidTop1InputScale:
      c.top_k = 1, c.num_shared_experts = 1;
      break;
    case moeRoutingTopP:
      c.top_k = 4, c.top_p_threshold = 0.4f;
      break;
    case moeRoutingExpertChoice:
      c.top_k = 1, c.capacity_factor = 2.0f;
      break;
    case moeRoutingDense:
      c.num_experts = 4, c.top_k = 1;
      break;
    default: break;
  }
  return c;
}

void SetIdentityRouter(HostLayer *w) {
  const int64_t heads = w->cfg.num_heads > 1 ? w->cfg.num_heads : 1;
  const int64_t Hr = w->cfg.hidden / heads, E = w->cfg.num_experts;
  w->router_weight.assign(size_t(E * Hr), 0.0f);
  for (int64_t e = 0; e < E && e < Hr; ++e) w->router_weight[size_t(e * Hr + e)] = 1.0f;
}

std::vector<float> RoundToDtype(const std::vector<float> &v, moeDtype_t dtype) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = RoundTo(v[i], dtype);
  return out;
}

}  // namespace moe_test
