/* One MoE layer of a checkpoint: the naming scheme of each family, relayout into libmoe's
 * [2I, H] / [H, I] expert layout, and delivery to a sink (the layer's weight setters, or host
 * arrays for moeCheckpointReadWeights). See include/moe/moe_io.h. */
#define _POSIX_C_SOURCE 200809L /* strdup, O_CLOEXEC, mmap */
#include "moe/moe_io.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/status.h"

#ifdef MOE_WITH_CJSON

#include "io/checkpoint.h"
#include "layer/config.h"
#include "io/hf_config.h"
#include "io/loader.h"
#include "layer/layer.h"
#include "layer/layer_internal.h"

/* ---- the plan: config, files, naming scheme, expert range ---------------------------------- */

void moe_plan_close(moe_plan *p) {
  if (!p) return;
  moe_ckpt_close(p->ckpt);
  p->ckpt = NULL;
}

static moeStatus_t read_opts(const moeCheckpointOptions_t *opts, moeCheckpointOptions_t *o) {
  moeCheckpointOptions_t def = MOE_CHECKPOINT_OPTIONS_INIT;
  *o = def;
  if (!opts) return moeSuccess;
  /* Fields past a caller's (older, smaller) struct keep their defaults. */
  MOE_TRY(moe_sized_in(o, opts, offsetof(moeCheckpointOptions_t, dtype_override) + sizeof(int32_t),
                       sizeof *o, "moeCheckpointOptions_t"));
  if (o->dtype_override != 0 && o->dtype_override != 1)
    return moe_error(moeErrorInvalidArgument, "dtype_override = %d must be 0 or 1",
                     o->dtype_override);
  if (o->dtype_override && !moe_dtype_valid(o->dtype))
    return moe_error(moeErrorInvalidArgument, "dtype = %d is not a moeDtype_t", (int)o->dtype);
  return moeSuccess;
}

/* Tensor names: "<prefix><suffix>" with the layer prefix "model.layers.N.<block>.". */
const char *moe_tname(moe_plan *p, const char *fmt, ...) {
  size_t n = (size_t)snprintf(p->name, sizeof p->name, "%s", p->prefix);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->name + n, sizeof p->name - n, fmt, ap);
  va_end(ap);
  return p->name;
}

static moeStatus_t has(moe_plan *p, const char *name, int *found) {
  moeStatus_t st;
  int h = moe_ckpt_has(p->ckpt, name, &st);
  if (h < 0) return st;
  *found = h;
  return moeSuccess;
}

/* Finds the scheme of this layer: per-expert tensors (w1/w3/w2 or *_proj), gpt-oss's interleaved
 * stacked tensors, or transformers v5's stacked tensors; under block_sparse_moe (Mixtral) or mlp. */
static moeStatus_t detect_scheme(moe_plan *p, int32_t layer) {
  static const char *const blocks[] = {"block_sparse_moe.", "mlp."};
  int first_block = p->hf.family == MOE_FAMILY_MIXTRAL ? 0 : 1;
  char tried[2 * sizeof p->name + 64] = "";
  size_t used = 0;
  for (int b = first_block; b < 2; ++b) {
    snprintf(p->prefix, sizeof p->prefix, "model.layers.%d.%s", layer, blocks[b]);
    int found = 0;
    if (p->hf.family != MOE_FAMILY_GPT_OSS) {
      MOE_TRY(has(p, moe_tname(p, "experts.%d.w1.weight", p->begin), &found));
      if (found) { p->scheme = MOE_SCHEME_W123; return moeSuccess; }
      MOE_TRY(has(p, moe_tname(p, "experts.%d.gate_proj.weight", p->begin), &found));
      if (found) { p->scheme = MOE_SCHEME_PROJ; return moeSuccess; }
      moe_tname(p, "experts.%d.{w1,gate_proj}.weight", p->begin);
      if (used < sizeof tried)
        used += (size_t)snprintf(tried + used, sizeof tried - used, "%s, ", p->name);
    }
    MOE_TRY(has(p, moe_tname(p, "experts.gate_up_proj"), &found));
    if (found) {
      p->scheme = p->hf.family == MOE_FAMILY_GPT_OSS ? MOE_SCHEME_GPT_OSS : MOE_SCHEME_STACKED;
      return moeSuccess;
    }
    if (used < sizeof tried)
      used += (size_t)snprintf(tried + used, sizeof tried - used, "%s, ", p->name);
    MOE_TRY(has(p, moe_tname(p, "experts.gate_up_proj_blocks"), &found));
    if (found)
      return moe_error(moeErrorNotSupported, "%s: tensor %s: MXFP4 experts (blocks + scales) "
                       "not supported yet; use a bf16 checkpoint", p->ckpt->index_path, p->name);
  }
  if (used >= 2 && used < sizeof tried) tried[used - 2] = '\0';
  return moe_error(moeErrorFormat, "%s: layer %d: no expert weights found (looked for %s)",
                   p->ckpt->index_path, layer, tried);
}

moeStatus_t moe_get(moe_plan *p, const char *name, int32_t ndim, const int64_t *shape,
                    const moe_st_tensor **t) {
  const moe_st_file *f;
  MOE_TRY(moe_ckpt_get(p->ckpt, name, &f, t));
  return moe_st_check(f, *t, ndim, shape);
}

/* The dtype of the first expert's gate weights: the checkpoint's dtype. */
static moeStatus_t detect_dtype(moe_plan *p) {
  const int64_t H = p->hf.cfg.hidden, I = p->hf.cfg.intermediate, E = p->hf.cfg.num_experts;
  const moe_st_tensor *t;
  switch (p->scheme) {
    case MOE_SCHEME_W123: {
      int64_t s[2] = {I, H};
      MOE_TRY(moe_get(p, moe_tname(p, "experts.%d.w1.weight", p->begin), 2, s, &t));
      break;
    }
    case MOE_SCHEME_PROJ: {
      int64_t s[2] = {I, H};
      MOE_TRY(moe_get(p, moe_tname(p, "experts.%d.gate_proj.weight", p->begin), 2, s, &t));
      break;
    }
    case MOE_SCHEME_STACKED: {
      int64_t s[3] = {E, 2 * I, H};
      MOE_TRY(moe_get(p, moe_tname(p, "experts.gate_up_proj"), 3, s, &t));
      break;
    }
    default: {
      int64_t s[3] = {E, H, 2 * I};
      MOE_TRY(moe_get(p, moe_tname(p, "experts.gate_up_proj"), 3, s, &t));
      break;
    }
  }
  p->ckpt_dtype = t->dtype;
  return moeSuccess;
}

moeStatus_t moe_plan_open(const char *dir, int32_t layer, const moeCheckpointOptions_t *opts,
                          moe_plan *p) {
  memset(p, 0, sizeof *p);
  if (!dir) return moe_error(moeErrorInvalidArgument, "dir must not be NULL");
  moeCheckpointOptions_t o;
  MOE_TRY(read_opts(opts, &o));
  MOE_TRY(moe_hf_config_read(dir, layer, &p->hf));
  const int32_t E = p->hf.cfg.num_experts;
  if (o.expert_begin < 0 || o.expert_begin >= E)
    return moe_error(moeErrorInvalidArgument, "expert_begin = %d outside [0, %d) (E from %s/"
                     "config.json)", o.expert_begin, E, dir);
  if (o.expert_count != -1 && (o.expert_count < 1 || o.expert_count > E - o.expert_begin))
    return moe_error(moeErrorInvalidArgument, "expert_count = %d: must be -1 (all) or in [1, %d]",
                     o.expert_count, E - o.expert_begin);
  p->begin = o.expert_begin;
  p->count = o.expert_count == -1 ? E - o.expert_begin : o.expert_count;
  moeStatus_t st = moe_ckpt_open(dir, &p->ckpt);
  if (st == moeSuccess) st = detect_scheme(p, layer);
  if (st == moeSuccess) st = detect_dtype(p);
  if (st != moeSuccess) {
    moe_plan_close(p);
    return st;
  }
  p->hf.cfg.dtype = o.dtype_override ? o.dtype : p->ckpt_dtype;
  /* A config.json the layer cannot take (n_group not dividing E, k > E, ...) fails here, with
   * the field named, before any weight is read. */
  st = moeLayerConfigValidate(&p->hf.cfg);
  if (st != moeSuccess) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", moeGetLastErrorMessage());
    moe_plan_close(p);
    return moe_error(st, "%s/config.json gives an invalid layer %d: %s", dir, layer, msg);
  }
  return moeSuccess;
}

/* ---- public API ---------------------------------------------------------------------------- */

moeStatus_t moeCheckpointConfig(const char *dir, int32_t layer_index,
                                const moeCheckpointOptions_t *opts, moeLayerConfig_t *config) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(config);
  moe_plan p;
  MOE_TRY(moe_sized_check(config, MOE_LAYER_CONFIG_MIN_SIZE, sizeof(moeLayerConfig_t),
                          "moeLayerConfig_t"));
  MOE_TRY(moe_plan_open(dir, layer_index, opts, &p));
  moeStatus_t st = moe_sized_out(config, &p.hf.cfg, MOE_LAYER_CONFIG_MIN_SIZE,
                                 sizeof(moeLayerConfig_t), "moeLayerConfig_t");
  moe_plan_close(&p);
  return st;
}

moeStatus_t moeLayerCreateFromCheckpoint(moeLayer_t *layer, moeContext_t ctx, const char *dir,
                                         int32_t layer_index,
                                         const moeCheckpointOptions_t *opts) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  *layer = NULL;
  MOE_CHECK_NOT_NULL(ctx);
  moe_plan p;
  MOE_TRY(moe_plan_open(dir, layer_index, opts, &p));
  moeLayer_t l = NULL;
  /* A range narrower than [0, E) makes an expert-parallel local layer holding only its experts. */
  moeStatus_t st = p.count == p.hf.cfg.num_experts
                       ? moeLayerCreate(&l, ctx, &p.hf.cfg)
                       : moe_layer_create_local(&l, ctx, &p.hf.cfg, p.begin, p.count);
  if (st == moeSuccess) st = moe_load_weights(&p, &moe_layer_sink, l);
  moe_plan_close(&p);
  if (st != moeSuccess) {
    char msg[1024]; /* Destroy, a public call, clears the message: keep the first error's */
    snprintf(msg, sizeof msg, "%s", moeGetLastErrorMessage());
    moeLayerDestroy(l);
    return moe_error(st, "%s", msg);
  }
  *layer = l;
  return moeSuccess;
}

/* Fields of the caller's layer config that must equal the checkpoint's (dtype may differ: the
 * setters convert). Returns moeSuccess or InvalidArgument naming the first that differs. */
static moeStatus_t same_shape(const moeLayerConfig_t *a, const moeLayerConfig_t *b,
                              const char *dir, int32_t layer) {
#define SAME(field, fmt, cast)                                                                 \
  if (a->field != b->field)                                                                    \
    return moe_error(moeErrorInvalidArgument, "the layer's " #field " = " fmt " but layer %d of " \
                     "%s has " fmt, (cast)a->field, layer, dir, (cast)b->field);
  SAME(hidden, "%lld", long long)
  SAME(intermediate, "%lld", long long)
  SAME(num_experts, "%d", int)
  SAME(top_k, "%d", int)
  SAME(routing, "%d", int)
  SAME(norm_topk_prob, "%d", int)
  SAME(n_group, "%d", int)
  SAME(topk_group, "%d", int)
  SAME(routed_scaling_factor, "%g", double)
  SAME(activation, "%d", int)
  SAME(swiglu_limit, "%g", double)
  SAME(expert_bias, "%d", int)
  SAME(num_heads, "%d", int)
  SAME(num_shared_experts, "%d", int)
  if (a->num_shared_experts > 0) SAME(shared_intermediate, "%lld", long long)
#undef SAME
  return moeSuccess;
}

moeStatus_t moeLayerLoadCheckpoint(moeLayer_t layer, const char *dir, int32_t layer_index,
                                   const moeCheckpointOptions_t *opts) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  moeCheckpointOptions_t o;
  MOE_TRY(read_opts(opts, &o));
  /* Default range: the experts the layer holds. An explicit range must lie inside them. */
  const int32_t lb = layer->expert_begin, le = layer->expert_begin + layer->E_local;
  if (o.expert_begin == 0 && o.expert_count == -1) {
    o.expert_begin = lb;
    o.expert_count = layer->E_local;
  } else {
    const int32_t e = o.expert_count == -1 ? layer->cfg.num_experts : o.expert_begin + o.expert_count;
    if (o.expert_begin < lb || e > le)
      return moe_error(moeErrorInvalidArgument, "experts [%d, %d) asked for, but the layer holds "
                       "experts [%d, %d)", o.expert_begin, e, lb, le);
  }
  o.dtype_override = 1; /* the layer's dtype is already chosen; don't touch it */
  o.dtype = layer->cfg.dtype;
  moe_plan p;
  MOE_TRY(moe_plan_open(dir, layer_index, &o, &p));
  moeStatus_t st = same_shape(&layer->cfg, &p.hf.cfg, dir, layer_index);
  if (st == moeSuccess) st = moe_load_weights(&p, &moe_layer_sink, layer);
  moe_plan_close(&p);
  return st;
}

moeStatus_t moeCheckpointWeightsDestroy(moeCheckpointWeights_t *w) {
  if (!w) return moeSuccess;
  free(w->router_weight);
  free(w->router_bias);
  free(w->selection_bias);
  free(w->gate_up);
  free(w->down);
  free(w->gate_up_bias);
  free(w->down_bias);
  free(w->shared_gate_up);
  free(w->shared_down);
  free(w);
  return moeSuccess;
}

static float *alloc_f32(int64_t a, int64_t b, int64_t c, int *oom) {
  if (*oom || a == 0) return NULL;
  float *p = calloc((size_t)(a * b * c), sizeof(float));
  if (!p) *oom = 1;
  return p;
}

moeStatus_t moeCheckpointReadWeights(const char *dir, int32_t layer_index,
                                     const moeCheckpointOptions_t *opts,
                                     moeCheckpointWeights_t **weights) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(weights);
  *weights = NULL;
  moe_plan p;
  MOE_TRY(moe_plan_open(dir, layer_index, opts, &p));
  const moeLayerConfig_t *c = &p.hf.cfg;
  const int64_t H = c->hidden, I = c->intermediate, E = c->num_experts, n = p.count;
  const int64_t GI = 2 * I, S = c->num_shared_experts, Is = c->shared_intermediate;
  moeCheckpointWeights_t *w = calloc(1, sizeof *w);
  int oom = w == NULL;
  if (w) {
    w->config = *c;
    w->expert_begin = p.begin;
    w->expert_count = p.count;
    w->router_weight = alloc_f32(E, H, 1, &oom);
    w->router_bias = p.hf.has_router_bias ? alloc_f32(E, 1, 1, &oom) : NULL;
    w->selection_bias = p.hf.has_selection_bias ? alloc_f32(E, 1, 1, &oom) : NULL;
    w->gate_up = alloc_f32(n, GI, H, &oom);
    w->down = alloc_f32(n, H, I, &oom);
    w->gate_up_bias = c->expert_bias ? alloc_f32(n, GI, 1, &oom) : NULL;
    w->down_bias = c->expert_bias ? alloc_f32(n, H, 1, &oom) : NULL;
    w->shared_gate_up = alloc_f32(S, 2 * Is, H, &oom);
    w->shared_down = alloc_f32(S, H, Is, &oom);
  }
  moeStatus_t st = oom ? moe_error(moeErrorOutOfMemory, "out of memory for the weights of layer "
                                   "%d of %s", layer_index, dir)
                       : moe_load_weights(&p, &moe_host_sink, w);
  moe_plan_close(&p);
  if (st != moeSuccess) {
    moeCheckpointWeightsDestroy(w);
    return st;
  }
  *weights = w;
  return moeSuccess;
}

#else /* !MOE_WITH_CJSON: the API exists and says why it cannot work */

#define NO_CJSON                                                                        \
  moe_error(moeErrorNotSupported, "%s: libmoe was built without cJSON (MOE_WITH_CJSON=OFF)", \
            __func__)

moeStatus_t moeCheckpointConfig(const char *dir, int32_t layer_index,
                                const moeCheckpointOptions_t *opts, moeLayerConfig_t *config) {
  moe_clear_error();
  return NO_CJSON;
}
moeStatus_t moeLayerCreateFromCheckpoint(moeLayer_t *layer, moeContext_t ctx, const char *dir,
                                         int32_t layer_index,
                                         const moeCheckpointOptions_t *opts) {
  moe_clear_error();
  if (layer) *layer = NULL;
  return NO_CJSON;
}
moeStatus_t moeCheckpointReadWeights(const char *dir, int32_t layer_index,
                                     const moeCheckpointOptions_t *opts,
                                     moeCheckpointWeights_t **weights) {
  moe_clear_error();
  if (weights) *weights = NULL;
  return NO_CJSON;
}
moeStatus_t moeLayerLoadCheckpoint(moeLayer_t layer, const char *dir, int32_t layer_index,
                                   const moeCheckpointOptions_t *opts) {
  moe_clear_error();
  return NO_CJSON;
}
moeStatus_t moeCheckpointWeightsDestroy(moeCheckpointWeights_t *weights) {
  return moeSuccess;
}
#endif /* MOE_WITH_CJSON */
