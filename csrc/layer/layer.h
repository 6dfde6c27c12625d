/* The layer as every backend sees it: the validated config, derived sizes, and the weights in
 * backend memory. Public functions live in layer.c (create, weights), forward.c (orchestration)
 * and config.c (validation). */
#ifndef MOE_LAYER_LAYER_H
#define MOE_LAYER_LAYER_H

#include <stdint.h>

#include "core/context.h"
#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

struct moeLayer_s {
  moeContext_t ctx;
  moeLayerConfig_t cfg; /* validated copy; defaults filled in (shared_intermediate) */

  /* Derived sizes. */
  int64_t H;            /* model width */
  int64_t Hr;           /* width of a routed (sub-)token: H / num_heads */
  int64_t I;            /* routed expert width */
  int64_t Is;           /* shared expert width */
  int32_t E;            /* routed experts the router chooses among */
  int32_t expert_begin; /* first expert whose weights this layer holds (expert parallelism) */
  int32_t E_local;      /* experts held: [expert_begin, expert_begin + E_local); E without EP.
                           Permute and experts work over these local experts: their
                           expert_offsets has E_local + 1 entries and ids are global. */
  int32_t K;            /* route width: slots per (sub-)token in the routing output */
  int32_t S;            /* shared experts */
  int32_t heads;        /* num_heads */
  int32_t gated;        /* 1 if the activation has a gate half (SwiGLU family) */
  int64_t GI;           /* rows of the first projection: gated ? 2I : I */
  int64_t GIs;          /* same for shared experts */

  /* Weights, in backend memory. Matrices in the layer's dtype, vectors fp32. */
  float *router_weight;  /* [E, Hr] */
  float *router_bias;    /* [E] or NULL (allocated when set) */
  float *selection_bias; /* [E], zeros until set (DeepSeek-V3 e_score_correction_bias) */
  void *w_gate_up;       /* [E_local, GI, Hr]: rows 0..I-1 gate, I..2I-1 up (up only if !gated) */
  void *w_down;          /* [E_local, Hr, I] */
  float *b_gate_up;      /* [E_local, GI] when cfg.expert_bias, else NULL */
  float *b_down;         /* [E_local, Hr] when cfg.expert_bias, else NULL */
  void *shared_gate_up;  /* [S, GIs, H] */
  void *shared_down;     /* [S, H, Is] */
  void *head_weight;     /* [H, H] when heads > 1 */
  void *merge_weight;    /* [H, H] when heads > 1 */
  float *head_bias;      /* [H] when heads > 1 (zeros unless set) */
  float *merge_bias;     /* [H] when heads > 1 (zeros unless set) */

  /* Host bookkeeping: which weights were set (forward refuses to run on unset weights). */
  uint8_t router_set;
  uint8_t head_set;
  uint8_t *expert_set;   /* [E_local] */
  uint8_t *shared_set;   /* [S] */

  /* The layer's own workspace, used when a call passes workspace = NULL. */
  void *own_workspace;
  size_t own_workspace_bytes;
};

/* Element size of the layer's storage dtype. */
size_t moe_layer_elem_size(const struct moeLayer_s *layer);

#ifdef __cplusplus
}
#endif
#endif
