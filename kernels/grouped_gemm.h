/* Grouped GEMM for the expert FFN, shared experts and the MH-MoE projections:
 *
 *   C[r, n] = epilogue( sum_k A[src(r), k] * B[g(r)][n, k] )
 *
 * Rows are grouped (one group per local expert, rows [group_offsets[g], group_offsets[g+1])
 * read from device memory, so no host synchronization is needed); src(r) gathers token rows
 * through sorted_pairs (gather[r] / gather_div) so that no permuted copy of x exists. B is the
 * nn.Linear layout [N, K] per group. Groups of a few rows (decode) stream B on the skinny
 * kernel (CUDA cores, 16-byte loads, bandwidth-bound); the others run bf16/f16 on tensor cores
 * (mma.sync m16n8k16, fp32 accumulate, cp.async pipeline; or, when the caller chooses kernel 2 on
 * compute capability 9.x, wgmma fed by TMA, gemm_wgmma.cu) and fp32 on a SIMT FMA kernel. Which
 * kernel takes a group is decided on the device from its row count. Deterministic: each output
 * is a fixed-order sum.
 *
 * Offsets and gather entries are caller data (moeLayerExperts) that the host cannot check
 * without a synchronization, so the device makes every value of them safe: the schedule kernel,
 * the only reader of group_offsets, clamps each offset into [0, M] and to at least the one
 * before it (a running maximum) and the GEMM kernels read that copy only, so every group is a
 * range of rows inside [0, M); a gather entry outside [0, gather_limit) reads no row (zeros,
 * scale 1). Valid inputs pass through unchanged; invalid ones give unspecified rows, never an
 * access outside a buffer.
 *
 * Epilogue, in fp32: v = acc * row_scale + bias; gated (SwiGLU family): output column i uses
 * v_gate = column i and v_up = column Nout + i of B, with Nout = N / 2; then the activation; then
 * + accum_in (fp32) + add (dtype); stored as dtype, or fp32 when c_f32. */
#ifndef MOE_KERNELS_GROUPED_GEMM_H
#define MOE_KERNELS_GROUPED_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_GEMM_ACT_NONE (-1) /* else a moeActivation_t */

/* Groups of at most this many rows run on the skinny (memory-bound) kernel when the groups
 * average no more rows than that; larger groups on the tensor-core (or SIMT) tiles. */
#define MOE_GEMM_SKINNY_ROWS 8
/* Device scratch bytes per grouped launch: the m-tile schedule and the skinny group list (int32,
 * groups + 1 each), then the sanitized offsets (int64, groups + 1). */
#define MOE_GEMM_SCHEDULE_SCRATCH_BYTES(groups) ((size_t)((int64_t)(groups) + 1) * 16u)

typedef struct {
  int32_t dtype;                 /* moeDtype_t of A, B, add and (unless c_f32) C */
  int64_t M;                     /* rows: the most rows the groups can hold (grid size) */
  int64_t N, K;                  /* columns of B (2 * Nout when gated), reduction length */
  int32_t num_groups;            /* > 0 with group_offsets; ignored without */
  const int64_t *group_offsets;  /* [num_groups + 1] device, or NULL: one group of rows [0, M).
                                    Any values (see above) */
  void *schedule_scratch;        /* MOE_GEMM_SCHEDULE_SCRATCH_BYTES(num_groups) bytes of device
                                    scratch, 8-byte aligned (with group_offsets) */
  const void *A;
  int64_t lda;
  const int64_t *gather;         /* row r reads A row gather[r] / gather_div; NULL = row r */
  int64_t gather_div;
  int64_t gather_limit;          /* with gather: A holds gather_limit / gather_div rows and
                                    row_scale gather_limit entries; entries outside
                                    [0, gather_limit) read neither */
  const float *row_scale;        /* scale of row r: row_scale[gather ? gather[r] : r], or NULL */
  const void *B;
  int64_t b_group_stride;        /* elements between groups' B */
  const float *bias;             /* [N] per group or NULL */
  int64_t bias_group_stride;
  int32_t act;                   /* MOE_GEMM_ACT_NONE or moeActivation_t */
  int32_t gated;
  float alpha, limit;            /* SwiGLUClamped */
  const float *accum_in;         /* fp32 [rows, ldc] or NULL */
  const void *add;               /* dtype [rows, ldc] or NULL */
  void *C;
  int64_t ldc;
  int32_t c_f32;
  int32_t kernel;                /* moeGemmKernel (csrc/core/tuning.h): -1 the heuristic,
                                    0 tiles only, 1 skinny groups on the skinny kernel,
                                    2 every group on the sm_90a wgmma tiles (the caller sets it
                                    only on compute capability 9.x; shapes the wgmma kernel
                                    cannot take run as 0) */
} moeGemmParams;

/* Once per device (context creation): kernel attributes, e.g. the tensor-core kernel's 64 KiB of
 * dynamic shared memory. Not capturable; launches afterwards are. */
cudaError_t moe_grouped_gemm_init(void);

cudaError_t moe_launch_grouped_gemm(const moeGemmParams *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
