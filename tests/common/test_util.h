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

}  // namespace moe_test
