/* Internals shared by the CPU backend's stage files (csrc/backend/cpu/).
 *
 * The CPU backend is the reference every GPU kernel is checked against. Its rules:
 *  - all math in fp32 (stats reductions over tokens in double), storage in the layer's dtype;
 *  - deterministic: every output element is computed by exactly one thread, in a fixed order
 *    that does not depend on the thread count (no float atomics, no thread-count-shaped
 *    reductions); a dot product always runs the canonical order of moe_cpu_dot (gemm.c);
 *  - scratch comes from the caller's slice (moeScratch); the stages never allocate. */
#ifndef MOE_BACKEND_CPU_INTERNAL_H
#define MOE_BACKEND_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/status.h"

/* Bytes every scratch sub-buffer is aligned to. */
#define MOE_CPU_ALIGN ((size_t)64)

/* Work (multiply-adds or elements moved) below which a parallel region runs on one thread:
 * waking the team costs more than it saves, and on a loaded machine a descheduled team member
 * stalls the region's barrier for a whole time slice. */
#define MOE_CPU_PAR_MIN ((int64_t)1 << 16)

/* Threads a stage may use: the context's num_threads, else OpenMP's default. >= 1. */
int moe_cpu_threads(const moeLayer *layer);

/* A bump allocator over a scratch slice. take() returns NULL once the slice is exhausted
 * (the caller reports the shortfall with moe_cpu_scratch_error). */
typedef struct {
  char *base;
  size_t bytes, used;
} moeCpuArena;

static inline moeCpuArena moe_cpu_arena(moeScratch s) {
  moeCpuArena a = {(char *)s.ptr, s.ptr ? s.bytes : 0, 0};
  return a;
}

/* Size of n elements of elem bytes rounded up to MOE_CPU_ALIGN; SIZE_MAX on overflow. */
static inline size_t moe_cpu_bytes(uint64_t n, size_t elem) {
  if (n != 0 && n > (SIZE_MAX - MOE_CPU_ALIGN) / elem) return SIZE_MAX;
  size_t b = (size_t)n * elem;
  return (b + MOE_CPU_ALIGN - 1) / MOE_CPU_ALIGN * MOE_CPU_ALIGN;
}

/* a + b, saturating at SIZE_MAX (an overflowed plan stays "too big"). */
static inline size_t moe_cpu_add(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}
static inline size_t moe_cpu_mul(size_t a, size_t b) {
  return (a != 0 && b > SIZE_MAX / a) ? SIZE_MAX : a * b;
}

static inline void *moe_cpu_take(moeCpuArena *a, uint64_t n, size_t elem) {
  size_t b = moe_cpu_bytes(n, elem);
  /* the base is 256-byte aligned (workspace contract); keep sub-buffers MOE_CPU_ALIGN aligned */
  size_t pad = (MOE_CPU_ALIGN - ((uintptr_t)(a->base + a->used) % MOE_CPU_ALIGN)) % MOE_CPU_ALIGN;
  if (b == SIZE_MAX || a->base == NULL || pad > a->bytes - a->used || b > a->bytes - a->used - pad)
    return NULL;
  void *p = a->base + a->used + pad;
  a->used += pad + b;
  return p;
}

/* ---- dense fp32 kernels (gemm.c) ------------------------------------------------------------ */

/* The canonical dot product: 8 lane accumulators over the multiple-of-8 prefix (lane l sums
 * the elements k = l mod 8 in increasing k), lanes added as ((0+1)+(2+3))+((4+5)+(6+7)), then
 * the tail elements in increasing k. Every kernel below reproduces it bit for bit. */
float moe_cpu_dot(const float *a, const float *b, int64_t n);

/* C[m * ldc + n] = dot(A[m * lda ..], B[n * ldb ..], kd) for m < M, n < N (canonical order). */
void moe_cpu_gemm_nt(const float *A, int64_t lda, int64_t M, const float *B, int64_t ldb, int64_t N,
                     int64_t kd, float *C, int64_t ldc);

/* moe_cpu_gemm_nt with B in bf16 (widened exactly in registers): the same bits as converting B
 * to fp32 first, without the fp32 copy. For segments of few rows, where a converted tile would
 * not be reused. */
void moe_cpu_gemm_nt_bf16(const float *A, int64_t lda, int64_t M, const uint16_t *B, int64_t ldb,
                          int64_t N, int64_t kd, float *C, int64_t ldc);

/* The same with B in f16, widened by F16C: only when moe_cpu_has_f16_gemm() (AVX2 + F16C). */
int moe_cpu_has_f16_gemm(void);
void moe_cpu_gemm_nt_f16(const float *A, int64_t lda, int64_t M, const uint16_t *B, int64_t ldb,
                         int64_t N, int64_t kd, float *C, int64_t ldc);

/* Rows [row0, row0 + rows) of a [*, cols] matrix of the given dtype, as fp32 into dst
 * (dst row stride cols). */
void moe_cpu_rows_to_f32(float *dst, const void *src, moeDtype_t dtype, int64_t row0, int64_t rows,
                         int64_t cols);

/* ---- expert FFNs (ffn.c) ------------------------------------------------------------------- */

/* The shape every FFN of a kind shares. d_model: width of the tokens (in and out); d_ff: the
 * intermediate width (I or Is). w1 is [gated ? 2 d_ff : d_ff, d_model], w2 [d_model, d_ff]. */
typedef struct {
  moeDtype_t dtype;
  int64_t d_model, d_ff;
  int gated;
  moeActivation_t act;
  float alpha, limit;
} moeCpuFfnShape;

/* One FFN applied to a segment of rows of an fp32 input tile. */
typedef struct {
  const void *w1;  /* [GI, d_model] dtype */
  const float *b1; /* [GI] or NULL */
  const void *w2;  /* [d_model, d_ff] dtype */
  const float *b2; /* [d_model] or NULL */
  int64_t row0;    /* first row in the tile (X and Hbuf) */
  int64_t rows;
  /* output: out_row_index(row0 + i) = out_row0 + i rows of `out` (dtype) */
  int64_t out_row0;
} moeCpuFfnSeg;

/* Output mode of the second projection. */
typedef enum {
  moeCpuStore = 0,    /* out[row] = dtype(acc + b2) */
  moeCpuAccFirst = 1, /* acc32[row] = acc + b2 (first of a sum) */
  moeCpuAccAdd = 2,   /* acc32[row] += acc + b2 */
  moeCpuAccLast = 3   /* out[row] = dtype(acc32[row] + (acc + b2)) (last of a sum) */
} moeCpuOutMode;

/* Floats of per-thread weight tile the FFN kernels need for a shape. */
int64_t moe_cpu_ffn_tile_floats(const moeCpuFfnShape *shape);

/* Runs nseg FFN segments over the fp32 input X [*, d_model] (rows indexed by seg.row0), with
 * Hbuf [*, d_ff] fp32 as the intermediate (rounded to dtype after the activation, like the GPU
 * epilogue). Output: out (dtype, row stride d_model) per mode, acc32 [*, d_model] fp32 indexed
 * like X when mode != Store. tiles: nth * moe_cpu_ffn_tile_floats floats. */
void moe_cpu_ffn_run(const moeCpuFfnShape *shape, const moeCpuFfnSeg *segs, int64_t nseg,
                     const float *X, float *Hbuf, void *out, float *acc32, moeCpuOutMode mode,
                     float *tiles, int nth);

/* out rows = dtype(X W^T + bias (+ add)), W [N, kd] dtype: the head/merge projection. */
void moe_cpu_linear_run(moeDtype_t dtype, const float *X, int64_t rows, int64_t kd, const void *W,
                        int64_t N, const float *bias, const void *add, int64_t add_row0, void *out,
                        int64_t out_row0, float *tiles, int nth);
int64_t moe_cpu_linear_tile_floats(int64_t kd);

/* Tiles for up to `want` threads from what is left of the arena: sets *nth (>= 1) and returns
 * the tiles, or NULL when not even one tile fits. */
float *moe_cpu_take_tiles(moeCpuArena *a, int64_t tile_floats, int want, int *nth);

/* ---- routing order (route.c, route_select.c) ---------------------------------------------- */

/* a ranks strictly above b: the larger score, NaN below everything (-inf included). Equal
 * scores do not beat each other: the caller breaks ties by the lower index. */
static inline int moe_cpu_beats(float a, float b) {
  if (a != a) return 0;
  if (b != b) return 1;
  return a > b;
}

/* Stable sort of idx[0..n) so that key[idx * stride] is descending under moe_cpu_beats; equal
 * keys keep their input order (callers pass increasing indices: ties go to the lower index).
 * tmp: n elements. */
void moe_cpu_sort_desc(int64_t *idx, int64_t *tmp, int64_t n, const float *key, int64_t stride);

/* Capacity, expert choice and statistics: the batch-wide parts of routing (route_select.c). */
typedef struct {
  int64_t *kept;    /* [E] selections kept per expert */
  int64_t *dropped; /* [E] selections dropped per expert */
  int64_t *order;   /* [T * K] sort scratch */
  int64_t *tmp;     /* [T * K] sort scratch (expert choice: K = E, [T] per thread) */
  int64_t *start;   /* [E + 1] */
  double *psum;     /* [E] */
} moeCpuRouteWork;

void moe_cpu_apply_capacity(const moeLayer *L, int64_t T, int32_t *ids, float *w,
                            moeCpuRouteWork *wk);
void moe_cpu_expert_choice(const moeLayer *L, int64_t T, const float *P, int32_t *ids, float *w,
                           moeCpuRouteWork *wk);
/* Counts kept selections per expert into wk->kept (dropped counts must already be there). */
void moe_cpu_count_kept(const moeLayer *L, int64_t T, const int32_t *ids, moeCpuRouteWork *wk);
void moe_cpu_write_stats(const moeLayer *L, int64_t T, const moeRouterStats_t *st, const float *P,
                         const float *lse, const float *ent, const moeCpuRouteWork *wk);

/* ---- stages (one file each) ------------------------------------------------------------------ */
size_t moe_cpu_route_scratch(const moeLayer *layer, int64_t T);
size_t moe_cpu_permute_scratch(const moeLayer *layer, int64_t T);
size_t moe_cpu_experts_scratch(const moeLayer *layer, int64_t T);
size_t moe_cpu_shared_scratch(const moeLayer *layer, int64_t T);
size_t moe_cpu_project_scratch(const moeLayer *layer, int64_t T);

moeStatus_t moe_cpu_route(const moeLayer *layer, const moeRouteArgs *args, moeScratch scratch,
                          moeStream_t stream);
moeStatus_t moe_cpu_permute(const moeLayer *layer, const moePermuteArgs *args, moeScratch scratch,
                            moeStream_t stream);
moeStatus_t moe_cpu_experts(const moeLayer *layer, const moeExpertsArgs *args, moeScratch scratch,
                            moeStream_t stream);
moeStatus_t moe_cpu_shared_experts(const moeLayer *layer, const moeSharedArgs *args,
                                   moeScratch scratch, moeStream_t stream);
moeStatus_t moe_cpu_combine(const moeLayer *layer, const moeCombineArgs *args, moeStream_t stream);
moeStatus_t moe_cpu_project(const moeLayer *layer, const moeProjectArgs *args, moeScratch scratch,
                            moeStream_t stream);

#endif
