/* The stage interface every backend implements. The layer code (csrc/layer) validates
 * arguments, plans the workspace and calls these in pipeline order; a backend only computes.
 * Pointers are backend memory (host for CPU, device for CUDA) unless named host_*.
 * T is the number of (sub-)tokens the stage sees, K the layer's route width. */
#ifndef MOE_BACKEND_BACKEND_H
#define MOE_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "layer/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moeLayer_s moeLayer;

/* Scratch handed to a stage: a slice of the workspace nobody else uses during the stage. */
typedef struct {
  void *ptr;
  size_t bytes;
} moeScratch;

typedef struct {
  int64_t T;
  const void *x;                 /* [T, Hr] layer dtype */
  int32_t *expert_ids;           /* [T, K] out; -1 = no expert */
  float *weights;                /* [T, K] out; 0 where id is -1 */
  const moeRouterStats_t *stats; /* optional, pointers in backend memory */
} moeRouteArgs;

typedef struct {
  int64_t T;
  const int32_t *expert_ids;     /* [T, K] */
  int64_t *expert_offsets;       /* [E + 1] out */
  int64_t *sorted_pairs;         /* [T * K] out: pair index t * K + j of each sorted row */
  int64_t *pair_rows;            /* [T * K] out: sorted row of each pair, -1 if none */
} moePermuteArgs;

typedef struct {
  int64_t T;
  const void *x;                 /* [T, Hr] */
  const float *weights;          /* [T, K] input scales (input-scaled routing) or NULL */
  const int64_t *expert_offsets; /* [E + 1] */
  const int64_t *sorted_pairs;   /* [T * K] */
  void *expert_out;              /* [T * K, Hr] out, sorted order */
} moeExpertsArgs;

typedef struct {
  int64_t T;
  const void *x;                 /* [T, H] full-width tokens */
  void *shared_out;              /* [T, H] out: sum of the shared experts */
} moeSharedArgs;

typedef struct {
  int64_t T;
  const void *expert_out;        /* [T * K, Hr] sorted */
  const int64_t *pair_rows;      /* [T * K] */
  const float *weights;          /* [T, K] */
  const void *shared_out;        /* [T, Hr] or NULL: added unweighted */
  void *y;                       /* [T, Hr] out */
} moeCombineArgs;

/* out [T, H] = x [T, H] W^T + b (+ add), W [H, H] layer dtype: the multi-head MoE head and merge
 * projections. b and add may be NULL. */
typedef struct {
  int64_t T;
  const void *x;
  const void *weight;
  const float *bias;
  const void *add;
  void *out;
} moeProjectArgs;

typedef struct moeBackendOps {
  const char *name;

  /* Context lifetime: create handles (cuBLAS, ...) in ctx->backend_state. */
  moeStatus_t (*context_init)(moeContext_t ctx);
  void (*context_fini)(moeContext_t ctx);

  /* Memory. upload/download are synchronous with the host; memset_zero is enqueued. */
  moeStatus_t (*mem_alloc)(moeContext_t ctx, size_t bytes, void **ptr);
  void (*mem_free)(moeContext_t ctx, void *ptr);
  moeStatus_t (*upload)(moeContext_t ctx, void *dst, const void *host_src, size_t bytes);
  moeStatus_t (*download)(moeContext_t ctx, void *host_dst, const void *src, size_t bytes);
  moeStatus_t (*memset_zero)(moeContext_t ctx, void *dst, size_t bytes, moeStream_t stream);
  moeStatus_t (*synchronize)(moeContext_t ctx, moeStream_t stream);

  /* The most scratch any stage needs for T (sub-)tokens. */
  size_t (*scratch_bytes)(const moeLayer *layer, int64_t T);

  /* The stages. */
  moeStatus_t (*route)(const moeLayer *layer, const moeRouteArgs *args, moeScratch scratch,
                       moeStream_t stream);
  moeStatus_t (*permute)(const moeLayer *layer, const moePermuteArgs *args, moeScratch scratch,
                         moeStream_t stream);
  moeStatus_t (*experts)(const moeLayer *layer, const moeExpertsArgs *args, moeScratch scratch,
                         moeStream_t stream);
  moeStatus_t (*shared_experts)(const moeLayer *layer, const moeSharedArgs *args,
                                moeScratch scratch, moeStream_t stream);
  moeStatus_t (*combine)(const moeLayer *layer, const moeCombineArgs *args, moeStream_t stream);
  moeStatus_t (*project)(const moeLayer *layer, const moeProjectArgs *args, moeScratch scratch,
                         moeStream_t stream);

  /* [2c] selection_bias += rate * sign(mean(c) - c), counts [E] int64. */
  moeStatus_t (*update_selection_bias)(const moeLayer *layer, const int64_t *expert_counts,
                                       float rate, moeStream_t stream);
} moeBackendOps;

extern const moeBackendOps moe_cpu_backend_ops;
#ifdef MOE_WITH_CUDA
extern const moeBackendOps moe_cuda_backend_ops;
/* Usable CUDA devices; any failure (no driver: error 35) counts as 0. */
int moe_cuda_device_count(void);
#endif

#ifdef __cplusplus
}
#endif
#endif
