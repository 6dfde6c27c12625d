/* config.json -> moeLayerConfig_t for each supported model family (see hf_config.h).
 * Keys that size the layer are required; the others default as the family's transformers
 * configuration class does. */
#define _POSIX_C_SOURCE 200809L /* strdup, O_CLOEXEC, mmap */
#include "io/hf_config.h"

#ifdef MOE_WITH_CJSON

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/checkpoint.h"

#define MAX_CONFIG_BYTES (16u * 1024u * 1024u)

typedef struct {
  const cJSON *root;
  const char *path;       /* dir/config.json, for messages */
  const char *model_type;
} reader;

static moeStatus_t missing(const reader *r, const char *key) {
  return moe_error(moeErrorFormat, "%s: missing key '%s' (model_type %s)", r->path, key,
                   r->model_type);
}

/* An integer key in [lo, hi]. Absent (or null): the default when not required. */
static moeStatus_t get_int(const reader *r, const char *key, int required, int64_t def,
                           int64_t lo, int64_t hi, int64_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
  if (!v || cJSON_IsNull(v)) {
    if (required) return missing(r, key);
    *out = def;
    return moeSuccess;
  }
  double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
  if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
    return moe_error(moeErrorFormat, "%s: key '%s' must be an integer in [%lld, %lld]", r->path,
                     key, (long long)lo, (long long)hi);
  *out = (int64_t)d;
  return moeSuccess;
}

static moeStatus_t get_float(const reader *r, const char *key, double def, double *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
  if (!v || cJSON_IsNull(v)) {
    *out = def;
    return moeSuccess;
  }
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
    return moe_error(moeErrorFormat, "%s: key '%s' must be a finite number", r->path, key);
  *out = v->valuedouble;
  return moeSuccess;
}

static moeStatus_t get_bool(const reader *r, const char *key, int def, int32_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
  if (!v || cJSON_IsNull(v)) {
    *out = def;
    return moeSuccess;
  }
  if (!cJSON_IsBool(v))
    return moe_error(moeErrorFormat, "%s: key '%s' must be true or false", r->path, key);
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return moeSuccess;
}

/* A string key; absent: def. The result points into the JSON tree. */
static moeStatus_t get_string(const reader *r, const char *key, const char *def,
                              const char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
  if (!v || cJSON_IsNull(v)) {
    *out = def;
    return moeSuccess;
  }
  if (!cJSON_IsString(v))
    return moe_error(moeErrorFormat, "%s: key '%s' must be a string", r->path, key);
  *out = v->valuestring;
  return moeSuccess;
}

/* The SwiGLU families name their activation "silu" (or "swish"). */
static moeStatus_t check_silu(const reader *r, const char *key) {
  const char *act = NULL;
  MOE_TRY(get_string(r, key, "silu", &act));
  if (strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
    return moe_error(moeErrorNotSupported, "%s: %s = \"%s\" not supported for model_type %s "
                     "(expected \"silu\")", r->path, key, act, r->model_type);
  return moeSuccess;
}

#define INT_KEY(key, req, def, lo, hi, dst)                  \
  do {                                                       \
    int64_t v_ = 0;                                            \
    MOE_TRY(get_int(r, key, req, def, lo, hi, &v_));         \
    (dst) = v_;                                              \
  } while (0)

static moeStatus_t read_mixtral(const reader *r, moe_hf_config *o) {
  o->family = MOE_FAMILY_MIXTRAL;
  INT_KEY("num_local_experts", 1, 0, 1, 4096, o->cfg.num_experts);
  INT_KEY("num_experts_per_tok", 1, 0, 1, 4096, o->cfg.top_k);
  INT_KEY("intermediate_size", 1, 0, 1, 1 << 20, o->cfg.intermediate);
  o->cfg.routing = moeRoutingTopKSoftmax;
  return check_silu(r, "hidden_act");
}

/* Qwen3-MoE (norm_topk_prob defaults to false in Qwen3MoeConfig; the released models set it
 * true) and OLMoE (no renormalization). */
static moeStatus_t read_softmax_topk(const reader *r, moe_hf_config *o, int layer, int qwen) {
  o->family = qwen ? MOE_FAMILY_QWEN3_MOE : MOE_FAMILY_OLMOE;
  INT_KEY("num_experts", 1, 0, 1, 4096, o->cfg.num_experts);
  INT_KEY("num_experts_per_tok", 1, 0, 1, 4096, o->cfg.top_k);
  INT_KEY(qwen ? "moe_intermediate_size" : "intermediate_size", 1, 0, 1, 1 << 20,
          o->cfg.intermediate);
  MOE_TRY(get_bool(r, "norm_topk_prob", 0, &o->cfg.norm_topk_prob));
  o->cfg.routing = moeRoutingSoftmaxTopK;
  if (qwen) { /* Qwen3MoeDecoderLayer: sparse unless in mlp_only_layers or off the step */
    int64_t step = 1;
    INT_KEY("decoder_sparse_step", 0, 1, 1, 1 << 20, step);
    const cJSON *only = cJSON_GetObjectItemCaseSensitive(r->root, "mlp_only_layers");
    if (!cJSON_IsArray(only)) only = NULL;
    const cJSON *it;
    cJSON_ArrayForEach(it, only) {
      if (cJSON_IsNumber(it) && it->valuedouble == (double)layer)
        return moe_error(moeErrorInvalidConfig, "layer %d of Qwen3-MoE is dense (listed in "
                         "mlp_only_layers of %s)", layer, r->path);
    }
    if ((layer + 1) % step != 0)
      return moe_error(moeErrorInvalidConfig, "layer %d of Qwen3-MoE is dense "
                       "(decoder_sparse_step = %lld in %s)", layer, (long long)step, r->path);
  }
  return check_silu(r, "hidden_act");
}

/* DeepSeek-V3 ("noaux_tc": sigmoid, selection bias, groups by top-2 sum) and DeepSeek-V2
 * ("group_limited_greedy": softmax, groups by max; or "greedy": plain softmax top-k). Defaults
 * are those of DeepseekV3Config / DeepseekV2Config. */
static moeStatus_t read_deepseek(const reader *r, moe_hf_config *o, int layer, int v3) {
  const char *name = v3 ? "DeepSeek-V3" : "DeepSeek-V2";
  o->family = v3 ? MOE_FAMILY_DEEPSEEK_V3 : MOE_FAMILY_DEEPSEEK_V2;
  int64_t first_dense = 0, freq = 1, shared = 0, I = 0;
  INT_KEY("first_k_dense_replace", 0, v3 ? 3 : 0, 0, 1 << 20, first_dense);
  INT_KEY("moe_layer_freq", 0, 1, 1, 1 << 20, freq);
  if (layer < first_dense)
    return moe_error(moeErrorInvalidConfig, "layer %d of %s is dense (first_k_dense_replace = "
                     "%lld in %s)", layer, name, (long long)first_dense, r->path);
  if (layer % freq != 0)
    return moe_error(moeErrorInvalidConfig, "layer %d of %s is dense (moe_layer_freq = %lld in "
                     "%s)", layer, name, (long long)freq, r->path);
  INT_KEY("n_routed_experts", 1, 0, 1, 4096, o->cfg.num_experts);
  INT_KEY("num_experts_per_tok", 1, 0, 1, 4096, o->cfg.top_k);
  INT_KEY("moe_intermediate_size", 1, 0, 1, 1 << 20, I);
  INT_KEY("n_shared_experts", 0, v3 ? 1 : 0, 0, 64, shared);
  MOE_TRY(get_bool(r, "norm_topk_prob", v3, &o->cfg.norm_topk_prob));
  double scale = 0.0;
  MOE_TRY(get_float(r, "routed_scaling_factor", v3 ? 2.5 : 1.0, &scale));
  o->cfg.routed_scaling_factor = (float)scale;
  const char *scoring = NULL, *method = NULL;
  MOE_TRY(get_string(r, "scoring_func", v3 ? "sigmoid" : "softmax", &scoring));
  MOE_TRY(get_string(r, "topk_method", v3 ? "noaux_tc" : "greedy", &method));
  int grouped = 1;
  if (v3 && strcmp(scoring, "sigmoid") == 0 && strcmp(method, "noaux_tc") == 0) {
    o->cfg.routing = moeRoutingSigmoidGroupTopK;
    o->has_selection_bias = 1;
  } else if (!v3 && strcmp(scoring, "softmax") == 0 &&
             strcmp(method, "group_limited_greedy") == 0) {
    o->cfg.routing = moeRoutingSoftmaxGroupTopK;
  } else if (!v3 && strcmp(scoring, "softmax") == 0 && strcmp(method, "greedy") == 0) {
    o->cfg.routing = moeRoutingSoftmaxTopK; /* V2-Lite */
    grouped = 0;
  } else {
    return moe_error(moeErrorNotSupported, "%s: scoring_func \"%s\" with topk_method \"%s\" not "
                     "supported for %s (expected %s)", r->path, scoring, method, r->model_type,
                     v3 ? "sigmoid / noaux_tc"
                        : "softmax / group_limited_greedy or softmax / greedy");
  }
  if (grouped) {
    INT_KEY("n_group", !v3, 8, 1, 4096, o->cfg.n_group);
    INT_KEY("topk_group", !v3, 4, 1, 4096, o->cfg.topk_group);
  }
  o->cfg.intermediate = I;
  /* HF builds the shared experts as ONE MLP of width moe_intermediate_size * n_shared_experts. */
  o->cfg.num_shared_experts = shared > 0 ? 1 : 0;
  o->cfg.shared_intermediate = shared > 0 ? I * shared : 0;
  return check_silu(r, "hidden_act");
}

static moeStatus_t read_gpt_oss(const reader *r, moe_hf_config *o) {
  o->family = MOE_FAMILY_GPT_OSS;
  INT_KEY("num_local_experts", 1, 0, 1, 4096, o->cfg.num_experts);
  /* The released config.json has experts_per_token; transformers' GptOssConfig
   * num_experts_per_tok. */
  const char *k_key = cJSON_GetObjectItemCaseSensitive(r->root, "experts_per_token")
                          ? "experts_per_token" : "num_experts_per_tok";
  INT_KEY(k_key, 1, 0, 1, 4096, o->cfg.top_k);
  INT_KEY("intermediate_size", 1, 0, 1, 1 << 20, o->cfg.intermediate);
  double limit = 0.0;
  MOE_TRY(get_float(r, "swiglu_limit", 7.0, &limit));
  o->cfg.routing = moeRoutingTopKSoftmax; /* with the router bias: [1c] */
  o->cfg.activation = moeActivationSwiGLUClamped;
  o->cfg.swiglu_alpha = 1.702f;           /* fixed in GptOssExperts */
  o->cfg.swiglu_limit = (float)limit;
  o->cfg.expert_bias = 1;
  o->has_router_bias = 1;
  return moeSuccess;
}

static moeStatus_t read_root(const reader *rr, int32_t layer, moe_hf_config *o) {
  reader r = *rr;
  const char *mt = NULL;
  MOE_TRY(get_string(&r, "model_type", NULL, &mt));
  r.model_type = mt ? mt : "?";
  if (!mt) return missing(&r, "model_type");
  snprintf(o->model_type, sizeof o->model_type, "%s", mt);
  int64_t H = 0;
  MOE_TRY(get_int(&r, "hidden_size", 1, 0, 1, 1 << 20, &H));
  o->cfg.hidden = H;
  int64_t L = 0;
  MOE_TRY(get_int(&r, "num_hidden_layers", 1, 0, 1, 1 << 20, &L));
  o->num_layers = (int32_t)L;
  if (layer < 0 || layer >= L)
    return moe_error(moeErrorInvalidArgument, "layer_index %d out of range: num_hidden_layers = "
                     "%lld in %s", layer, (long long)L, r.path);
  const char *td = NULL;
  MOE_TRY(get_string(&r, "torch_dtype", NULL, &td));
  if (!td) MOE_TRY(get_string(&r, "dtype", "bfloat16", &td)); /* transformers v5 */
  o->cfg.dtype = strcmp(td, "float32") == 0 ? moeFloat32
                 : strcmp(td, "float16") == 0 ? moeFloat16 : moeBFloat16;

  if (strcmp(mt, "mixtral") == 0) return read_mixtral(&r, o);
  if (strcmp(mt, "qwen3_moe") == 0) return read_softmax_topk(&r, o, layer, 1);
  if (strcmp(mt, "olmoe") == 0) return read_softmax_topk(&r, o, layer, 0);
  if (strcmp(mt, "deepseek_v3") == 0) return read_deepseek(&r, o, layer, 1);
  if (strcmp(mt, "deepseek_v2") == 0) return read_deepseek(&r, o, layer, 0);
  if (strcmp(mt, "gpt_oss") == 0) return read_gpt_oss(&r, o);
  return moe_error(moeErrorNotSupported, "%s: model_type \"%s\" not supported (supported: "
                   "mixtral, qwen3_moe, olmoe, deepseek_v2, deepseek_v3, gpt_oss)", r.path, mt);
}

moeStatus_t moe_hf_config_read(const char *dir, int32_t layer_index, moe_hf_config *out) {
  moe_hf_config o;
  memset(&o, 0, sizeof o);
  moeLayerConfig_t init = MOE_LAYER_CONFIG_INIT;
  o.cfg = init;
  char *path = moe_path_join(dir, "config.json");
  if (!path) return moe_error(moeErrorOutOfMemory, "out of memory");
  char *text = NULL;
  size_t len = 0;
  moeStatus_t st = moe_read_text_file(path, MAX_CONFIG_BYTES, &text, &len);
  cJSON *root = NULL;
  if (st == moeSuccess) {
    root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root))
      st = moe_error(moeErrorFormat, "%s: not a valid JSON object", path);
  }
  if (st == moeSuccess) {
    reader r = {root, path, "?"};
    st = read_root(&r, layer_index, &o);
  }
  cJSON_Delete(root);
  free(text);
  free(path);
  if (st != moeSuccess) return st;
  if (o.cfg.shared_intermediate == 0) o.cfg.shared_intermediate = o.cfg.intermediate;
  *out = o;
  return moeSuccess;
}

#else
typedef int moe_io_hf_config_needs_cjson; /* keeps the translation unit non-empty */
#endif /* MOE_WITH_CJSON */
