// Test helpers for checkpoint loading: a tiny safetensors writer, and writers of one MoE layer in
// the exact naming and layout of each model family (mixtral, qwen3_moe, olmoe, deepseek_v3,
// gpt_oss, transformers v5 stacked), single-file or sharded with model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "moe/moe.h"
#include "naive_moe.h"

namespace moe_io_test {

// A directory under $TMPDIR removed (recursively) by the destructor.
struct TempDir {
  TempDir();
  ~TempDir();
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  std::string path;
  std::string operator/(const std::string &name) const { return path + "/" + name; }
};

// ---- safetensors -------------------------------------------------------------------------------
struct Tensor {
  std::string name;
  std::string dtype;           // "F32", "F16", "BF16", "F8_E4M3", ...
  std::vector<int64_t> shape;
  std::string bytes;           // raw little-endian data
};

// values (fp32) stored as dtype; the values should be representable (see RoundTo).
Tensor MakeTensor(const std::string &name, std::vector<int64_t> shape, const float *values,
                  moeDtype_t dtype);

// One header entry with explicit offsets, so tests can corrupt them.
struct Entry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// Lays tensors out back to back: entries (offsets filled in) and the data section.
void Layout(const std::vector<Tensor> &tensors, std::vector<Entry> *entries, std::string *data);
// The header JSON of entries (with a __metadata__ entry), padded with spaces to a multiple of 8.
std::string HeaderJson(const std::vector<Entry> &entries);
// 8-byte little-endian length + header + data.
std::string FileBytes(const std::string &header, const std::string &data);
std::string Serialize(const std::vector<Tensor> &tensors);
void WriteFile(const std::string &path, const std::string &bytes);
std::string ReadFile(const std::string &path);

// ---- one MoE layer -------------------------------------------------------------------------------
// Weights in libmoe's layout as fp32 values representable in cfg.dtype (biases: in bias_dtype).
struct Weights {
  moeLayerConfig_t cfg;
  std::vector<float> router, router_bias, selection_bias;
  std::vector<float> gate_up;        // [E, 2I, H] gate rows first
  std::vector<float> down;           // [E, H, I]
  std::vector<float> gate_up_bias;   // [E, 2I] or empty
  std::vector<float> down_bias;      // [E, H] or empty
  std::vector<float> shared_gate_up; // [2Is, H] or empty (one shared expert)
  std::vector<float> shared_down;    // [H, Is] or empty
  moeNaiveLayer Naive() const;
};

enum class Family { Mixtral, Qwen3Moe, Olmoe, DeepSeekV3, GptOss, DeepSeekV2 };
enum class Scheme { PerExpert, StackedV5, GptOss };

struct Spec {
  Family family = Family::Mixtral;
  Scheme scheme = Scheme::PerExpert;
  moeDtype_t dtype = moeBFloat16;
  int64_t H = 16, I = 12;
  int32_t E = 8, k = 2;
  int32_t layer = 1, num_layers = 3;
  int shards = 1;          // 1: model.safetensors; n > 1: index + n shards (shard 0: non-experts,
                           // shards 1..n-1: contiguous blocks of experts when per-expert)
  int32_t first_dense = 1; // DeepSeek first_k_dense_replace
};

// One parameterized fixture: a family in a naming scheme and dtype, in one file or shards.
struct Case {
  const char *name;
  Family family;
  Scheme scheme;
  moeDtype_t dtype;
  int shards;
};
// gtest prints parameters in test names (ctest shows them): the name, not the struct's bytes.
inline void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }
// The spec of a case (other fields at their defaults).
inline Spec SpecOf(const Case &c) {
  Spec s;
  s.family = c.family;
  s.scheme = c.scheme;
  s.dtype = c.dtype;
  s.shards = c.shards;
  return s;
}

// The layer config the loader must produce for spec (routing, groups, shared, activation, ...).
moeLayerConfig_t ExpectedConfig(const Spec &spec);
// Random weights for ExpectedConfig(spec), representable in spec.dtype.
Weights RandomWeights(const Spec &spec, uint64_t seed);
// config.json as key -> raw JSON value (tests may erase or change keys).
std::map<std::string, std::string> ConfigKeys(const Spec &spec);
std::string ConfigJson(const std::map<std::string, std::string> &keys);
// All tensors of the MoE layer in the family's naming, plus a few unrelated ones.
std::vector<Tensor> LayerTensors(const Spec &spec, const Weights &w);
// The shard (1-based file number; 0 for non-expert tensors) a tensor goes to.
int ShardOf(const Spec &spec, const std::string &name);
std::string ShardName(int i, int n);
// Writes config.json and the weights (single file or shards + index).
void WriteCheckpoint(const std::string &dir, const Spec &spec, const Weights &w);

}  // namespace moe_io_test
