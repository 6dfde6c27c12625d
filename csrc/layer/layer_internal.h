/* Layer functions shared inside the library (layer.c, forward.c, expert parallelism). */
#ifndef MOE_LAYER_INTERNAL_H
#define MOE_LAYER_INTERNAL_H

#include "layer/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moeLayer_s moeLayer_s_alias;

/* Creates a layer that holds only routed experts [expert_begin, expert_begin +
 * num_local_experts) (expert parallelism); the router still chooses among all E. */
moeStatus_t moe_layer_create_local(moeLayer_t *layer, moeContext_t ctx,
                                   const moeLayerConfig_t *config, int32_t expert_begin,
                                   int32_t num_local_experts);

/* InvalidState naming the first weight never set, else moeSuccess. */
moeStatus_t moe_layer_check_ready(const moeLayer_s_alias *layer);

/* InvalidConfig unless the layer's routing reads the selection bias (only [2a]): setting a bias
 * the router never reads is a mistake the caller should hear about. `fn` names the caller. */
moeStatus_t moe_layer_check_selection_bias_used(const moeLayer_s_alias *layer, const char *fn);

#ifdef __cplusplus
}
#endif
#endif
