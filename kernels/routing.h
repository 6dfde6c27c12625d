/* Routing kernels: router logits z = x Wr^T (+ b) in fp32, then per-token score, group limit,
 * top-k and weights for every token-choice family of moe.h (docs/ROUTING.md).
 * Narrow C interface for csrc/backend/cuda; every launcher only enqueues on `stream` and returns
 * the launch's cudaError_t. */
#ifndef MOE_KERNELS_ROUTING_H
#define MOE_KERNELS_ROUTING_H

#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* z [T, E] fp32 = x [T, Hr] (dtype) * Wr [E, Hr]^T + bias [E] (NULL = none). Each logit is the
 * CPU backend's canonical dot product (8 interleaved lanes, fixed fold, no FMA), so the logits
 * match the CPU reference bit for bit. */
cudaError_t moe_launch_router_logits(const void *x, int dtype, const float *wr, const float *bias,
                                     float *z, int64_t T, int32_t E, int64_t Hr,
                                     cudaStream_t stream);

typedef struct {
  int64_t T;
  int32_t E, K;               /* K = route width (slots per token) */
  int32_t family;             /* moeRouting_t */
  int32_t norm_topk_prob;
  int32_t n_group, topk_group;
  float scale;                /* routed_scaling_factor */
  float top_p;                /* top-p threshold */
  const float *z;             /* [T, E] logits */
  const float *selection_bias;/* [E] (SigmoidGroupTopK) or NULL */
  int32_t *ids;               /* [T, K] out */
  float *weights;             /* [T, K] out */
  float *tok_max;             /* [T] out: softmax max (required) */
  double *tok_sum;            /* [T] out: sum of expf(z - max) in double (required) */
  float *tok_lse, *tok_ent;   /* [T] out or NULL: logsumexp and entropy of softmax(z) */
} moeSelectParams;

/* One warp per token, every token-choice family and dense gating (expert choice: see
 * route_post.h). Also writes tok_max / tok_sum for the stats / expert-choice passes. */
cudaError_t moe_launch_route_select(const moeSelectParams *p, cudaStream_t stream);

/* Softmax statistics only (expert choice needs them before picking): tok_max, tok_sum and the
 * optional tok_lse / tok_ent. ids / weights are ignored. */
cudaError_t moe_launch_route_softmax_stats(const moeSelectParams *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
