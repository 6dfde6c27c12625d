/* Batch-wide routing passes: token-choice capacity ([4b]), expert choice's per-expert pick
 * ([4c]), router statistics ([7]) and the aux-loss-free bias update ([2c]).
 * Each launcher only enqueues on `stream` (no host synchronization, graph-capturable) and
 * carves its temporaries from the scratch it is given (sized by the *_scratch_bytes query). */
#ifndef MOE_KERNELS_ROUTE_POST_H
#define MOE_KERNELS_ROUTE_POST_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int64_t T;
  int32_t E, K;
  int64_t capacity;      /* C: selections each expert keeps */
  int32_t policy;        /* moeDropPolicy_t: 0 position (slot-major), 1 probs */
  int32_t *ids;          /* [T, K] in/out: dropped selections become -1 */
  float *weights;        /* [T, K] in/out: dropped selections become 0 */
  int64_t *dropped;      /* [E] or NULL: incremented per dropped selection (caller zeroes it) */
  void *scratch;
  size_t scratch_bytes;
} moeCapacityParams;

/* 0 on success (bytes set), else a CUDA error from the sort's size query. */
cudaError_t moe_capacity_scratch_bytes(int64_t T, int32_t K, int32_t E, size_t *bytes);
cudaError_t moe_launch_capacity(const moeCapacityParams *p, cudaStream_t stream);

typedef struct {
  int64_t T;
  int32_t E;
  int64_t capacity;           /* C tokens per expert, 0 <= C <= T */
  const float *z;             /* [T, E] logits */
  const float *tok_max; const double *tok_sum; /* [T] softmax statistics (moe_launch_route_softmax_stats) */
  float scale;                /* routed_scaling_factor */
  int32_t *ids;               /* [T, E] out: slot e = e where expert e picked token t, else -1 */
  float *weights;             /* [T, E] out: p(t, e) * scale where picked, else 0 */
  void *scratch;
  size_t scratch_bytes;
} moeExpertChoiceParams;

cudaError_t moe_expert_choice_scratch_bytes(int64_t T, int32_t E, size_t *bytes);
/* Each expert picks its C tokens of highest softmax probability (ties: the lower token; NaN
 * last), and writes every slot of the routing output (the CPU backend's layout). */
cudaError_t moe_launch_expert_choice_pick(const moeExpertChoiceParams *p, cudaStream_t stream);

/* P_e is summed over at most this many token chunks in parallel, then the chunks in order. */
#define MOE_PROB_MEAN_CHUNKS 512

typedef struct {
  int64_t T;
  int32_t E, K;
  int32_t variable_k;          /* top-p, expert choice, dense: f_e = c_e / (total kept) */
  int32_t top_k;               /* token choice: f_e = c_e / (T * top_k) */
  const int32_t *ids;          /* [T, K] final routing (after capacity) */
  const float *z;              /* [T, E] */
  const float *tok_max, *tok_lse, *tok_ent; /* [T] */
  const double *tok_sum;                     /* [T] */
  const int64_t *dropped;      /* [E] dropped selections or NULL (none) */
  int64_t *counts;             /* [E] out (required; scratch when the caller wants none) */
  float *prob_mean;            /* [E] out (required when scalars is set; scratch allowed) */
  double *prob_partial;        /* [MOE_PROB_MEAN_CHUNKS * E] scratch: per token chunk sums */
  float *scalars;              /* [moeStatScalarCount] out or NULL */
  int64_t *dropped_out;        /* [E] out or NULL: copy of dropped (zeros when dropped NULL) */
} moeStatsParams;

/* Deterministic: integer atomics for counts only; every float sum has a fixed order. */
cudaError_t moe_launch_router_stats(const moeStatsParams *p, cudaStream_t stream);

/* bias[e] += rate * sign(mean(c) - c[e]) over E experts, one block. */
cudaError_t moe_launch_update_selection_bias(float *bias, const int64_t *counts, int32_t E,
                                             float rate, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
