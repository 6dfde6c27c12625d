/* The reference's reference: the MoE layer computed straight from the definitions of
 * docs/ROUTING.md, one token and one expert at a time, in double. Slow on purpose; shared by
 * the tests and by moe-bench --check. Weights are fp32 host arrays already holding the values
 * of the storage dtype (i.e. rounded to bf16/f16 where the layer stores those). */
#ifndef MOE_NAIVE_MOE_H
#define MOE_NAIVE_MOE_H

#include <stdint.h>

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  moeLayerConfig_t cfg;          /* the layer's config (defaults as the library fills them) */
  const float *router_weight;    /* [E, Hr] */
  const float *router_bias;      /* [E] or NULL */
  const float *selection_bias;   /* [E] or NULL (zeros) */
  const float *gate_up;          /* [E, GI, Hr], gate rows first when gated */
  const float *down;             /* [E, Hr, I] */
  const float *gate_up_bias;     /* [E, GI] or NULL */
  const float *down_bias;        /* [E, Hr] or NULL */
  const float *shared_gate_up;   /* [S, GIs, H] or NULL */
  const float *shared_down;      /* [S, H, Is] or NULL */
  const float *head;             /* [H, H] or NULL (num_heads > 1) */
  const float *head_bias;        /* [H] or NULL */
  const float *merge;            /* [H, H] or NULL */
  const float *merge_bias;       /* [H] or NULL */
} moeNaiveLayer;

typedef struct {
  int64_t *expert_counts;        /* [E] or NULL */
  int64_t *dropped_counts;       /* [E] or NULL */
  double *expert_prob_mean;      /* [E] or NULL */
  double scalars[moeStatScalarCount]; /* indexed by moeStatScalar_t */
} moeNaiveStats;

/* Route width K of a config (k, k_max, or E), as moeLayerGetRouteWidth. */
int32_t moe_naive_route_width(const moeLayerConfig_t *cfg);

/* Routing of T router (sub-)tokens x [T, Hr]: expert_ids [T, K] (-1 = none, selected experts
 * in the slots 0..n-1 in descending score order) and weights [T, K]. stats may be NULL.
 * Returns 0, or -1 on a config it cannot evaluate. */
int moe_naive_route(const moeNaiveLayer *layer, int64_t T, const float *x, int32_t *expert_ids,
                    double *weights, moeNaiveStats *stats);

/* FFN of one expert (routed: expert >= 0 with width Hr; shared: -1 - s with width H) on one
 * input row: out = down act(gate_up in + b) + b, in double. */
void moe_naive_ffn(const moeNaiveLayer *layer, int32_t expert, const double *in, double *out);

/* The whole layer: y [T, H] from x [T, H]. Returns 0 or -1. */
int moe_naive_forward(const moeNaiveLayer *layer, int64_t T, const float *x, double *y,
                      moeNaiveStats *stats);

#ifdef __cplusplus
}
#endif
#endif
