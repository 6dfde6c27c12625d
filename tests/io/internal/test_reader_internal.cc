// White-box tests of the reader (linked against moe_static to reach csrc/io): the parser on
// hand-made images, and the checkpoint's lazy, open-once shards.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "ckpt_writer.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

using namespace moe_io_test;

namespace {

moe_st_file *Parse(const std::string &bytes, moeStatus_t want = moeSuccess) {
  moe_st_file *f = nullptr;
  moeStatus_t st = moe_st_parse(bytes.data(), bytes.size(), "mem.safetensors", &f);
  EXPECT_EQ(st, want) << moeGetLastErrorMessage();
  if (want != moeSuccess) EXPECT_EQ(f, nullptr);
  return f;
}

TEST(Reader, MetadataSkippedAndTensorsFound) {
  std::string data(8 + 6 + 3, '\x01');
  std::string h = "{\"__metadata__\": {\"format\": \"pt\", \"x\": \"y\"},"
                  " \"b\": {\"dtype\": \"BF16\", \"shape\": [3], \"data_offsets\": [8, 14]},"
                  " \"a\": {\"dtype\": \"F32\", \"shape\": [1, 2], \"data_offsets\": [0, 8]},"
                  " \"q\": {\"dtype\": \"F8_E4M3\", \"shape\": [3], \"data_offsets\": [14, 17]}}\n\t ";
  moe_st_file *f = Parse(FileBytes(h, data));
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->count, 3u);
  const moe_st_tensor *a = moe_st_find(f, "a"), *b = moe_st_find(f, "b"), *q = moe_st_find(f, "q");
  ASSERT_TRUE(a && b && q);
  EXPECT_EQ(moe_st_find(f, "__metadata__"), nullptr);
  EXPECT_EQ(a->dtype, moeFloat32);
  EXPECT_EQ(a->ndim, 2);
  EXPECT_EQ(a->numel, 2u);
  EXPECT_EQ(b->dtype, moeBFloat16);
  EXPECT_EQ(b->data, f->data + 8);
  EXPECT_FALSE(q->supported);
  EXPECT_STREQ(q->dtype_name, "F8_E4M3");
  int64_t shape[1] = {3};
  EXPECT_EQ(moe_st_check(f, q, 1, shape), moeErrorNotSupported);
  EXPECT_EQ(moe_st_check(f, b, 1, shape), moeSuccess);
  moe_st_close(f);
}

TEST(Reader, EdgeShapesAndSizes) {
  // Scalars, zero-sized tensors (no bytes, may share an offset), sub-byte F4 packing.
  std::string h = "{\"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]},"
                  " \"z\": {\"dtype\": \"BF16\", \"shape\": [0, 7], \"data_offsets\": [4, 4]},"
                  " \"y\": {\"dtype\": \"F16\", \"shape\": [2, 0], \"data_offsets\": [4, 4]},"
                  " \"p\": {\"dtype\": \"F4\", \"shape\": [4], \"data_offsets\": [4, 6]}}";
  moe_st_file *f = Parse(FileBytes(h, std::string(6, '\0')));
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(moe_st_find(f, "s")->numel, 1u);
  EXPECT_EQ(moe_st_find(f, "z")->numel, 0u);
  moe_st_close(f);
  Parse(FileBytes("{\"p\": {\"dtype\": \"F4\", \"shape\": [3], \"data_offsets\": [0, 2]}}",
                  std::string(2, '\0')),
        moeErrorFormat);  // 12 bits is not a whole number of bytes
  // 2^32 * 2^32 elements: the product overflows 64 bits.
  Parse(FileBytes("{\"o\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296],"
                  " \"data_offsets\": [0, 0]}}", ""),
        moeErrorFormat);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("overflows"), std::string::npos);
  // Non-integral, negative and too-large numbers.
  Parse(FileBytes("{\"o\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 6]}}",
                  std::string(6, '\0')), moeErrorFormat);
  Parse(FileBytes("{\"o\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", ""),
        moeErrorFormat);
  Parse(FileBytes("{\"o\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}",
                  std::string(8, '\0')), moeErrorFormat);
  Parse(FileBytes("{\"o\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}",
                  std::string(4, '\0')), moeErrorFormat);
  Parse(FileBytes("{\"o\": [1]}", ""), moeErrorFormat);
  Parse(std::string(), moeErrorFormat);
}

TEST(Reader, EmptyFileOnDisk) {
  TempDir dir;
  WriteFile(dir / "e.safetensors", "");
  moe_st_file *f = nullptr;
  EXPECT_EQ(moe_st_open((dir / "e.safetensors").c_str(), &f), moeErrorFormat);
  EXPECT_EQ(moe_st_open((dir / "missing.safetensors").c_str(), &f), moeErrorIo);
  EXPECT_EQ(moe_st_open(dir.path.c_str(), &f), moeErrorIo);  // a directory
  EXPECT_EQ(f, nullptr);
}

// Shards open on first use, each once; a shard no asked-for tensor lives in stays closed.
TEST(Checkpoint, ShardsOpenLazilyAndOnce) {
  Spec s;
  s.family = Family::Qwen3Moe;
  s.shards = 3;
  TempDir dir;
  Weights w = RandomWeights(s, 1);
  WriteCheckpoint(dir.path, s, w);
  moe_ckpt *c = nullptr;
  ASSERT_EQ(moe_ckpt_open(dir.path.c_str(), &c), moeSuccess) << moeGetLastErrorMessage();
  ASSERT_EQ(c->num_files, 3u);
  for (size_t i = 0; i < c->num_files; ++i) EXPECT_EQ(c->opened[i], nullptr);
  moeStatus_t st;
  EXPECT_EQ(moe_ckpt_has(c, "model.layers.1.mlp.experts.7.up_proj.weight", &st), 1);
  EXPECT_EQ(moe_ckpt_has(c, "model.layers.1.mlp.experts.8.up_proj.weight", &st), 0);
  for (size_t i = 0; i < c->num_files; ++i) EXPECT_EQ(c->opened[i], nullptr) << "has() opened";

  const moe_st_file *f1 = nullptr, *f2 = nullptr;
  const moe_st_tensor *t = nullptr;
  ASSERT_EQ(moe_ckpt_get(c, "model.layers.1.mlp.experts.0.gate_proj.weight", &f1, &t), moeSuccess);
  ASSERT_EQ(moe_ckpt_get(c, "model.layers.1.mlp.experts.1.down_proj.weight", &f2, &t), moeSuccess);
  EXPECT_EQ(f1, f2);  // the same shard, opened once
  size_t open = 0, which = 99;
  for (size_t i = 0; i < c->num_files; ++i)
    if (c->opened[i]) ++open, which = i;
  EXPECT_EQ(open, 1u);
  EXPECT_NE(std::string(c->files[which]).find(ShardName(1, 3)), std::string::npos);
  EXPECT_EQ(moe_ckpt_get(c, "model.layers.1.mlp.nope", &f1, &t), moeErrorFormat);
  EXPECT_NE(std::string(moeGetLastErrorMessage()).find("model.layers.1.mlp.nope"),
            std::string::npos);
  moe_ckpt_close(c);
  moe_ckpt_close(nullptr);
  moe_st_close(nullptr);
}

}  // namespace
