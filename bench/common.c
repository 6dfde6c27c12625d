/* moe-bench: small helpers shared by every mode. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#ifdef MOE_BENCH_HAVE_COMMIT_H
#include "bench_commit.h" /* generated at build time by bench/commit.cmake */
#endif
#ifndef MOE_BENCH_GIT_COMMIT
#define MOE_BENCH_GIT_COMMIT "unknown"
#endif

const char *const bench_stage_names[BENCH_NUM_STAGES] = {"route", "permute", "experts", "shared",
                                                          "combine"};

double bench_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void bench_sort(double *v, int n) { qsort(v, (size_t)n, sizeof(double), cmp_double); }

double bench_median(double *v, int n) {
  if (n <= 0) return -1.0;
  bench_sort(v, n);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

const char *bench_dtype_name(moeDtype_t dtype) {
  switch (dtype) {
    case moeFloat32: return "f32";
    case moeFloat16: return "f16";
    case moeBFloat16: return "bf16";
  }
  return "?";
}

size_t bench_dtype_size(moeDtype_t dtype) { return dtype == moeFloat32 ? 4 : 2; }

static const char *const kRoutingNames[moeRoutingCount] = {
    "topk-softmax", "softmax-topk", "sigmoid-group-topk", "softmax-group-topk",
    "sigmoid-top1-input-scale", "top-p", "expert-choice", "dense"};

const char *bench_routing_name(moeRouting_t routing) {
  return (int)routing >= 0 && routing < moeRoutingCount ? kRoutingNames[routing] : "?";
}

int bench_routing_parse(const char *s) {
  for (int i = 0; i < moeRoutingCount; ++i)
    if (strcasecmp(s, kRoutingNames[i]) == 0) return i;
  return -1;
}

void bench_check_status(moeStatus_t st, const char *what) {
  if (st == moeSuccess) return;
  fprintf(stderr, "moe-bench: %s failed: %s\n  %s\n", what, moeGetErrorString(st),
          moeGetLastErrorMessage());
  exit(1);
}

void *bench_xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "moe-bench: out of host memory (%zu bytes)\n", bytes);
    exit(1);
  }
  return p;
}

void *bench_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) {
    fprintf(stderr, "moe-bench: out of host memory (%zu x %zu bytes)\n", n, size);
    exit(1);
  }
  return p;
}

void bench_fill_env_common(benchEnv *env) {
  memset(env, 0, sizeof *env);
  const char *commit = getenv("MOE_BENCH_COMMIT"); /* overrides the configure-time hash */
  snprintf(env->commit, sizeof env->commit, "%s", commit && *commit ? commit : MOE_BENCH_GIT_COMMIT);
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(env->date, sizeof env->date, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (gethostname(env->host, sizeof env->host) != 0) snprintf(env->host, sizeof env->host, "?");
  env->host[sizeof env->host - 1] = '\0';
  snprintf(env->device, sizeof env->device, "cpu");
  snprintf(env->driver, sizeof env->driver, "-");
  snprintf(env->runtime, sizeof env->runtime, "-");
  env->copy_bw = -1.0;
  env->gemm_rate = -1.0;
  env->l2_bytes = -1.0;
  env->mem_bytes = -1.0;
}

/* ---- storage dtypes --------------------------------------------------------------------- */
static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

uint16_t bench_f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float bench_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t bench_f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  if (a < 0x38800000u) {
    float v = bits_f32(a) * 16777216.0f;
    uint32_t m = (uint32_t)v;
    float rem = v - (float)m;
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t h = (((a >> 23) - 112u) << 10) | ((a & 0x7fffffu) >> 13);
  uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

float bench_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    float v = (float)m * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

float bench_round_to(float v, moeDtype_t dtype) {
  switch (dtype) {
    case moeBFloat16: return bench_bf16_to_f32(bench_f32_to_bf16(v));
    case moeFloat16: return bench_f16_to_f32(bench_f32_to_f16(v));
    default: return v;
  }
}

void bench_store(void *dst, moeDtype_t dtype, size_t i, float v) {
  switch (dtype) {
    case moeBFloat16: ((uint16_t *)dst)[i] = bench_f32_to_bf16(v); break;
    case moeFloat16: ((uint16_t *)dst)[i] = bench_f32_to_f16(v); break;
    default: ((float *)dst)[i] = v; break;
  }
}

float bench_load(const void *src, moeDtype_t dtype, size_t i) {
  switch (dtype) {
    case moeBFloat16: return bench_bf16_to_f32(((const uint16_t *)src)[i]);
    case moeFloat16: return bench_f16_to_f32(((const uint16_t *)src)[i]);
    default: return ((const float *)src)[i];
  }
}

int bench_count_hit(const int32_t *ids, int64_t n, int32_t E, int64_t *selections) {
  unsigned char *seen = bench_xcalloc((size_t)E, 1);
  int hit = 0;
  int64_t sel = 0;
  for (int64_t i = 0; i < n; ++i) {
    int32_t e = ids[i];
    if (e < 0 || e >= E) continue;
    ++sel;
    if (!seen[e]) seen[e] = 1, ++hit;
  }
  free(seen);
  if (selections) *selections = sel;
  return hit;
}

int bench_token_counts(const benchOptions *opt, int gpu, const int64_t **tokens, int64_t *t_max) {
  static const int64_t kGpuSweep[] = {1, 8, 32, 64, 128, 256, 1024, 4096, 16384};
  static const int64_t kCpuSweep[] = {1, 8, 32, 64, 128, 256};
  static const int64_t kCpuDefault[] = {1, 32, 128};
#define MOE_BENCH_LIST(a) (*tokens = (a), n = (int)(sizeof(a) / sizeof((a)[0])))
  int n = opt->num_tokens;
  *tokens = opt->tokens;
  if (n == 0) {
    if (gpu) MOE_BENCH_LIST(kGpuSweep);
    else if (opt->sweep) MOE_BENCH_LIST(kCpuSweep);
    else MOE_BENCH_LIST(kCpuDefault);
  }
#undef MOE_BENCH_LIST
  *t_max = 1;
  for (int i = 0; i < n; ++i)
    if ((*tokens)[i] > *t_max) *t_max = (*tokens)[i];
  return n;
}
