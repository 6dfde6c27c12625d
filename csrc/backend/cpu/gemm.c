/* Dense fp32 kernels of the CPU backend: the canonical dot product and a register-blocked
 * C = A B^T that reproduces it bit for bit for every element, so that a result never depends on
 * where an element falls in a block, on the thread count, or on the vector width the compiler
 * picks (lanes are explicit; ISO C mode compiles with -ffp-contract=off, so no FMA contraction).
 *
 * Canonical order of dot(a, b, n): lane l in [0, 8) accumulates a[k] * b[k] for k = l (mod 8)
 * over the multiple-of-8 prefix in increasing k; the lanes are added ((0+1)+(2+3))+((4+5)+(6+7));
 * then the tail elements are added in increasing k. */
#include "backend/cpu/cpu_internal.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#define LANES 8
#define MR_MAX 4
#define NR_MAX 6

/* AVX2 register blocks (rows of A x rows of B), measured on the dev machine (Zen 4, T=256
 * H=1024 I=3584, one thread): fp32 3x4; bf16 3x5 (160 ms against 218 for 3x4); f16 2x6 (211
 * against 274). Any block gives the same bits. */
#ifndef MOE_F32_MR
#define MOE_F32_MR 3
#define MOE_F32_NR 4
#endif
#ifndef MOE_BF16_MR
#define MOE_BF16_MR 3
#define MOE_BF16_NR 5
#endif
#ifndef MOE_F16_MR
#define MOE_F16_MR 2
#define MOE_F16_NR 6
#endif

static inline float lane_sum(const float *acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

float moe_cpu_dot(const float *a, const float *b, int64_t n) {
  float acc[LANES] = {0};
  int64_t n8 = n & ~(int64_t)(LANES - 1), k;
  for (k = 0; k < n8; k += LANES)
    for (int l = 0; l < LANES; ++l) acc[l] += a[k + l] * b[k + l];
  float s = lane_sum(acc);
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

/* mr x nr block of C, mr <= MR_MAX, nr <= NR_MAX, compile-time constants after inlining. */
static inline __attribute__((always_inline)) void kernel(const int mr, const int nr,
                                                         const float *restrict A, int64_t lda,
                                                         const float *restrict B, int64_t ldb,
                                                         int64_t kd, float *restrict C,
                                                         int64_t ldc) {
  float acc[MR_MAX][NR_MAX][LANES];
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j)
      for (int l = 0; l < LANES; ++l) acc[i][j][l] = 0.0f;
  const int64_t k8 = kd & ~(int64_t)(LANES - 1);
  for (int64_t k = 0; k < k8; k += LANES) {
    for (int i = 0; i < mr; ++i) {
      const float *a = A + i * lda + k;
      for (int j = 0; j < nr; ++j) {
        const float *b = B + j * ldb + k;
        for (int l = 0; l < LANES; ++l) acc[i][j][l] += a[l] * b[l];
      }
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      float s = lane_sum(acc[i][j]);
      for (int64_t k = k8; k < kd; ++k) s += A[i * lda + k] * B[j * ldb + k];
      C[i * ldc + j] = s;
    }
}

static inline float bf16_f32(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* The same block with B in bf16, widened in registers (exactly: bf16 -> fp32 is a shift), so
 * the arithmetic and its order are those of kernel(): the same bits. */
static inline __attribute__((always_inline)) void kernel_bf16(const int mr, const int nr,
                                                              const float *restrict A, int64_t lda,
                                                              const uint16_t *restrict B,
                                                              int64_t ldb, int64_t kd,
                                                              float *restrict C, int64_t ldc) {
  float acc[MR_MAX][NR_MAX][LANES];
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j)
      for (int l = 0; l < LANES; ++l) acc[i][j][l] = 0.0f;
  const int64_t k8 = kd & ~(int64_t)(LANES - 1);
  for (int64_t k = 0; k < k8; k += LANES) {
    float bv[NR_MAX][LANES];
    for (int j = 0; j < nr; ++j)
      for (int l = 0; l < LANES; ++l) bv[j][l] = bf16_f32(B[j * ldb + k + l]);
    for (int i = 0; i < mr; ++i) {
      const float *a = A + i * lda + k;
      for (int j = 0; j < nr; ++j)
        for (int l = 0; l < LANES; ++l) acc[i][j][l] += a[l] * bv[j][l];
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      float s = lane_sum(acc[i][j]);
      for (int64_t k = k8; k < kd; ++k) s += A[i * lda + k] * bf16_f32(B[j * ldb + k]);
      C[i * ldc + j] = s;
    }
}

/* The blocked loop over C for an MR x NR register block. Tails use smaller blocks of the same
 * kernel, which computes the same bits per element. */
#define GEMM_BODY(kernel, MR, NR)                                                                  \
  int64_t m = 0;                                                                                   \
  for (; m + MR <= M; m += MR) {                                                                   \
    int64_t n = 0;                                                                                 \
    for (; n + NR <= N; n += NR)                                                                   \
      kernel(MR, NR, A + m * lda, lda, B + n * ldb, ldb, kd, C + m * ldc + n, ldc);                \
    for (; n < N; ++n)                                                                             \
      kernel(MR, 1, A + m * lda, lda, B + n * ldb, ldb, kd, C + m * ldc + n, ldc);                 \
  }                                                                                                \
  for (; m < M; ++m) {                                                                             \
    int64_t n = 0;                                                                                 \
    for (; n + NR <= N; n += NR)                                                                   \
      kernel(1, NR, A + m * lda, lda, B + n * ldb, ldb, kd, C + m * ldc + n, ldc);                 \
    for (; n < N; ++n) kernel(1, 1, A + m * lda, lda, B + n * ldb, ldb, kd, C + m * ldc + n, ldc); \
  }

/* Baseline x86-64 (SSE2: 16 xmm registers): 4 x 2 blocks, 8 pairs x 2 xmm accumulators. */
static void gemm_generic(const float *A, int64_t lda, int64_t M, const float *B, int64_t ldb,
                         int64_t N, int64_t kd, float *C, int64_t ldc) {
  GEMM_BODY(kernel, 4, 2)
}

static void gemm_bf16_generic(const float *A, int64_t lda, int64_t M, const uint16_t *B,
                              int64_t ldb, int64_t N, int64_t kd, float *C, int64_t ldc) {
  GEMM_BODY(kernel_bf16, 4, 2)
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(MOE_NO_AVX2)
#define MOE_HAVE_AVX2_PATH 1
/* AVX2 (16 ymm registers): blocks of MOE_*_MR x MOE_*_NR, 1 ymm accumulator per pair. ISO C
 * compiles with -ffp-contract=off, so no FMA is formed: the same bits as the generic path. */
__attribute__((target("avx2"))) static void gemm_avx2(const float *A, int64_t lda, int64_t M,
                                                      const float *B, int64_t ldb, int64_t N,
                                                      int64_t kd, float *C, int64_t ldc) {
  GEMM_BODY(kernel, MOE_F32_MR, MOE_F32_NR)
}

__attribute__((target("avx2"))) static void gemm_bf16_avx2(const float *A, int64_t lda, int64_t M,
                                                           const uint16_t *B, int64_t ldb,
                                                           int64_t N, int64_t kd, float *C,
                                                           int64_t ldc) {
  GEMM_BODY(kernel_bf16, MOE_BF16_MR, MOE_BF16_NR)
}

#ifndef MOE_NO_F16C
#define MOE_HAVE_F16_DIRECT 1
/* The block with B in f16, widened in registers by F16C (exact, like the scalar conversion). */
__attribute__((target("avx2,f16c"))) static inline __attribute__((always_inline)) void kernel_f16(
    const int mr, const int nr, const float *restrict A, int64_t lda, const uint16_t *restrict B,
    int64_t ldb, int64_t kd, float *restrict C, int64_t ldc) {
  float acc[MR_MAX][NR_MAX][LANES];
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j)
      for (int l = 0; l < LANES; ++l) acc[i][j][l] = 0.0f;
  const int64_t k8 = kd & ~(int64_t)(LANES - 1);
  for (int64_t k = 0; k < k8; k += LANES) {
    float bv[NR_MAX][LANES];
    for (int j = 0; j < nr; ++j)
      _mm256_storeu_ps(bv[j], _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(B + j * ldb + k))));
    for (int i = 0; i < mr; ++i) {
      const float *a = A + i * lda + k;
      for (int j = 0; j < nr; ++j)
        for (int l = 0; l < LANES; ++l) acc[i][j][l] += a[l] * bv[j][l];
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      float s = lane_sum(acc[i][j]);
      for (int64_t k = k8; k < kd; ++k) s += A[i * lda + k] * moe_f16_to_f32(B[j * ldb + k]);
      C[i * ldc + j] = s;
    }
}

__attribute__((target("avx2,f16c"))) static void gemm_f16_avx2(const float *A, int64_t lda,
                                                               int64_t M, const uint16_t *B,
                                                               int64_t ldb, int64_t N, int64_t kd,
                                                               float *C, int64_t ldc) {
  GEMM_BODY(kernel_f16, MOE_F16_MR, MOE_F16_NR)
}
#endif
#endif

int moe_cpu_has_f16_gemm(void) {
#ifdef MOE_HAVE_F16_DIRECT
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
  return 0;
#endif
}

void moe_cpu_gemm_nt_f16(const float *A, int64_t lda, int64_t M, const uint16_t *B, int64_t ldb,
                         int64_t N, int64_t kd, float *C, int64_t ldc) {
#ifdef MOE_HAVE_F16_DIRECT
  gemm_f16_avx2(A, lda, M, B, ldb, N, kd, C, ldc);
#else
  (void)A, (void)lda, (void)M, (void)B, (void)ldb, (void)N, (void)kd, (void)C, (void)ldc;
#endif
}

void moe_cpu_gemm_nt(const float *A, int64_t lda, int64_t M, const float *B, int64_t ldb, int64_t N,
                     int64_t kd, float *C, int64_t ldc) {
#ifdef MOE_HAVE_AVX2_PATH
  if (__builtin_cpu_supports("avx2")) { /* a load and a test of libgcc's cpu model */
    gemm_avx2(A, lda, M, B, ldb, N, kd, C, ldc);
    return;
  }
#endif
  gemm_generic(A, lda, M, B, ldb, N, kd, C, ldc);
}

void moe_cpu_gemm_nt_bf16(const float *A, int64_t lda, int64_t M, const uint16_t *B, int64_t ldb,
                          int64_t N, int64_t kd, float *C, int64_t ldc) {
#ifdef MOE_HAVE_AVX2_PATH
  if (__builtin_cpu_supports("avx2")) {
    gemm_bf16_avx2(A, lda, M, B, ldb, N, kd, C, ldc);
    return;
  }
#endif
  gemm_bf16_generic(A, lda, M, B, ldb, N, kd, C, ldc);
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(MOE_NO_F16C)
#define MOE_HAVE_F16C_PATH 1
/* f16 -> fp32 with the F16C instruction: exact, like the scalar conversion, 8 at a time. */
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(float *dst, const uint16_t *src,
                                                                size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  for (; i < n; ++i) dst[i] = moe_f16_to_f32(src[i]);
}
#endif

void moe_cpu_rows_to_f32(float *dst, const void *src, moeDtype_t dtype, int64_t row0, int64_t rows,
                         int64_t cols) {
  const size_t n = (size_t)rows * (size_t)cols, base = (size_t)row0 * (size_t)cols;
  switch (dtype) {
    case moeBFloat16: {
      const uint16_t *s = (const uint16_t *)src + base;
      for (size_t i = 0; i < n; ++i) { /* bf16 -> fp32 is a shift: exact, vectorizes */
        uint32_t u = (uint32_t)s[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
      }
      break;
    }
    case moeFloat16: {
      const uint16_t *s = (const uint16_t *)src + base;
#ifdef MOE_HAVE_F16C_PATH
      if (__builtin_cpu_supports("f16c")) {
        f16_to_f32_f16c(dst, s, n);
        break;
      }
#endif
      for (size_t i = 0; i < n; ++i) dst[i] = moe_f16_to_f32(s[i]);
      break;
    }
    default:
      memcpy(dst, (const float *)src + base, n * sizeof(float));
      break;
  }
}
