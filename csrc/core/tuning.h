/* Kernel choices of the CUDA backend's grouped GEMMs, per shape: a table measured by
 * `moe-bench --tune` on the GPU at hand, read by moeContextLoadTuning (or from the file named
 * by MOE_TUNING_FILE at context creation). Shapes the table does not cover keep the built-in
 * heuristic. The format, one entry per line ('#' starts a comment):
 *
 *     <dtype: f32|f16|bf16>  <N>  <K>  <rows_max>  <kernel: skinny|tiled|wgmma>
 *
 * An entry applies to a GEMM of that dtype, N (columns of B, 2 * I when gated) and K whose groups
 * average at most rows_max rows, and rows_max is the smallest such among the entries of that
 * shape. skinny: groups of at most MOE_GEMM_SKINNY_ROWS rows stream B on the skinny kernel (the
 * rest on tiles); tiled: every group on tensor-core (or SIMT) tiles; wgmma: every group on the
 * Hopper wgmma/TMA tiles (bf16/f16 on compute capability 9.x; elsewhere, and for shapes that
 * kernel cannot take, as tiled).
 *
 * MOE_GEMM_KERNEL=skinny|tiled|wgmma in the environment at context creation overrides the table
 * and the heuristic for every GEMM of the context (testing: the GPU suites run once forcing
 * wgmma). */
#ifndef MOE_CORE_TUNING_H
#define MOE_CORE_TUNING_H

#include <stddef.h>
#include <stdint.h>

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  MOE_GEMM_KERNEL_AUTO = -1, /* the heuristic */
  MOE_GEMM_KERNEL_TILED = 0,
  MOE_GEMM_KERNEL_SKINNY = 1,
  MOE_GEMM_KERNEL_WGMMA = 2
} moeGemmKernel;

typedef struct {
  int32_t dtype; /* moeDtype_t */
  int64_t N, K, rows_max;
  int32_t kernel; /* moeGemmKernel, not AUTO */
} moeTuningEntry;

typedef struct {
  moeTuningEntry *entries;
  size_t count;
} moeTuningTable;

/* Parses text (NUL-terminated) into *out (replaced only on success). name: for messages.
 * Returns: moeSuccess, InvalidArgument (a malformed line: the message names name:line and the
 * field), OutOfMemory. */
moeStatus_t moe_tuning_parse(const char *text, const char *name, moeTuningTable *out);

/* Reads and parses a file. Returns: as moe_tuning_parse, and InvalidArgument when unreadable. */
moeStatus_t moe_tuning_load(const char *path, moeTuningTable *out);

void moe_tuning_free(moeTuningTable *t);

/* The kernel named by s ("skinny", "tiled", "wgmma"): 1 and *k set, else 0. */
int moe_tuning_parse_kernel(const char *s, int32_t *k);

/* The kernel for a GEMM of (dtype, N, K) whose groups average rows rows: MOE_GEMM_KERNEL_AUTO
 * when the table has no entry of that shape with rows_max >= rows. */
moeGemmKernel moe_tuning_lookup(const moeTuningTable *t, int32_t dtype, int64_t N, int64_t K,
                                int64_t rows);

#ifdef __cplusplus
}
#endif
#endif
