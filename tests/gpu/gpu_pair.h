// GPU suites' helpers: one layer built twice from the same host weights, on a CPU context (the
// reference) and on a CUDA context; device buffers that start poisoned (0xFF bytes: NaN in every
// float dtype, -1 in every integer) so that an element a kernel forgot to write fails.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <map>
#include <vector>

#include "common/test_util.h"

namespace moe_gpu_test {

#define CUDA_ASSERT_OK(expr)                                                  \
  do {                                                                        \
    cudaError_t e_ = (expr);                                                  \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_);    \
  } while (0)

// The CPU emulation of the device (tests/emulator): its exp/log are the host's, the same as the
// CPU backend's, so what remains between the backends is summation order, which the kernels
// fix; there routing weights must agree bit for bit. A GPU's double exp may round differently
// in the last place, hence a tolerance there.
inline bool EmulatedDevice() {
  cudaDeviceProp prop;
  return cudaGetDeviceProperties(&prop, 0) == cudaSuccess && std::strstr(prop.name, "emulated");
}

class DevBuf {
 public:
  explicit DevBuf(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, bytes ? bytes : 1) != cudaSuccess) ptr_ = nullptr;
    Poison();
  }
  ~DevBuf() { cudaFree(ptr_); }
  DevBuf(const DevBuf &) = delete;
  DevBuf &operator=(const DevBuf &) = delete;
  // Both wait for the device: cudaMemset / cudaMemcpy run on the legacy stream, which a
  // non-blocking stream (the graph test's) is not ordered against, and a pageable cudaMemcpy
  // may return before the data has landed.
  // byte 0xFF: NaN in every float dtype but -1 in every integer, a valid "none" for ids and
  // pair_rows; integer outputs where -1 is valid are poisoned with 0x7F (a huge positive).
  void Poison(int byte = 0xFF) {
    if (ptr_) EXPECT_EQ(cudaMemset(ptr_, byte, bytes_ ? bytes_ : 1), cudaSuccess) << "Poison";
    cudaDeviceSynchronize();
  }
  // A failed copy (e.g. more bytes than the buffer holds) fails the test instead of leaving
  // the poison in place.
  void Put(const void *host, size_t bytes) {
    EXPECT_LE(bytes, bytes_) << "Put past the end of a device buffer";
    EXPECT_EQ(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), cudaSuccess) << "Put";
    cudaDeviceSynchronize();
  }
  template <typename T>
  std::vector<T> Get(size_t count) const {
    std::vector<T> v(count);
    cudaDeviceSynchronize();
    EXPECT_EQ(cudaMemcpy(v.data(), ptr_, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess) << "Get";
    return v;
  }
  std::vector<uint8_t> Bytes() const { return Get<uint8_t>(bytes_); }
  void *get() const { return ptr_; }
  template <typename T> T *as() const { return static_cast<T *>(ptr_); }
  size_t size() const { return bytes_; }
  bool ok() const { return ptr_ != nullptr; }

 private:
  void *ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The same layer on a CPU context and on a CUDA context.
struct LayerPair {
  moeContext_t cpu_ctx = nullptr, gpu_ctx = nullptr;
  moeLayer_t cpu = nullptr, gpu = nullptr;
  moe_test::HostLayer w;
  moeStatus_t status = moeErrorInternal;

  LayerPair(const moeLayerConfig_t &cfg, uint64_t seed, bool router_bias = false) {
    moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
    cc.backend = moeBackendCpu;
    if ((status = moeContextCreate(&cpu_ctx, &cc)) != moeSuccess) return;
    cc.backend = moeBackendCuda;
    if ((status = moeContextCreate(&gpu_ctx, &cc)) != moeSuccess) return;
    if ((status = moeLayerCreate(&cpu, cpu_ctx, &cfg)) != moeSuccess) return;
    if ((status = moeLayerCreate(&gpu, gpu_ctx, &cfg)) != moeSuccess) return;
    w = moe_test::MakeRandomLayer(cfg, seed, router_bias);
    if ((status = moe_test::UploadLayer(cpu, w)) != moeSuccess) return;
    status = moe_test::UploadLayer(gpu, w);
  }
  ~LayerPair() {
    moeLayerDestroy(cpu);
    moeLayerDestroy(gpu);
    moeContextDestroy(cpu_ctx);
    moeContextDestroy(gpu_ctx);
  }
  int32_t K() const {
    int32_t k = 0;
    moeLayerGetRouteWidth(cpu, &k);
    return k;
  }
};

// Routing equality as the contract states it: per token the same set of experts (slot order
// free, -1 ignored) and the same weight per expert within tol relative to max(1, |ref|).
inline ::testing::AssertionResult SameRoutingSets(const std::vector<int32_t> &ids,
                                                  const std::vector<float> &w,
                                                  const std::vector<int32_t> &ref_ids,
                                                  const std::vector<float> &ref_w, int64_t T,
                                                  int32_t K, int32_t E, double tol = 1e-5) {
  int64_t bad = 0;
  std::string first;
  for (int64_t t = 0; t < T; ++t) {
    std::map<int32_t, float> a, b;
    bool range_ok = true;
    for (int32_t j = 0; j < K; ++j) {
      const int32_t x = ids[t * K + j], y = ref_ids[t * K + j];
      if (x != -1) {
        if (x < 0 || x >= E || a.count(x)) range_ok = false;
        a[x] = w[t * K + j];
      } else if (w[t * K + j] != 0.0f) {
        range_ok = false;
      }
      if (y != -1) b[y] = ref_w[t * K + j];
    }
    bool same = range_ok && a.size() == b.size();
    if (same)
      for (const auto &kv : b) {
        auto it = a.find(kv.first);
        if (it == a.end() ||
            !(std::fabs(static_cast<double>(it->second) - kv.second) <=
              tol * std::max(1.0, std::fabs(static_cast<double>(kv.second))))) {
          same = false;
          break;
        }
      }
    if (!same) {
      if (bad == 0) {
        first = "token " + std::to_string(t) + ": gpu {";
        for (const auto &kv : a) first += std::to_string(kv.first) + ":" + std::to_string(kv.second) + " ";
        first += "} cpu {";
        for (const auto &kv : b) first += std::to_string(kv.first) + ":" + std::to_string(kv.second) + " ";
        first += "}";
      }
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << T << " tokens differ; first " << first;
}

inline std::vector<double> ToDoubleVec(const std::vector<float> &v) {
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace moe_gpu_test
