/* Layer configuration: defaults for fields an older caller lacks, and validation with messages
 * that name the field and its limit. A field is checked where it is used: top_p_threshold only
 * for top-p routing, swiglu_limit only for the clamped SwiGLU, and so on. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "core/dtype.h"
#include "core/status.h"
#include "layer/config.h"

enum {
  MOE_MAX_EXPERTS = 4096,
  MOE_MAX_SHARED_EXPERTS = 64,
};
static const int64_t MOE_MAX_WIDTH = (int64_t)1 << 20;

static int is_group_family(moeRouting_t r) {
  return r == moeRoutingSigmoidGroupTopK || r == moeRoutingSoftmaxGroupTopK;
}

int moe_routing_is_token_choice(moeRouting_t r) {
  return r != moeRoutingExpertChoice && r != moeRoutingDense;
}

int32_t moe_config_route_width(const moeLayerConfig_t *cfg) {
  return moe_routing_is_token_choice(cfg->routing) ? cfg->top_k : cfg->num_experts;
}

int moe_activation_is_gated(moeActivation_t a) {
  return a == moeActivationSwiGLU || a == moeActivationSwiGLUClamped;
}

moeStatus_t moe_config_normalize(const moeLayerConfig_t *in, moeLayerConfig_t *out) {
  if (!in) return moe_error(moeErrorInvalidArgument, "layer config must not be NULL");
  const size_t min_size = offsetof(moeLayerConfig_t, top_k) + sizeof(in->top_k);
  if (in->size < min_size || in->size > sizeof(moeLayerConfig_t))
    return moe_error(moeErrorInvalidConfig,
                     "moeLayerConfig_t.size = %zu must be in [%zu, %zu]: initialize the config "
                     "with MOE_LAYER_CONFIG_INIT",
                     in->size, min_size, sizeof(moeLayerConfig_t));
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  memcpy(&cfg, in, in->size); /* fields an older caller lacks keep their defaults */
  cfg.size = sizeof cfg;
  if (cfg.shared_intermediate == 0) cfg.shared_intermediate = cfg.intermediate;
  *out = cfg;
  return moeSuccess;
}

static moeStatus_t check_width(const char *name, int64_t v) {
  if (v < 1 || v > MOE_MAX_WIDTH)
    return moe_error(moeErrorInvalidConfig, "config.%s = %lld must be in [1, %lld]", name,
                     (long long)v, (long long)MOE_MAX_WIDTH);
  return moeSuccess;
}

moeStatus_t moe_config_validate(const moeLayerConfig_t *c) {
  MOE_TRY(check_width("hidden", c->hidden));
  MOE_TRY(check_width("intermediate", c->intermediate));
  if (c->num_experts < 1 || c->num_experts > MOE_MAX_EXPERTS)
    return moe_error(moeErrorInvalidConfig, "config.num_experts = %d must be in [1, %d]",
                     c->num_experts, MOE_MAX_EXPERTS);
  const int32_t E = c->num_experts;
  if ((int)c->routing < 0 || (int)c->routing >= moeRoutingCount)
    return moe_error(moeErrorInvalidConfig,
                     "config.routing = %d is not a moeRouting_t (valid: 0..%d)", (int)c->routing,
                     moeRoutingCount - 1);
  if (moe_routing_is_token_choice(c->routing) && (c->top_k < 1 || c->top_k > E))
    return moe_error(moeErrorInvalidConfig,
                     "config.top_k = %d must be in [1, num_experts = %d]%s", c->top_k, E,
                     c->routing == moeRoutingTopP ? " (top-p: the cap k_max)" : "");
  if (!moe_dtype_valid(c->dtype))
    return moe_error(moeErrorInvalidConfig,
                     "config.dtype = %d is not a moeDtype_t (valid: 0 f32, 1 f16, 2 bf16)",
                     (int)c->dtype);
  if ((int)c->activation < 0 || (int)c->activation >= moeActivationCount)
    return moe_error(moeErrorInvalidConfig,
                     "config.activation = %d is not a moeActivation_t (valid: 0..%d)",
                     (int)c->activation, moeActivationCount - 1);
  if (c->activation == moeActivationSwiGLUClamped) {
    if (!(c->swiglu_limit > 0.0f) || !isfinite(c->swiglu_limit))
      return moe_error(moeErrorInvalidConfig, "config.swiglu_limit = %g must be finite and > 0",
                       (double)c->swiglu_limit);
    if (!isfinite(c->swiglu_alpha))
      return moe_error(moeErrorInvalidConfig, "config.swiglu_alpha = %g must be finite",
                       (double)c->swiglu_alpha);
  }

  /* Groups (2a, 2b). */
  if (c->n_group < 1 || c->n_group > E || E % c->n_group != 0)
    return moe_error(moeErrorInvalidConfig,
                     "config.n_group = %d must divide num_experts = %d (and be >= 1)", c->n_group,
                     E);
  if (c->topk_group < 1 || c->topk_group > c->n_group)
    return moe_error(moeErrorInvalidConfig, "config.topk_group = %d must be in [1, n_group = %d]",
                     c->topk_group, c->n_group);
  if (is_group_family(c->routing)) {
    const int64_t kept = (int64_t)c->topk_group * (E / c->n_group);
    if (kept < c->top_k)
      return moe_error(moeErrorInvalidConfig,
                       "config.top_k = %d exceeds the %lld experts in the topk_group = %d kept "
                       "groups of %d (num_experts / n_group)",
                       c->top_k, (long long)kept, c->topk_group, E / c->n_group);
  }

  if (!isfinite(c->routed_scaling_factor) || !(c->routed_scaling_factor > 0.0f))
    return moe_error(moeErrorInvalidConfig,
                     "config.routed_scaling_factor = %g must be finite and > 0",
                     (double)c->routed_scaling_factor);
  if (c->routing == moeRoutingTopP &&
      (!(c->top_p_threshold > 0.0f) || !(c->top_p_threshold <= 1.0f)))
    return moe_error(moeErrorInvalidConfig,
                     "config.top_p_threshold = %g must be in (0, 1] (1 keeps every expert)",
                     (double)c->top_p_threshold);

  /* Capacity (4b, 4c). */
  if (!isfinite(c->capacity_factor) || c->capacity_factor < 0.0f)
    return moe_error(moeErrorInvalidConfig,
                     "config.capacity_factor = %g must be finite and >= 0 (0 = dropless)",
                     (double)c->capacity_factor);
  if (c->routing == moeRoutingExpertChoice) {
    if (!(c->capacity_factor > 0.0f))
      return moe_error(moeErrorInvalidConfig,
                       "config.capacity_factor = %g must be > 0 for expert choice "
                       "(each expert takes C = T * capacity_factor / E tokens)",
                       (double)c->capacity_factor);
    if (c->capacity_factor > (float)E)
      return moe_error(moeErrorInvalidConfig,
                       "config.capacity_factor = %g gives an expert-choice capacity "
                       "C = T * %g / %d above T: it must be <= num_experts = %d",
                       (double)c->capacity_factor, (double)c->capacity_factor, E, E);
  }
  if (c->routing == moeRoutingDense && c->capacity_factor > 0.0f)
    return moe_error(moeErrorInvalidConfig,
                     "config.capacity_factor = %g: dense gating runs every expert on every "
                     "token and has no capacity; set it to 0",
                     (double)c->capacity_factor);
  if ((int)c->drop_policy < 0 || (int)c->drop_policy >= moeDropPolicyCount)
    return moe_error(moeErrorInvalidConfig,
                     "config.drop_policy = %d is not a moeDropPolicy_t (valid: 0 position, 1 probs)",
                     (int)c->drop_policy);

  /* Multi-head MoE (5). */
  if (c->num_heads < 1 || c->num_heads > c->hidden || c->hidden % c->num_heads != 0)
    return moe_error(moeErrorInvalidConfig,
                     "config.num_heads = %d must divide hidden = %lld (and be >= 1)", c->num_heads,
                     (long long)c->hidden);

  /* Shared experts. */
  if (c->num_shared_experts < 0 || c->num_shared_experts > MOE_MAX_SHARED_EXPERTS)
    return moe_error(moeErrorInvalidConfig, "config.num_shared_experts = %d must be in [0, %d]",
                     c->num_shared_experts, MOE_MAX_SHARED_EXPERTS);
  if (c->num_shared_experts > 0) MOE_TRY(check_width("shared_intermediate", c->shared_intermediate));
  if (c->expert_bias != 0 && c->expert_bias != 1)
    return moe_error(moeErrorInvalidConfig, "config.expert_bias = %d must be 0 or 1",
                     c->expert_bias);
  if (c->norm_topk_prob != 0 && c->norm_topk_prob != 1)
    return moe_error(moeErrorInvalidConfig, "config.norm_topk_prob = %d must be 0 or 1",
                     c->norm_topk_prob);
  return moeSuccess;
}

moeStatus_t moeLayerConfigValidate(const moeLayerConfig_t *config) {
  moe_clear_error();
  moeLayerConfig_t cfg;
  MOE_TRY(moe_config_normalize(config, &cfg));
  return moe_config_validate(&cfg);
}
