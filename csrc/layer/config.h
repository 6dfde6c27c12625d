/* Layer configuration helpers shared by layer creation, the backends and expert parallelism. */
#ifndef MOE_LAYER_CONFIG_H
#define MOE_LAYER_CONFIG_H

#include <stddef.h>

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes an older caller's moeLayerConfig_t holds at least: through top_k, the last required field. */
#define MOE_LAYER_CONFIG_MIN_SIZE (offsetof(moeLayerConfig_t, top_k) + sizeof(int32_t))

/* Copies a caller's config over the defaults (honouring its size field) and fills derived
 * defaults (shared_intermediate = intermediate when 0). Returns InvalidArgument/InvalidConfig. */
moeStatus_t moe_config_normalize(const moeLayerConfig_t *in, moeLayerConfig_t *out);

/* Checks every field of a normalized config; the message names the field and its limit. */
moeStatus_t moe_config_validate(const moeLayerConfig_t *cfg);

/* 1 for families where each token chooses its experts (everything but expert choice, dense). */
int moe_routing_is_token_choice(moeRouting_t routing);

/* K: slots per (sub-)token in the routing output. */
int32_t moe_config_route_width(const moeLayerConfig_t *cfg);

/* 1 if the activation has a gate half (SwiGLU family). */
int moe_activation_is_gated(moeActivation_t activation);

#ifdef __cplusplus
}
#endif
#endif
