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
 * sequential sum over h = 0..Hr-1 of x*w rounded per operation (no FMA contraction), then
 * + bias, so that it matches a plain fp32 loop on the host bit for bit. */
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
  const uint8_t *picked;      /* [T, E] expert choice: 1 where expert e picked token t; else NULL */
  int32_t *ids;               /* [T, K] out */
  float *weights;             /* [T, K] out */
  float *tok_max, *tok_sum;   /* [T] out: softmax max and sum of expf(z - max) (both required) */
  float *tok_lse2, *tok_ent;  /* [T] out or NULL: logsumexp^2 and entropy of softmax(z) */
} moeSelectParams;

/* One warp per token. Also writes tok_max / tok_sum for the later stats / expert-choice passes. */
cudaError_t moe_launch_route_select(const moeSelectParams *p, cudaStream_t stream);

/* Softmax statistics only (expert choice needs them before picking): tok_max, tok_sum and the
 * optional tok_lse2 / tok_ent. ids / weights / picked are ignored. */
cudaError_t moe_launch_route_softmax_stats(const moeSelectParams *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
