// The GEMM tuning table (csrc/core/tuning.c, internal): format, lookup, errors; and its public
// entry moeContextLoadTuning on a CPU context.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/context.h"
#include "core/tuning.h"
#include "moe/moe.h"

namespace {

struct Table {
  moeTuningTable t{nullptr, 0};
  ~Table() { moe_tuning_free(&t); }
};

std::string Message() { return moeGetLastErrorMessage(); }

TEST(Tuning, ParsesCommentsBlanksAndLooksUpTheSmallestCoveringRows) {
  Table tab;
  const char *text =
      "# libmoe tuning table\n"
      "\n"
      "bf16 28672 4096 1   skinny   # T = 1\n"
      "bf16 28672 4096 64  tiled\n"
      "bf16 28672 4096 4096 wgmma\n"
      "  bf16\t28672 4096 8 skinny\r\n"
      "f16 100 200 4 tiled";  // no final newline
  ASSERT_EQ(moe_tuning_parse(text, "t", &tab.t), moeSuccess) << Message();
  ASSERT_EQ(tab.t.count, 5u);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 28672, 4096, 1), MOE_GEMM_KERNEL_SKINNY);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 28672, 4096, 5), MOE_GEMM_KERNEL_SKINNY);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 28672, 4096, 9), MOE_GEMM_KERNEL_TILED);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 28672, 4096, 64), MOE_GEMM_KERNEL_TILED);
  // beyond every rows_max, another shape, another dtype: the heuristic
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 28672, 4096, 65), MOE_GEMM_KERNEL_WGMMA);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 28672, 4096, 4096), MOE_GEMM_KERNEL_WGMMA);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 28672, 4096, 4097), MOE_GEMM_KERNEL_AUTO);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeBFloat16, 4096, 14336, 1), MOE_GEMM_KERNEL_AUTO);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeFloat32, 28672, 4096, 1), MOE_GEMM_KERNEL_AUTO);
  EXPECT_EQ(moe_tuning_lookup(&tab.t, moeFloat16, 100, 200, 3), MOE_GEMM_KERNEL_TILED);
  EXPECT_EQ(moe_tuning_lookup(nullptr, moeFloat16, 100, 200, 3), MOE_GEMM_KERNEL_AUTO);
}

TEST(Tuning, MalformedLinesNameTheLineAndTheFieldAndKeepTheOldTable) {
  Table tab;
  ASSERT_EQ(moe_tuning_parse("bf16 1 2 3 tiled\n", "old", &tab.t), moeSuccess);
  const struct {
    const char *text, *expect;
  } cases[] = {
      {"bf16 1 2 3\n", "t:1: 4 fields, expected 5"},
      {"bf16 1 2 3 tiled extra\n", "t:1: 6 fields"},
      {"\n# ok\nfp8 1 2 3 tiled\n", "t:3: bad dtype"},
      {"bf16 0 2 3 tiled\n", "bad N"},
      {"bf16 1 2x 3 tiled\n", "bad K"},
      {"bf16 1 2 -3 tiled\n", "bad rows_max"},
      {"bf16 1 2 99999999999999999999 tiled\n", "bad rows_max"},
      {"bf16 1 2 3 hopper\n", "bad kernel (skinny, tiled or wgmma)"},
  };
  for (const auto &c : cases) {
    EXPECT_EQ(moe_tuning_parse(c.text, "t", &tab.t), moeErrorInvalidArgument) << c.text;
    EXPECT_NE(Message().find(c.expect), std::string::npos) << Message();
  }
  EXPECT_EQ(tab.t.count, 1u);  // the old table survived every failure
  std::string long_line(600, ' ');
  long_line += "bf16 1 2 3 tiled";
  EXPECT_EQ(moe_tuning_parse(long_line.c_str(), "t", &tab.t), moeErrorInvalidArgument);
  EXPECT_NE(Message().find("longer than"), std::string::npos);
}

TEST(Tuning, PublicLoadOnACpuContext) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t ctx = nullptr;
  ASSERT_EQ(moeContextCreate(&ctx, &cc), moeSuccess);
  const std::string path = testing::TempDir() + "moe_tuning_test.txt";
  FILE *f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("bf16 8 8 1 skinny\nbf16 8 8 x tiled\n", f);
  std::fclose(f);
  EXPECT_EQ(moeContextLoadTuning(ctx, path.c_str()), moeErrorInvalidArgument);
  EXPECT_NE(Message().find(":2: bad rows_max"), std::string::npos) << Message();
  EXPECT_EQ(moeContextLoadTuning(ctx, "/nonexistent/table"), moeErrorInvalidArgument);
  EXPECT_NE(Message().find("cannot open"), std::string::npos) << Message();
  f = std::fopen(path.c_str(), "w");
  std::fputs("bf16 8 8 1 skinny\n", f);
  std::fclose(f);
  EXPECT_EQ(moeContextLoadTuning(ctx, path.c_str()), moeSuccess) << Message();
  EXPECT_EQ(moeContextLoadTuning(ctx, nullptr), moeSuccess);
  EXPECT_EQ(moeContextLoadTuning(nullptr, path.c_str()), moeErrorInvalidArgument);
  moeContextDestroy(ctx);
  // A bad table named by the environment fails context creation, naming the variable.
  setenv("MOE_TUNING_FILE", "/nonexistent/table", 1);
  EXPECT_EQ(moeContextCreate(&ctx, &cc), moeErrorInvalidArgument);
  EXPECT_NE(Message().find("MOE_TUNING_FILE"), std::string::npos) << Message();
  // ... and keeps the loader's message whole (it is also the prefix's argument).
  EXPECT_NE(Message().find("tuning table /nonexistent/table: cannot open"), std::string::npos) << Message();
  EXPECT_EQ(Message().find("moeContextCreate"), Message().rfind("moeContextCreate")) << Message();
  setenv("MOE_TUNING_FILE", path.c_str(), 1);
  ASSERT_EQ(moeContextCreate(&ctx, &cc), moeSuccess) << Message();
  moeContextDestroy(ctx);
  unsetenv("MOE_TUNING_FILE");
  std::remove(path.c_str());
}

// MOE_GEMM_KERNEL forces a kernel choice for the context; a bad value fails creation.
TEST(Tuning, EnvironmentForcesTheKernelChoice) {
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;
  moeContext_t ctx = nullptr;
  ASSERT_EQ(moeContextCreate(&ctx, &cc), moeSuccess);
  EXPECT_EQ(ctx->gemm_kernel, MOE_GEMM_KERNEL_AUTO);
  moeContextDestroy(ctx);
  const struct {
    const char *value;
    int32_t kernel;
  } ok[] = {{"wgmma", MOE_GEMM_KERNEL_WGMMA}, {"tiled", MOE_GEMM_KERNEL_TILED}, {"skinny", MOE_GEMM_KERNEL_SKINNY}};
  for (const auto &c : ok) {
    setenv("MOE_GEMM_KERNEL", c.value, 1);
    ASSERT_EQ(moeContextCreate(&ctx, &cc), moeSuccess) << Message();
    EXPECT_EQ(ctx->gemm_kernel, c.kernel) << c.value;
    moeContextDestroy(ctx);
  }
  setenv("MOE_GEMM_KERNEL", "hopper", 1);
  EXPECT_EQ(moeContextCreate(&ctx, &cc), moeErrorInvalidArgument);
  EXPECT_NE(Message().find("MOE_GEMM_KERNEL = \"hopper\" must be skinny, tiled or wgmma"), std::string::npos)
      << Message();
  unsetenv("MOE_GEMM_KERNEL");
}

}  // namespace
