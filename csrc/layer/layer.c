/* Layer lifetime and weights: allocation on the context's backend, host-to-backend upload with
 * dtype conversion, and the bookkeeping that lets forward refuse unset weights. */
#include "layer/layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/status.h"
#include "layer/config.h"
#include "layer/layer_internal.h"

size_t moe_layer_elem_size(const struct moeLayer_s *layer) {
  return moe_dtype_size(layer->cfg.dtype);
}

/* Every backend buffer a layer owns, for allocation and release in one place. */
#define MOE_LAYER_BUFFERS(X)                                                     \
  X(router_weight) X(router_bias) X(selection_bias) X(w_gate_up) X(w_down)       \
  X(b_gate_up) X(b_down) X(shared_gate_up) X(shared_down) X(head_weight)         \
  X(merge_weight) X(head_bias) X(merge_bias) X(own_workspace)

static void layer_free(moeLayer_t l) {
  if (!l) return;
  if (l->ctx) {
#define MOE_FREE_BUFFER(name) moe_backend_free(l->ctx, (void *)l->name);
    MOE_LAYER_BUFFERS(MOE_FREE_BUFFER)
#undef MOE_FREE_BUFFER
  }
  free(l->expert_set);
  free(l->shared_set);
  free(l);
}

/* n elements of elem bytes each, with overflow checks; the name goes into the message.
 * Matrices are left uninitialized (forward refuses weights that were never set); vectors that
 * have a meaningful default (biases: zero) are zeroed. */
static moeStatus_t alloc_buffer(moeLayer_t l, const char *name, int64_t n, size_t elem, int zero,
                                void **ptr) {
  *ptr = NULL;
  if (n <= 0) return moeSuccess;
  if ((uint64_t)n > SIZE_MAX / elem)
    return moe_error(moeErrorInvalidConfig, "%s: %lld elements of %zu bytes overflow size_t",
                     name, (long long)n, elem);
  const size_t bytes = (size_t)n * elem;
  moeStatus_t st = moe_backend_alloc(l->ctx, bytes, ptr);
  if (st != moeSuccess) {
    /* The cause is in this thread's message buffer, which moe_error writes: copy it first
     * (vsnprintf with its output among its arguments is undefined behaviour). */
    char cause[512];
    snprintf(cause, sizeof cause, "%s", moeGetLastErrorMessage());
    return moe_error(st, "allocating %s (%zu bytes) failed: %s", name, bytes, cause);
  }
  return zero ? l->ctx->ops->memset_zero(l->ctx, *ptr, bytes, l->ctx->stream) : moeSuccess;
}

#define alloc_matrix(l, name, n, elem, ptr) alloc_buffer(l, name, n, elem, 0, ptr)
#define alloc_zeroed(l, name, n, elem, ptr) alloc_buffer(l, name, n, elem, 1, ptr)

/* a * b * c with overflow detection (all operands >= 0). */
static int mul3_overflows(int64_t a, int64_t b, int64_t c, int64_t *out) {
  int64_t ab;
  if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, out)) return 1;
  return 0;
}

static moeStatus_t layer_allocate(moeLayer_t l) {
  const size_t el = moe_layer_elem_size(l);
  int64_t n_gate_up, n_down, n_shared_gate_up, n_shared_down;
  if (mul3_overflows(l->E_local, l->GI, l->Hr, &n_gate_up) ||
      mul3_overflows(l->E_local, l->Hr, l->I, &n_down) ||
      mul3_overflows(l->S, l->GIs, l->H, &n_shared_gate_up) ||
      mul3_overflows(l->S, l->H, l->Is, &n_shared_down))
    return moe_error(moeErrorInvalidConfig, "expert weight sizes overflow int64");
  /* Largest first, so that a layer too big for memory fails before anything is touched. */
  MOE_TRY(alloc_matrix(l, "w_gate_up", n_gate_up, el, &l->w_gate_up));
  MOE_TRY(alloc_matrix(l, "w_down", n_down, el, &l->w_down));
  MOE_TRY(alloc_matrix(l, "router_weight", (int64_t)l->E * l->Hr, 4, (void **)&l->router_weight));
  MOE_TRY(alloc_zeroed(l, "selection_bias", l->E, 4, (void **)&l->selection_bias));
  if (l->cfg.expert_bias) {
    MOE_TRY(alloc_zeroed(l, "b_gate_up", (int64_t)l->E_local * l->GI, 4, (void **)&l->b_gate_up));
    MOE_TRY(alloc_zeroed(l, "b_down", (int64_t)l->E_local * l->Hr, 4, (void **)&l->b_down));
  }
  MOE_TRY(alloc_matrix(l, "shared_gate_up", n_shared_gate_up, el, &l->shared_gate_up));
  MOE_TRY(alloc_matrix(l, "shared_down", n_shared_down, el, &l->shared_down));
  if (l->heads > 1) {
    MOE_TRY(alloc_matrix(l, "head_weight", l->H * l->H, el, &l->head_weight));
    MOE_TRY(alloc_matrix(l, "merge_weight", l->H * l->H, el, &l->merge_weight));
    MOE_TRY(alloc_zeroed(l, "head_bias", l->H, 4, (void **)&l->head_bias));
    MOE_TRY(alloc_zeroed(l, "merge_bias", l->H, 4, (void **)&l->merge_bias));
  }
  return l->ctx->ops->synchronize(l->ctx, l->ctx->stream);
}

moeStatus_t moe_layer_create_local(moeLayer_t *layer, moeContext_t ctx,
                                   const moeLayerConfig_t *config, int32_t expert_begin,
                                   int32_t num_local_experts) {
  MOE_CHECK_NOT_NULL(layer);
  *layer = NULL;
  MOE_CHECK_NOT_NULL(ctx);
  moeLayerConfig_t cfg;
  MOE_TRY(moe_config_normalize(config, &cfg));
  MOE_TRY(moe_config_validate(&cfg));
  if (expert_begin < 0 || num_local_experts < 0 ||
      (int64_t)expert_begin + num_local_experts > cfg.num_experts)
    return moe_error(moeErrorInvalidConfig,
                     "local experts [%d, %d + %d) must lie within num_experts = %d", expert_begin,
                     expert_begin, num_local_experts, cfg.num_experts);

  moeLayer_t l = calloc(1, sizeof *l);
  if (!l) return moe_error(moeErrorOutOfMemory, "moeLayerCreate: out of host memory");
  l->ctx = ctx;
  l->cfg = cfg;
  l->H = cfg.hidden;
  l->heads = cfg.num_heads;
  l->Hr = cfg.hidden / cfg.num_heads;
  l->I = cfg.intermediate;
  l->Is = cfg.shared_intermediate;
  l->E = cfg.num_experts;
  l->expert_begin = expert_begin;
  l->E_local = num_local_experts;
  l->K = moe_config_route_width(&cfg);
  l->S = cfg.num_shared_experts;
  l->gated = moe_activation_is_gated(cfg.activation);
  l->GI = l->gated ? 2 * l->I : l->I;
  l->GIs = l->gated ? 2 * l->Is : l->Is;
  l->expert_set = calloc(num_local_experts > 0 ? (size_t)num_local_experts : 1, 1);
  l->shared_set = calloc(l->S > 0 ? (size_t)l->S : 1, 1);
  moeStatus_t st = (l->expert_set && l->shared_set)
                       ? layer_allocate(l)
                       : moe_error(moeErrorOutOfMemory, "moeLayerCreate: out of host memory");
  if (st != moeSuccess) {
    layer_free(l);
    return st;
  }
  *layer = l;
  return moeSuccess;
}

moeStatus_t moeLayerCreate(moeLayer_t *layer, moeContext_t ctx, const moeLayerConfig_t *config) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  *layer = NULL;
  MOE_CHECK_NOT_NULL(config);
  MOE_CHECK_NOT_NULL(ctx);
  moeLayerConfig_t cfg;
  MOE_TRY(moe_config_normalize(config, &cfg));
  return moe_layer_create_local(layer, ctx, &cfg, 0, cfg.num_experts);
}

moeStatus_t moeLayerDestroy(moeLayer_t layer) {
  moe_clear_error();
  if (!layer) return moeSuccess;
  layer->ctx->ops->synchronize(layer->ctx, layer->ctx->stream);
  layer_free(layer);
  return moeSuccess;
}

moeStatus_t moeLayerGetConfig(moeLayer_t layer, moeLayerConfig_t *config) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(config);
  return moe_sized_out(config, &layer->cfg, MOE_LAYER_CONFIG_MIN_SIZE, sizeof(moeLayerConfig_t),
                       "moeLayerConfig_t");
}

moeStatus_t moeLayerGetRouteWidth(moeLayer_t layer, int32_t *route_width) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(route_width);
  *route_width = layer->K;
  return moeSuccess;
}

/* ---- weight upload ------------------------------------------------------------------------ */

/* Converts n host elements of src_dtype to dst_dtype and uploads them to dst + offset elements. */
static moeStatus_t upload_converted(moeLayer_t l, void *dst, moeDtype_t dst_dtype, int64_t offset,
                                    const void *src, moeDtype_t src_dtype, int64_t n) {
  if (n <= 0) return moeSuccess;
  const size_t el = moe_dtype_size(dst_dtype);
  char *dst_at = (char *)dst + (size_t)offset * el;
  if (src_dtype == dst_dtype) return l->ctx->ops->upload(l->ctx, dst_at, src, (size_t)n * el);
  void *tmp = malloc((size_t)n * el);
  if (!tmp) return moe_error(moeErrorOutOfMemory, "weight conversion buffer of %zu bytes", (size_t)n * el);
  moe_convert(tmp, dst_dtype, src, src_dtype, (size_t)n);
  moeStatus_t st = l->ctx->ops->upload(l->ctx, dst_at, tmp, (size_t)n * el);
  free(tmp);
  return st;
}

static moeStatus_t check_src_dtype(moeDtype_t src_dtype) {
  if (!moe_dtype_valid(src_dtype))
    return moe_error(moeErrorInvalidArgument,
                     "src_dtype = %d is not a moeDtype_t (valid: 0 f32, 1 f16, 2 bf16)",
                     (int)src_dtype);
  return moeSuccess;
}

static moeStatus_t check_gate(const moeLayer_s_alias *l, const void *gate) {
  if (l->gated && !gate)
    return moe_error(moeErrorInvalidArgument,
                     "gate must not be NULL: the activation (%d) is gated", (int)l->cfg.activation);
  if (!l->gated && gate)
    return moe_error(moeErrorInvalidArgument,
                     "gate must be NULL: the activation (%d) has no gate half",
                     (int)l->cfg.activation);
  return moeSuccess;
}

moeStatus_t moeLayerSetRouterWeights(moeLayer_t layer, const void *weight, const void *bias,
                                     moeDtype_t src_dtype) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(weight);
  MOE_TRY(check_src_dtype(src_dtype));
  MOE_TRY(upload_converted(layer, layer->router_weight, moeFloat32, 0, weight, src_dtype,
                           (int64_t)layer->E * layer->Hr));
  if (bias) {
    if (!layer->router_bias) {
      MOE_TRY(alloc_zeroed(layer, "router_bias", layer->E, 4, (void **)&layer->router_bias));
    }
    MOE_TRY(upload_converted(layer, layer->router_bias, moeFloat32, 0, bias, src_dtype, layer->E));
  }
  layer->router_set = 1;
  return layer->ctx->ops->synchronize(layer->ctx, layer->ctx->stream);
}

moeStatus_t moe_layer_check_selection_bias_used(const moeLayer_s_alias *l, const char *fn) {
  if (l->cfg.routing != moeRoutingSigmoidGroupTopK)
    return moe_error(moeErrorInvalidConfig,
                     "%s: only moeRoutingSigmoidGroupTopK reads the selection bias; this layer's "
                     "routing is %d",
                     fn, (int)l->cfg.routing);
  return moeSuccess;
}

moeStatus_t moeLayerSetSelectionBias(moeLayer_t layer, const float *bias) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(bias);
  MOE_TRY(moe_layer_check_selection_bias_used(layer, "moeLayerSetSelectionBias"));
  return upload_converted(layer, layer->selection_bias, moeFloat32, 0, bias, moeFloat32, layer->E);
}

/* One FFN (routed or shared expert) at slot `index` of the stacked buffers: gate (gated only)
 * and up [I, W] into gate_up [., GI, W], down [W, I] into down [., W, I]. */
static moeStatus_t upload_ffn(moeLayer_t l, void *gate_up, void *down, int64_t index, int64_t I,
                              int64_t W, const void *gate, const void *up, const void *dn,
                              moeDtype_t src_dtype) {
  const moeDtype_t dt = l->cfg.dtype;
  const int64_t IW = I * W;
  int64_t at = index * (l->gated ? 2 : 1) * IW;
  if (l->gated) {
    MOE_TRY(upload_converted(l, gate_up, dt, at, gate, src_dtype, IW));
    at += IW;
  }
  MOE_TRY(upload_converted(l, gate_up, dt, at, up, src_dtype, IW));
  return upload_converted(l, down, dt, index * IW, dn, src_dtype, IW);
}

static moeStatus_t local_expert(const moeLayer_s_alias *l, int32_t expert, int32_t *local) {
  if (expert < 0 || expert >= l->E)
    return moe_error(moeErrorInvalidArgument, "expert = %d must be in [0, num_experts = %d)",
                     expert, l->E);
  if (expert < l->expert_begin || expert >= l->expert_begin + l->E_local)
    return moe_error(moeErrorInvalidArgument,
                     "expert = %d is not held by this layer (it holds experts [%d, %d))", expert,
                     l->expert_begin, l->expert_begin + l->E_local);
  *local = expert - l->expert_begin;
  return moeSuccess;
}

moeStatus_t moeLayerSetExpertWeights(moeLayer_t layer, int32_t expert, const void *gate,
                                     const void *up, const void *down, moeDtype_t src_dtype) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(up);
  MOE_CHECK_NOT_NULL(down);
  MOE_TRY(check_src_dtype(src_dtype));
  MOE_TRY(check_gate(layer, gate));
  int32_t e = 0;
  MOE_TRY(local_expert(layer, expert, &e));
  MOE_TRY(upload_ffn(layer, layer->w_gate_up, layer->w_down, e, layer->I, layer->Hr, gate, up,
                     down, src_dtype));
  layer->expert_set[e] = 1;
  return moeSuccess;
}

moeStatus_t moeLayerSetExpertWeightsStacked(moeLayer_t layer, const void *gate_up,
                                            const void *down, moeDtype_t src_dtype) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(gate_up);
  MOE_CHECK_NOT_NULL(down);
  MOE_TRY(check_src_dtype(src_dtype));
  /* The stacked tensors hold all E experts; a layer holding a slice reads only its own. */
  const size_t src_el = moe_dtype_size(src_dtype);
  const int64_t gu_per = layer->GI * layer->Hr, down_per = layer->Hr * layer->I;
  const char *gu = (const char *)gate_up + (size_t)layer->expert_begin * gu_per * src_el;
  const char *dn = (const char *)down + (size_t)layer->expert_begin * down_per * src_el;
  MOE_TRY(upload_converted(layer, layer->w_gate_up, layer->cfg.dtype, 0, gu, src_dtype,
                           layer->E_local * gu_per));
  MOE_TRY(upload_converted(layer, layer->w_down, layer->cfg.dtype, 0, dn, src_dtype,
                           layer->E_local * down_per));
  memset(layer->expert_set, 1, (size_t)layer->E_local);
  return moeSuccess;
}

moeStatus_t moeLayerSetExpertBiases(moeLayer_t layer, int32_t expert, const void *gate_up_bias,
                                    const void *down_bias, moeDtype_t src_dtype) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(gate_up_bias);
  MOE_CHECK_NOT_NULL(down_bias);
  MOE_TRY(check_src_dtype(src_dtype));
  if (!layer->cfg.expert_bias)
    return moe_error(moeErrorInvalidConfig,
                     "moeLayerSetExpertBiases: the layer was created with config.expert_bias = 0");
  int32_t e = 0;
  MOE_TRY(local_expert(layer, expert, &e));
  MOE_TRY(upload_converted(layer, layer->b_gate_up, moeFloat32, (int64_t)e * layer->GI,
                           gate_up_bias, src_dtype, layer->GI));
  return upload_converted(layer, layer->b_down, moeFloat32, (int64_t)e * layer->Hr, down_bias,
                          src_dtype, layer->Hr);
}

moeStatus_t moeLayerSetSharedExpertWeights(moeLayer_t layer, int32_t shared_expert,
                                           const void *gate, const void *up, const void *down,
                                           moeDtype_t src_dtype) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(up);
  MOE_CHECK_NOT_NULL(down);
  MOE_TRY(check_src_dtype(src_dtype));
  MOE_TRY(check_gate(layer, gate));
  if (shared_expert < 0 || shared_expert >= layer->S)
    return moe_error(moeErrorInvalidArgument,
                     "shared_expert = %d must be in [0, num_shared_experts = %d)", shared_expert,
                     layer->S);
  MOE_TRY(upload_ffn(layer, layer->shared_gate_up, layer->shared_down, shared_expert, layer->Is,
                     layer->H, gate, up, down, src_dtype));
  layer->shared_set[shared_expert] = 1;
  return moeSuccess;
}

moeStatus_t moeLayerSetHeadWeights(moeLayer_t layer, const void *head, const void *head_bias,
                                   const void *merge, const void *merge_bias,
                                   moeDtype_t src_dtype) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(head);
  MOE_CHECK_NOT_NULL(merge);
  MOE_TRY(check_src_dtype(src_dtype));
  if (layer->heads <= 1)
    return moe_error(moeErrorInvalidConfig,
                     "moeLayerSetHeadWeights: the layer has num_heads = 1 (multi-head MoE off)");
  const moeDtype_t dt = layer->cfg.dtype;
  const int64_t HH = layer->H * layer->H;
  MOE_TRY(upload_converted(layer, layer->head_weight, dt, 0, head, src_dtype, HH));
  MOE_TRY(upload_converted(layer, layer->merge_weight, dt, 0, merge, src_dtype, HH));
  if (head_bias)
    MOE_TRY(upload_converted(layer, layer->head_bias, moeFloat32, 0, head_bias, src_dtype, layer->H));
  if (merge_bias)
    MOE_TRY(upload_converted(layer, layer->merge_bias, moeFloat32, 0, merge_bias, src_dtype, layer->H));
  layer->head_set = 1;
  return moeSuccess;
}

moeStatus_t moe_layer_check_ready(const moeLayer_s_alias *l) {
  if (!l->router_set)
    return moe_error(moeErrorInvalidState,
                     "the router weights were never set (moeLayerSetRouterWeights)");
  for (int32_t e = 0; e < l->E_local; ++e)
    if (!l->expert_set[e])
      return moe_error(moeErrorInvalidState,
                       "the weights of expert %d were never set (moeLayerSetExpertWeights)",
                       l->expert_begin + e);
  for (int32_t s = 0; s < l->S; ++s)
    if (!l->shared_set[s])
      return moe_error(moeErrorInvalidState,
                       "the weights of shared expert %d were never set "
                       "(moeLayerSetSharedExpertWeights)", s);
  if (l->heads > 1 && !l->head_set)
    return moe_error(moeErrorInvalidState,
                     "num_heads = %d but the head/merge projections were never set "
                     "(moeLayerSetHeadWeights)", l->heads);
  return moeSuccess;
}
