/* The GEMM tuning table: parse, load, look up (format in tuning.h). */
#include "core/tuning.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#define MAX_TABLE_BYTES (16u << 20)

static int parse_dtype(const char *s, int32_t *dt) {
  if (!strcmp(s, "f32")) *dt = moeFloat32;
  else if (!strcmp(s, "f16")) *dt = moeFloat16;
  else if (!strcmp(s, "bf16")) *dt = moeBFloat16;
  else return 0;
  return 1;
}

int moe_tuning_parse_kernel(const char *s, int32_t *k) {
  if (!strcmp(s, "skinny")) *k = MOE_GEMM_KERNEL_SKINNY;
  else if (!strcmp(s, "tiled")) *k = MOE_GEMM_KERNEL_TILED;
  else if (!strcmp(s, "wgmma")) *k = MOE_GEMM_KERNEL_WGMMA;
  else return 0;
  return 1;
}

/* A positive integer field, whole. */
static int parse_count(const char *s, int64_t *v) {
  char *end;
  errno = 0;
  long long x = strtoll(s, &end, 10);
  if (errno || *end || end == s || x < 1) return 0;
  *v = (int64_t)x;
  return 1;
}

moeStatus_t moe_tuning_parse(const char *text, const char *name, moeTuningTable *out) {
  moeTuningTable t = {NULL, 0};
  size_t cap = 0;
  int line_no = 0;
  const char *p = text;
  while (*p) {
    ++line_no;
    const char *eol = strchr(p, '\n');
    size_t n = eol ? (size_t)(eol - p) : strlen(p);
    char line[512];
    if (n >= sizeof line) {
      moe_tuning_free(&t);
      return moe_error(moeErrorInvalidArgument, "tuning table %s:%d: line longer than %zu "
                       "characters", name, line_no, sizeof line - 1);
    }
    memcpy(line, p, n);
    line[n] = '\0';
    p = eol ? eol + 1 : p + n;
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    char *field[6];
    int nf = 0;
    for (char *c = line; *c;) { /* split on blanks in place (strtok is not thread-safe) */
      while (*c == ' ' || *c == '\t' || *c == '\r') *c++ = '\0';
      if (!*c) break;
      if (nf < 6) field[nf] = c;
      ++nf;
      while (*c && *c != ' ' && *c != '\t' && *c != '\r') ++c;
    }
    if (nf == 0) continue;
    static const char *const kFields = "<dtype> <N> <K> <rows_max> <kernel>";
    if (nf != 5) {
      moe_tuning_free(&t);
      return moe_error(moeErrorInvalidArgument, "tuning table %s:%d: %d fields, expected 5: %s",
                       name, line_no, nf, kFields);
    }
    moeTuningEntry e;
    const char *bad = NULL;
    if (!parse_dtype(field[0], &e.dtype)) bad = "dtype (f32, f16 or bf16)";
    else if (!parse_count(field[1], &e.N)) bad = "N (an integer >= 1)";
    else if (!parse_count(field[2], &e.K)) bad = "K (an integer >= 1)";
    else if (!parse_count(field[3], &e.rows_max)) bad = "rows_max (an integer >= 1)";
    else if (!moe_tuning_parse_kernel(field[4], &e.kernel)) bad = "kernel (skinny, tiled or wgmma)";
    if (bad) {
      moe_tuning_free(&t);
      return moe_error(moeErrorInvalidArgument, "tuning table %s:%d: bad %s", name, line_no, bad);
    }
    if (t.count == cap) {
      size_t grow = cap ? 2 * cap : 16;
      moeTuningEntry *ne = (moeTuningEntry *)realloc(t.entries, grow * sizeof *ne);
      if (!ne) {
        moe_tuning_free(&t);
        return moe_error(moeErrorOutOfMemory, "tuning table %s: out of host memory", name);
      }
      t.entries = ne;
      cap = grow;
    }
    t.entries[t.count++] = e;
  }
  moe_tuning_free(out);
  *out = t;
  return moeSuccess;
}

moeStatus_t moe_tuning_load(const char *path, moeTuningTable *out) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return moe_error(moeErrorInvalidArgument, "tuning table %s: cannot open (%s)", path,
                     strerror(errno));
  char *buf = (char *)malloc(MAX_TABLE_BYTES + 1);
  if (!buf) {
    fclose(f);
    return moe_error(moeErrorOutOfMemory, "tuning table %s: out of host memory", path);
  }
  size_t n = fread(buf, 1, MAX_TABLE_BYTES + 1, f);
  int err = ferror(f);
  fclose(f);
  moeStatus_t st;
  if (err)
    st = moe_error(moeErrorInvalidArgument, "tuning table %s: read error", path);
  else if (n > MAX_TABLE_BYTES)
    st = moe_error(moeErrorInvalidArgument, "tuning table %s: larger than %u bytes", path,
                   MAX_TABLE_BYTES);
  else if (memchr(buf, '\0', n))
    st = moe_error(moeErrorInvalidArgument, "tuning table %s: not a text file (NUL byte)", path);
  else {
    buf[n] = '\0';
    st = moe_tuning_parse(buf, path, out);
  }
  free(buf);
  return st;
}

void moe_tuning_free(moeTuningTable *t) {
  free(t->entries);
  t->entries = NULL;
  t->count = 0;
}

moeGemmKernel moe_tuning_lookup(const moeTuningTable *t, int32_t dtype, int64_t N, int64_t K,
                                int64_t rows) {
  const moeTuningEntry *best = NULL;
  for (size_t i = 0; t && i < t->count; ++i) {
    const moeTuningEntry *e = &t->entries[i];
    if (e->dtype != dtype || e->N != N || e->K != K || e->rows_max < rows) continue;
    if (!best || e->rows_max < best->rows_max) best = e;
  }
  return best ? (moeGemmKernel)best->kernel : MOE_GEMM_KERNEL_AUTO;
}
