/* The FFN helper shared by routed experts, shared experts and the head/merge projections:
 *   h   = round_dtype(act(W1 x + b1))   (gated: gate rows 0..F-1, up rows F..2F-1 of W1)
 *   out = W2 h + b2                      (stored in dtype, or summed in fp32 across FFNs)
 * Work items are (segment, block of output features); a thread reads its block of weight rows
 * in place (fp32, or bf16 widened in registers) or, for f16, converts it to an fp32 tile once
 * and reuses it for every row of the segment; the block stays in L2 while the segment's rows
 * stream through it. Each output element is
 * computed by one thread with the canonical dot (gemm.c), so results are deterministic and do
 * not depend on the thread count or the schedule. */
#include <math.h>
#include <omp.h>

#include "backend/cpu/cpu_internal.h"

/* fp32 floats of weight tile a thread aims for (128 KiB: the block stays in L2 while the rows
 * of the segment stream through it). */
#define TILE_TARGET 32768
#define NB_MAX 64 /* output features per work item, at most */
#define NB_MIN 4
#define ROWS_STEP 16 /* rows per gemm call: the accumulators stay on the stack */

/* Output features per block for a weight block of `per` matrices of kd columns. */
static int64_t block_features(int64_t kd, int per) {
  int64_t nb = TILE_TARGET / ((int64_t)per * (kd > 0 ? kd : 1));
  if (nb > NB_MAX) nb = NB_MAX;
  if (nb < NB_MIN) nb = NB_MIN;
  return nb & ~(int64_t)1;
}

int64_t moe_cpu_ffn_tile_floats(const moeCpuFfnShape *s) {
  const int per = s->gated ? 2 : 1;
  const int64_t t1 = per * block_features(s->d_model, per) * s->d_model;
  const int64_t t2 = block_features(s->d_ff, 1) * s->d_ff;
  return t1 > t2 ? t1 : t2;
}

int64_t moe_cpu_linear_tile_floats(int64_t kd) {
  return block_features(kd, 1) * kd;
}

static inline float sigmoidf_(float x) {
  return 1.0f / (1.0f + expf(-x));
}

/* The activation of one element; g is ignored by the non-gated activations. Comparisons are
 * written so that NaN propagates instead of being clamped away. */
static inline float activate(const moeCpuFfnShape *s, float g, float u) {
  switch (s->act) {
    case moeActivationSwiGLU:
      return g / (1.0f + expf(-g)) * u;
    case moeActivationGELU:
      return 0.5f * u * (1.0f + erff(u * 0.70710678118654752440f));
    case moeActivationReLU:
      return u < 0.0f ? 0.0f : u;
    case moeActivationSquaredReLU: {
      float r = u < 0.0f ? 0.0f : u;
      return r * r;
    }
    case moeActivationSwiGLUClamped: {
      const float lim = s->limit;
      g = g > lim ? lim : g;
      u = u > lim ? lim : (u < -lim ? -lim : u);
      return (u + 1.0f) * (g * sigmoidf_(s->alpha * g));
    }
    default:
      return NAN;
  }
}

static inline float round_dtype(moeDtype_t dtype, float v) {
  switch (dtype) {
    case moeBFloat16:
      return moe_bf16_to_f32(moe_f32_to_bf16(v));
    case moeFloat16:
      return moe_f16_to_f32(moe_f32_to_f16(v));
    default:
      return v;
  }
}

/* A block of weight rows as the gemm reads it: fp32, or bf16 read in place. */
typedef struct {
  const float *f32;
  const uint16_t *bf16;
  const uint16_t *f16;
} moeCpuB;

/* Rows [row0, row0 + nb) of a dtype matrix with kd columns: read in place when fp32 or bf16
 * (bf16 is widened in registers: measured faster than a converted fp32 tile from 1 to 256 rows
 * per expert, and the same bits), f16 too where F16C does it, else converted into tile. */
static moeCpuB weight_rows(const void *w, moeDtype_t dtype, int64_t row0, int64_t nb, int64_t kd,
                           float *tile) {
  moeCpuB b = {NULL, NULL, NULL};
  if (dtype == moeFloat32) {
    b.f32 = (const float *)w + row0 * kd;
  } else if (dtype == moeBFloat16) {
    b.bf16 = (const uint16_t *)w + row0 * kd;
  } else if (moe_cpu_has_f16_gemm()) {
    b.f16 = (const uint16_t *)w + row0 * kd;
  } else {
    moe_cpu_rows_to_f32(tile, w, dtype, row0, nb, kd);
    b.f32 = tile;
  }
  return b;
}

static void gemm_b(const float *A, int64_t lda, int64_t M, moeCpuB B, int64_t ldb, int64_t N,
                   int64_t kd, float *C, int64_t ldc) {
  if (B.bf16)
    moe_cpu_gemm_nt_bf16(A, lda, M, B.bf16, ldb, N, kd, C, ldc);
  else if (B.f16)
    moe_cpu_gemm_nt_f16(A, lda, M, B.f16, ldb, N, kd, C, ldc);
  else
    moe_cpu_gemm_nt(A, lda, M, B.f32, ldb, N, kd, C, ldc);
}

/* First projection + activation for every segment into Hbuf. */
static void ffn_up(const moeCpuFfnShape *s, const moeCpuFfnSeg *segs, int64_t nseg, const float *X,
                   float *Hbuf, float *tiles, int64_t tile_floats, int nth) {
  const int64_t d = s->d_model, F = s->d_ff;
  const int per = s->gated ? 2 : 1;
  const int64_t nb1 = block_features(d, per), nblk = (F + nb1 - 1) / nb1;
  const int64_t items = nseg * nblk;
  int64_t rows = 0;
  for (int64_t i = 0; i < nseg; ++i) rows += segs[i].rows;
  const int par = rows * d * F * per >= MOE_CPU_PAR_MIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (par)
  for (int64_t it = 0; it < items; ++it) {
    const moeCpuFfnSeg *g = &segs[it / nblk];
    if (g->rows <= 0) continue;
    const int64_t i0 = (it % nblk) * nb1, nb = F - i0 < nb1 ? F - i0 : nb1;
    float *tile = tiles + (int64_t)omp_get_thread_num() * tile_floats;
    /* up rows (the only rows when non-gated) then gate rows */
    const moeCpuB Bu = weight_rows(g->w1, s->dtype, (s->gated ? F : 0) + i0, nb, d, tile);
    const moeCpuB Bg = s->gated ? weight_rows(g->w1, s->dtype, i0, nb, d, tile + nb * d)
                                : (moeCpuB){NULL, NULL, NULL};
    const int has_gate = s->gated;
    const float *bu = g->b1 ? g->b1 + (s->gated ? F : 0) + i0 : NULL;
    const float *bg = g->b1 ? g->b1 + i0 : NULL;
    float accu[ROWS_STEP * NB_MAX], accg[ROWS_STEP * NB_MAX];
    for (int64_t m = 0; m < g->rows; m += ROWS_STEP) {
      const int64_t mr = g->rows - m < ROWS_STEP ? g->rows - m : ROWS_STEP;
      const float *A = X + (g->row0 + m) * d;
      gemm_b(A, d, mr, Bu, d, nb, d, accu, nb);
      if (has_gate) gemm_b(A, d, mr, Bg, d, nb, d, accg, nb);
      for (int64_t r = 0; r < mr; ++r) {
        float *h = Hbuf + (g->row0 + m + r) * F + i0;
        for (int64_t c = 0; c < nb; ++c) {
          const float u = accu[r * nb + c] + (bu ? bu[c] : 0.0f);
          const float gg = has_gate ? accg[r * nb + c] + (bg ? bg[c] : 0.0f) : 0.0f;
          h[c] = round_dtype(s->dtype, activate(s, gg, u));
        }
      }
    }
  }
}

/* A linear layer over segments: v = X_row . W2_row + b2 (+ add), written per mode. */
typedef struct {
  moeDtype_t dtype;
  int64_t kd, N;   /* input width, output features */
  const void *add; /* [*, N] dtype, rows add_row0 + i, or NULL */
  int64_t add_row0;
  void *out;    /* [*, N] dtype */
  float *acc32; /* [*, N] fp32 indexed like X, for the Acc modes */
  moeCpuOutMode mode;
} moeCpuLinear;

static void linear_segments(const moeCpuLinear *L, const moeCpuFfnSeg *segs, int64_t nseg,
                            const float *X, float *tiles, int64_t tile_floats, int nth) {
  const int64_t kd = L->kd, N = L->N;
  const int64_t nb2 = block_features(kd, 1), nblk = (N + nb2 - 1) / nb2;
  const int64_t items = nseg * nblk;
  int64_t rows = 0;
  for (int64_t i = 0; i < nseg; ++i) rows += segs[i].rows;
  const int par = rows * kd * N >= MOE_CPU_PAR_MIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (par)
  for (int64_t it = 0; it < items; ++it) {
    const moeCpuFfnSeg *g = &segs[it / nblk];
    if (g->rows <= 0) continue;
    const int64_t n0 = (it % nblk) * nb2, nb = N - n0 < nb2 ? N - n0 : nb2;
    float *tile = tiles + (int64_t)omp_get_thread_num() * tile_floats;
    const moeCpuB B = weight_rows(g->w2, L->dtype, n0, nb, kd, tile);
    const float *b = g->b2 ? g->b2 + n0 : NULL;
    float acc[ROWS_STEP * NB_MAX];
    for (int64_t m = 0; m < g->rows; m += ROWS_STEP) {
      const int64_t mr = g->rows - m < ROWS_STEP ? g->rows - m : ROWS_STEP;
      gemm_b(X + (g->row0 + m) * kd, kd, mr, B, kd, nb, kd, acc, nb);
      for (int64_t r = 0; r < mr; ++r) {
        const int64_t xrow = g->row0 + m + r, orow = g->out_row0 + m + r;
        float *a32 = L->acc32 ? L->acc32 + xrow * N + n0 : NULL;
        const size_t obase = (size_t)orow * (size_t)N + (size_t)n0;
        const size_t abase = (size_t)(L->add_row0 + m + r) * (size_t)N + (size_t)n0;
        for (int64_t c = 0; c < nb; ++c) {
          float v = acc[r * nb + c] + (b ? b[c] : 0.0f);
          switch (L->mode) {
            case moeCpuAccFirst:
              a32[c] = v;
              break;
            case moeCpuAccAdd:
              a32[c] += v;
              break;
            case moeCpuAccLast:
              moe_store_f32(L->out, L->dtype, obase + c, a32[c] + v);
              break;
            default:
              if (L->add) v += moe_load_f32(L->add, L->dtype, abase + c);
              moe_store_f32(L->out, L->dtype, obase + c, v);
              break;
          }
        }
      }
    }
  }
}

void moe_cpu_ffn_run(const moeCpuFfnShape *shape, const moeCpuFfnSeg *segs, int64_t nseg,
                     const float *X, float *Hbuf, void *out, float *acc32, moeCpuOutMode mode,
                     float *tiles, int nth) {
  const int64_t tf = moe_cpu_ffn_tile_floats(shape);
  ffn_up(shape, segs, nseg, X, Hbuf, tiles, tf, nth);
  moeCpuLinear L = {shape->dtype, shape->d_ff, shape->d_model, NULL, 0, out, acc32, mode};
  /* the second projection reads Hbuf rows at the same row indices as X */
  linear_segments(&L, segs, nseg, Hbuf, tiles, tf, nth);
}

void moe_cpu_linear_run(moeDtype_t dtype, const float *X, int64_t rows, int64_t kd, const void *W,
                        int64_t N, const float *bias, const void *add, int64_t add_row0, void *out,
                        int64_t out_row0, float *tiles, int nth) {
  moeCpuFfnSeg seg = {NULL, NULL, W, bias, 0, rows, out_row0};
  moeCpuLinear L = {dtype, kd, N, add, add_row0, out, NULL, moeCpuStore};
  linear_segments(&L, &seg, 1, X, tiles, moe_cpu_linear_tile_floats(kd), nth);
}
