// Malformed checkpoints: each gives the right status and a message naming the file and the
// tensor (or config key). Run under ASan, these also show that no error path leaks.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "ckpt_writer.h"
#include "moe/moe.h"
#include "moe/moe_io.h"

using namespace moe_io_test;

namespace {

// A valid Mixtral layer (single file), with its tensors laid out so tests can corrupt them.
class Errors : public ::testing::Test {
 protected:
  void SetUp() override {
    w = RandomWeights(s, 42);
    WriteCheckpoint(dir.path, s, w);
    tensors = LayerTensors(s, w);
    Layout(tensors, &entries, &data);
  }
  std::string File() const { return dir / "model.safetensors"; }
  void WriteEntries() { WriteFile(File(), FileBytes(HeaderJson(entries), data)); }
  Entry &Find(const std::string &name) {
    for (Entry &e : entries)
      if (e.name == name) return e;
    throw std::runtime_error("no entry " + name);
  }
  // Loads and expects status; the message must contain every needle.
  void Expect(moeStatus_t want, std::vector<std::string> needles, int32_t layer = -1) {
    moeCheckpointWeights_t *r = reinterpret_cast<moeCheckpointWeights_t *>(this);
    moeStatus_t st = moeCheckpointReadWeights(dir.path.c_str(), layer < 0 ? s.layer : layer,
                                              nullptr, &r);
    std::string msg = moeGetLastErrorMessage();
    EXPECT_EQ(st, want) << msg;
    EXPECT_EQ(r, nullptr);
    for (const std::string &n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;  // the config path reports the same for config and index errors
    (void)cfg;
  }
  const std::string kGate = "model.layers.1.block_sparse_moe.gate.weight";
  const std::string kW3 = "model.layers.1.block_sparse_moe.experts.2.w3.weight";
  Spec s;
  TempDir dir;
  Weights w;
  std::vector<Tensor> tensors;
  std::vector<Entry> entries;
  std::string data;
};

TEST_F(Errors, FileShorterThanItsHeaderLength) {
  WriteFile(File(), std::string("\x10\x00\x00", 3));
  Expect(moeErrorFormat, {File(), "too short"});
}

TEST_F(Errors, TruncatedInTheDataSection) {
  std::string bytes = ReadFile(File());
  WriteFile(File(), bytes.substr(0, bytes.size() - 10));  // the last tensor loses its tail
  Expect(moeErrorFormat, {File(), entries.back().name, "out of range"});
}

TEST_F(Errors, HeaderLengthPastTheEnd) {
  std::string bytes = ReadFile(File());
  bytes[5] = 1;  // header length += 2^40
  WriteFile(File(), bytes);
  Expect(moeErrorFormat, {File(), "past the end"});
}

TEST_F(Errors, HeaderLongerThan100MB) {
  std::string head = FileBytes(std::string(100000001, ' '), "").substr(0, 8);
  WriteFile(File(), head);
  int fd = open(File().c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 100000200), 0);  // sparse: the limit, not the file size, is hit
  close(fd);
  Expect(moeErrorFormat, {File(), "exceeds the limit"});
}

TEST_F(Errors, InvalidJson) {
  WriteFile(File(), FileBytes("{\"a\": {\"dtype\": \"F32\", ", data));
  Expect(moeErrorFormat, {File(), "not valid JSON"});
  WriteFile(File(), FileBytes("[1, 2]  ", data));
  Expect(moeErrorFormat, {File(), "not an object"});
  WriteFile(File(), FileBytes(HeaderJson(entries) + "xy", data));
  Expect(moeErrorFormat, {File(), "after its JSON"});
}

TEST_F(Errors, OffsetsOutOfRange) {
  Find(kW3).end = data.size() + 2;
  WriteEntries();
  Expect(moeErrorFormat, {File(), kW3, "out of range"});
  Find(kW3).end = Find(kW3).begin - 2;  // end < begin
  WriteEntries();
  Expect(moeErrorFormat, {File(), kW3, "out of range"});
}

TEST_F(Errors, OverlappingOffsets) {
  Entry &a = Find(kW3);
  uint64_t n = a.end - a.begin;
  a.begin -= 4;  // into the previous tensor, same size
  a.end = a.begin + n;
  WriteEntries();
  Expect(moeErrorFormat, {File(), kW3, "overlaps"});
}

TEST_F(Errors, SizeDisagreesWithDtypeAndShape) {
  Find(kW3).dtype = "F32";  // twice the bytes the offsets hold
  WriteEntries();
  Expect(moeErrorFormat, {File(), kW3, "need"});
}

TEST_F(Errors, ShapeDisagreesWithConfig) {
  Entry &a = Find(kW3);
  a.shape = {a.shape[1], a.shape[0]};  // transposed: same bytes, wrong shape
  WriteEntries();
  Expect(moeErrorFormat, {File(), kW3, "shape [16, 12]", "[12, 16]"});
}

TEST_F(Errors, UnknownAndUnsupportedDtypes) {
  Find(kW3).dtype = "Q4_K";
  WriteEntries();
  Expect(moeErrorFormat, {File(), kW3, "unknown dtype"});
  // F8_E4M3: one byte per element. Expert 2's w3 as fp8: parsed fine, refused when loaded.
  Entry &a = Find(kW3);
  a.dtype = "F8_E4M3";
  a.end = a.begin + (a.end - a.begin) / 2;
  WriteEntries();
  Expect(moeErrorNotSupported, {File(), "dtype F8_E4M3 of tensor " + kW3 + " not supported yet"});
}

TEST_F(Errors, MissingTensor) {
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                               [&](const Tensor &t) { return t.name == kW3; }),
                tensors.end());
  WriteFile(File(), Serialize(tensors));
  Expect(moeErrorFormat, {File(), kW3, "not found"});
}

TEST_F(Errors, NoExpertsAtAll) {
  std::vector<Tensor> only(tensors.begin(), tensors.begin() + 4);  // router, no experts
  WriteFile(File(), Serialize(only));
  Expect(moeErrorFormat, {File(), "no expert weights", "block_sparse_moe.experts.0.{w1,gate_proj}.weight"});
}

TEST_F(Errors, DuplicateTensorName) {
  entries.push_back(Find(kW3));
  WriteEntries();
  Expect(moeErrorFormat, {File(), kW3, "twice"});
}

TEST_F(Errors, MissingConfigKey) {
  auto keys = ConfigKeys(s);
  keys.erase("num_local_experts");
  WriteFile(dir / "config.json", ConfigJson(keys));
  Expect(moeErrorFormat, {dir / "config.json", "num_local_experts"});
  keys = ConfigKeys(s);
  keys["intermediate_size"] = "\"12\"";
  WriteFile(dir / "config.json", ConfigJson(keys));
  Expect(moeErrorFormat, {"config.json", "intermediate_size", "integer"});
  WriteFile(dir / "config.json", "{\"model_type\": ");
  Expect(moeErrorFormat, {"config.json", "JSON"});
  keys = ConfigKeys(s);
  keys["model_type"] = "\"llama\"";
  WriteFile(dir / "config.json", ConfigJson(keys));
  Expect(moeErrorNotSupported, {"config.json", "llama"});
  std::remove((dir / "config.json").c_str());
  Expect(moeErrorIo, {"config.json"});
}

TEST_F(Errors, NoWeightFiles) {
  std::remove(File().c_str());
  Expect(moeErrorIo, {dir.path, "model.safetensors"});
}

TEST(ErrorsSharded, IndexNamesAMissingShardOrAPathOutside) {
  Spec s;
  s.shards = 3;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 3));
  std::remove((dir / ShardName(1, 3)).c_str());
  moeCheckpointWeights_t *r = nullptr;
  EXPECT_EQ(moeCheckpointReadWeights(dir.path.c_str(), s.layer, nullptr, &r), moeErrorIo);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find(ShardName(1, 3)), std::string::npos);
  WriteFile(dir / "model.safetensors.index.json",
            "{\"weight_map\": {\"x\": \"../outside.safetensors\"}}");
  EXPECT_EQ(moeCheckpointReadWeights(dir.path.c_str(), s.layer, nullptr, &r), moeErrorFormat);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("relative path"), std::string::npos);
  WriteFile(dir / "model.safetensors.index.json", "{\"weight_map\": 3}");
  EXPECT_EQ(moeCheckpointReadWeights(dir.path.c_str(), s.layer, nullptr, &r), moeErrorFormat);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("index.json"), std::string::npos);
}

TEST(ErrorsDense, DeepSeekDenseLayer) {
  Spec s;
  s.family = Family::DeepSeekV3;
  s.first_dense = 1;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 3));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), 0, nullptr, &cfg), moeErrorInvalidConfig);
  EXPECT_NE(std::string(moeGetLastErrorMessage())
                .find("layer 0 of DeepSeek-V3 is dense (first_k_dense_replace = 1"),
            std::string::npos)
      << moeGetLastErrorMessage();
  auto keys = ConfigKeys(s);
  keys["first_k_dense_replace"] = "0";
  keys["moe_layer_freq"] = "2";
  WriteFile(dir / "config.json", ConfigJson(keys));
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), 1, nullptr, &cfg), moeErrorInvalidConfig);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("moe_layer_freq = 2"), std::string::npos);
}

TEST(ErrorsDense, Qwen3MlpOnlyLayer) {
  Spec s;
  s.family = Family::Qwen3Moe;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 3));
  auto keys = ConfigKeys(s);
  keys["mlp_only_layers"] = "[0, 1]";
  WriteFile(dir / "config.json", ConfigJson(keys));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), 1, nullptr, &cfg), moeErrorInvalidConfig);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("mlp_only_layers"), std::string::npos);
}

// Headers need not be padded to 8 bytes: every tensor then sits at an odd address and must still
// load (copied to aligned memory; UBSan would flag a misaligned read).
TEST(Alignment, OddHeaderLength) {
  Spec s;
  s.dtype = moeFloat32;
  TempDir dir;
  Weights w = RandomWeights(s, 11);
  WriteCheckpoint(dir.path, s, w);
  std::vector<Entry> entries;
  std::string data;
  Layout(LayerTensors(s, w), &entries, &data);
  WriteFile(dir / "model.safetensors", FileBytes(HeaderJson(entries) + " ", data));
  moeCheckpointWeights_t *r = nullptr;
  ASSERT_EQ(moeCheckpointReadWeights(dir.path.c_str(), s.layer, nullptr, &r), moeSuccess)
      << moeGetLastErrorMessage();
  EXPECT_EQ(memcmp(r->gate_up, w.gate_up.data(), w.gate_up.size() * 4), 0);
  EXPECT_EQ(memcmp(r->router_weight, w.router.data(), w.router.size() * 4), 0);
  moeCheckpointWeightsDestroy(r);
}

}  // namespace

namespace {

// The released gpt-oss checkpoints store experts as MXFP4 blocks + scales (U8): refused by name.
TEST(ErrorsQuantized, GptOssMxfp4) {
  Spec s;
  s.family = Family::GptOss;
  s.scheme = Scheme::GptOss;
  TempDir dir;
  Weights w = RandomWeights(s, 2);
  WriteCheckpoint(dir.path, s, w);
  std::vector<Tensor> t;
  for (const Tensor &x : LayerTensors(s, w)) {
    if (x.name.find("experts.gate_up_proj") != std::string::npos ||
        x.name.find("experts.down_proj") != std::string::npos) {
      if (x.name.find("_bias") == std::string::npos) {
        Tensor q{x.name + "_blocks", "U8", {s.E, 2 * s.I, s.H / 2}, std::string()};
        q.bytes.assign((size_t)(s.E * 2 * s.I * s.H / 2), '\0');
        t.push_back(q);
        continue;
      }
    }
    t.push_back(x);
  }
  WriteFile(dir / "model.safetensors", Serialize(t));
  moeCheckpointWeights_t *r = nullptr;
  EXPECT_EQ(moeCheckpointReadWeights(dir.path.c_str(), s.layer, nullptr, &r),
            moeErrorNotSupported);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("gate_up_proj_blocks"), std::string::npos)
      << moeGetLastErrorMessage();
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("MXFP4"), std::string::npos);
}

// DeepSeek-V3 as released: fp8 e4m3 experts; the config query already says so.
TEST(ErrorsQuantized, DeepSeekFp8Experts) {
  Spec s;
  s.family = Family::DeepSeekV3;
  TempDir dir;
  Weights w = RandomWeights(s, 2);
  WriteCheckpoint(dir.path, s, w);
  std::vector<Tensor> t = LayerTensors(s, w);
  for (Tensor &x : t)
    if (x.name.find(".experts.") != std::string::npos) {
      x.dtype = "F8_E4M3";
      x.bytes.resize(x.bytes.size() / 2);
    }
  WriteFile(dir / "model.safetensors", Serialize(t));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg), moeErrorNotSupported);
  EXPECT_NE(std::string(moeGetLastErrorMessage())
                .find("dtype F8_E4M3 of tensor model.layers.1.mlp.experts.0.gate_proj.weight "
                      "not supported yet"),
            std::string::npos)
      << moeGetLastErrorMessage();
}

}  // namespace

namespace {

TEST(ErrorsConfig, InvalidLayerConfigNamesTheField) {
  Spec s;
  s.family = Family::DeepSeekV3;
  TempDir dir;
  WriteCheckpoint(dir.path, s, RandomWeights(s, 3));
  auto keys = ConfigKeys(s);
  keys["n_group"] = "3";  // does not divide E = 8
  WriteFile(dir / "config.json", ConfigJson(keys));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  EXPECT_EQ(moeCheckpointConfig(dir.path.c_str(), s.layer, nullptr, &cfg), moeErrorInvalidConfig);
  std::string msg = moeGetLastErrorMessage();
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("n_group"), std::string::npos) << msg;
}

}  // namespace
