/* libFuzzer target for the safetensors header parser (csrc/io/safetensors.c).
 * Build: CC=clang cmake -DMOE_BUILD_FUZZERS=ON ...; run: ctest -L fuzz, or
 *   build/tests/fuzz_safetensors -max_total_time=30 -dict=tests/io/safetensors.dict \
 *       /tmp/corpus tests/io/corpus
 * Every input either fails with a status and a message, or parses into tensors whose extents
 * lie inside the input: the target touches the first and last byte of each (ASan checks). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  moe_st_file *f = NULL;
  if (moe_st_parse(data, size, "fuzz.safetensors", &f) != moeSuccess) {
    if (f) __builtin_trap(); /* failure must leave no result */
    return 0;
  }
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < f->count; ++i) {
    const moe_st_tensor *t = &f->tensors[i];
    if (t->begin > t->end || t->end > f->data_size) __builtin_trap();
    /* The shape's element count, recomputed with overflow checks, is what the parser kept. */
    uint64_t numel = 1;
    int zero = 0, wrapped = 0;
    for (int32_t d = 0; d < t->ndim; ++d) {
      if (t->shape[d] < 0) __builtin_trap();
      if (t->shape[d] == 0) zero = 1;
      else wrapped |= __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel);
    }
    if (zero) numel = 0;
    else if (wrapped) __builtin_trap();
    if (numel != t->numel) __builtin_trap();
    if (t->end > t->begin) sink ^= t->data[0] ^ t->data[t->end - t->begin - 1];
    if (moe_st_find(f, t->name) != t) __builtin_trap();
    int64_t shape[MOE_ST_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    (void)moe_st_check(f, t, t->ndim, shape);
  }
  (void)sink;
  moe_st_close(f);
  return 0;
}
