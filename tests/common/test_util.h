// Shared test helpers: random layers on the host, upload through the public API, comparisons.
// Every suite (CPU, GPU, MPI, checkpoints) builds its inputs with these so that a layer is
// described once and checked against the naive reference (tests/reference/naive_moe.h).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "moe/moe.h"
#include "naive_moe.h"

#define MOE_ASSERT_OK(expr) ASSERT_EQ((expr), moeSuccess) << moeGetLastErrorMessage()
#define MOE_EXPECT_OK(expr) EXPECT_EQ((expr), moeSuccess) << moeGetLastErrorMessage()

namespace moe_test {

// A layer's weights on the host as fp32 values exactly representable in cfg.dtype.
struct HostLayer {
  moeLayerConfig_t cfg;
  std::vector<float> router_weight, router_bias, selection_bias;
  std::vector<float> gate_up, down, gate_up_bias, down_bias;
  std::vector<float> shared_gate_up, shared_down;
  std::vector<float> head, head_bias, merge, merge_bias;
  // A view for the naive reference (pointers into this object; empty vectors give NULL).
  moeNaiveLayer Naive() const;
};

// Random weights for cfg (scaled so activations stay O(1)); router_bias only when with_router_bias,
// selection_bias for moeRoutingSigmoidGroupTopK, expert biases when cfg.expert_bias, shared and
// head/merge weights when the config has them.
HostLayer MakeRandomLayer(const moeLayerConfig_t &cfg, uint64_t seed, bool with_router_bias = false);

// Sets every weight of `layer` from `w` through the public setters; stacked = use
// moeLayerSetExpertWeightsStacked instead of the per-expert setter.
moeStatus_t UploadLayer(moeLayer_t layer, const HostLayer &w, bool stacked = false);

// Random tokens [T, width] as fp32 values representable in dtype.
std::vector<float> RandomTokens(int64_t T, int64_t width, moeDtype_t dtype, uint64_t seed,
                                float scale = 1.0f);

// fp32 values <-> raw bytes of a dtype.
std::vector<uint8_t> ToBytes(const std::vector<float> &v, moeDtype_t dtype);
std::vector<float> FromBytes(const void *data, size_t n, moeDtype_t dtype);

// ||got - ref|| / ||ref|| (Frobenius); NaN or Inf anywhere in got gives +inf.
double RelError(const std::vector<float> &got, const std::vector<double> &ref);
// The tolerance of DESIGN.md for a dtype: 1e-5 fp32, 1e-2 bf16/f16.
double Tolerance(moeDtype_t dtype);

// Bytes that poison an output buffer (NaN in every dtype) so unwritten elements fail.
void Poison(void *data, size_t bytes);

// True when the CUDA backend can run here (a GPU is visible and the build has CUDA).
bool HasGpu();

// Runs the whole layer on a CPU context and returns y as fp32.
std::vector<float> RunCpuForward(const HostLayer &w, const std::vector<float> &x, int64_t T,
                                 bool stacked = false);


// ---- Additions for the CPU suites (host-memory helpers; the CPU backend computes on the host).

// A config from MOE_LAYER_CONFIG_INIT with the required sizes, a routing family and a dtype.
moeLayerConfig_t MakeConfig(int64_t H, int64_t I, int32_t E, int32_t k,
                            moeRouting_t routing = moeRoutingTopKSoftmax,
                            moeDtype_t dtype = moeFloat32);

// Bytes of one element of a dtype.
size_t DtypeSize(moeDtype_t dtype);

// Host memory aligned to 256 bytes (the workspace contract); poisoned on allocation.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  ~AlignedBuffer();
  AlignedBuffer(const AlignedBuffer &) = delete;
  AlignedBuffer &operator=(const AlignedBuffer &) = delete;
  void *data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void *ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Host buffers for moeRouterStats_t, poisoned; Get() points a stats struct at them.
struct StatsBuffers {
  explicit StatsBuffers(int32_t E);
  std::vector<int64_t> counts, dropped;
  std::vector<float> prob_mean, scalars;
  moeRouterStats_t Get();
};

// A CPU context and a layer on it, destroyed together. status() is the creation status.
class CpuLayer {
 public:
  explicit CpuLayer(const moeLayerConfig_t &cfg, int num_threads = 0);
  ~CpuLayer();
  CpuLayer(const CpuLayer &) = delete;
  CpuLayer &operator=(const CpuLayer &) = delete;
  moeStatus_t status() const { return status_; }
  moeLayer_t layer() const { return layer_; }
  moeContext_t ctx() const { return ctx_; }
  moeStatus_t Upload(const HostLayer &w, bool stacked = false) { return UploadLayer(layer_, w, stacked); }
  // Whole layer with a workspace of exactly moeLayerGetWorkspaceSize(T) bytes; y is poisoned
  // first and returned as fp32 values.
  moeStatus_t Forward(const std::vector<float> &x, int64_t T, std::vector<float> *y,
                      const moeRouterStats_t *stats = nullptr);
  // The route stage alone over T router tokens x [T, Hr]; ids [T, K], weights [T, K].
  moeStatus_t Route(const std::vector<float> &x, int64_t T, std::vector<int32_t> *ids,
                    std::vector<float> *weights, const moeRouterStats_t *stats = nullptr);

 private:
  moeContext_t ctx_ = nullptr;
  moeLayer_t layer_ = nullptr;
  moeStatus_t status_ = moeErrorInternal;
};

// The naive reference forward as a vector (fails the test if the reference refuses the config).
std::vector<double> NaiveForward(const HostLayer &w, const std::vector<float> &x, int64_t T,
                                 moeNaiveStats *stats = nullptr);

// The naive routing of T router tokens: ids [T, K], weights [T, K].
void NaiveRoute(const HostLayer &w, const std::vector<float> &x, int64_t T,
                std::vector<int32_t> *ids, std::vector<double> *weights,
                moeNaiveStats *stats = nullptr);

// Routing equality as the contract states it: per token the same set of experts (order within a
// token free, -1 slots ignored) and, per expert id, weights within tol (relative to max(1,|ref|)).
::testing::AssertionResult SameRouting(const std::vector<int32_t> &ids,
                                       const std::vector<float> &weights,
                                       const std::vector<int32_t> &ref_ids,
                                       const std::vector<double> &ref_weights, int64_t T,
                                       int32_t K, double tol = 1e-5);

// Widens fp32 values to double (e.g. to compare two library outputs with RelError).
std::vector<double> ToDouble(const std::vector<float> &v);

// True when two float vectors are bitwise equal (NaN payloads included).
bool BitwiseEqual(const std::vector<float> &a, const std::vector<float> &b);

// Names for parameterized tests.
const char *RoutingName(moeRouting_t r);
const char *DtypeName(moeDtype_t d);

// The configuration each suite uses for a routing family (small sizes; shared experts on the
// DeepSeek-V3 and Llama-4 families, as the models have them).
moeLayerConfig_t FamilyConfig(moeRouting_t routing, moeDtype_t dtype = moeFloat32,
                              int64_t H = 64, int64_t I = 32);

// Makes the router the identity on the first E coordinates (requires Hr >= E), so that a token's
// first E values are its logits: routing cases (ties, NaN) can be written by hand.
void SetIdentityRouter(HostLayer *w);

// Values rounded to what a dtype can hold (round to nearest even), as the library stores them.
std::vector<float> RoundToDtype(const std::vector<float> &v, moeDtype_t dtype);

}  // namespace moe_test
