/* The model table of docs/ROUTING.md section 9. Keep the two in step: a row added there is a
 * row added here. */
#include "presets.h"

#include <ctype.h>
#include <stdio.h>

#include "bench.h"

#define SWIGLU moeActivationSwiGLU
#define SWIGLU_CLAMP moeActivationSwiGLUClamped

/* name, model, section, H, I, E, k, shared, shared I, n_group, topk_group, routing, norm,
 * scaling, activation, expert_bias, router_bias */
static const benchPreset kPresets[] = {
    {"mixtral-8x7b", "Mixtral-8x7B", "1a", 4096, 14336, 8, 2, 0, 0, 1, 1,
     moeRoutingTopKSoftmax, 0, 1.0f, SWIGLU, 0, 0},
    {"mixtral-8x22b", "Mixtral-8x22B", "1a", 6144, 16384, 8, 2, 0, 0, 1, 1,
     moeRoutingTopKSoftmax, 0, 1.0f, SWIGLU, 0, 0},
    {"deepseek-v2", "DeepSeek-V2", "2b", 5120, 1536, 160, 6, 2, 1536, 8, 3,
     moeRoutingSoftmaxGroupTopK, 0, 16.0f, SWIGLU, 0, 0},
    {"deepseek-v3", "DeepSeek-V3", "2a", 7168, 2048, 256, 8, 1, 2048, 8, 4,
     moeRoutingSigmoidGroupTopK, 1, 2.5f, SWIGLU, 0, 0},
    {"qwen3-30b-a3b", "Qwen3-30B-A3B", "1b", 2048, 768, 128, 8, 0, 0, 1, 1,
     moeRoutingSoftmaxTopK, 1, 1.0f, SWIGLU, 0, 0},
    {"qwen3-235b-a22b", "Qwen3-235B-A22B", "1b", 4096, 1536, 128, 8, 0, 0, 1, 1,
     moeRoutingSoftmaxTopK, 1, 1.0f, SWIGLU, 0, 0},
    {"gpt-oss-120b", "gpt-oss-120b", "1c", 2880, 2880, 128, 4, 0, 0, 1, 1,
     moeRoutingTopKSoftmax, 0, 1.0f, SWIGLU_CLAMP, 1, 1},
    {"gpt-oss-20b", "gpt-oss-20b", "1c", 2880, 2880, 32, 4, 0, 0, 1, 1,
     moeRoutingTopKSoftmax, 0, 1.0f, SWIGLU_CLAMP, 1, 1},
    {"olmoe-1b-7b", "OLMoE-1B-7B", "1b", 2048, 1024, 64, 8, 0, 0, 1, 1,
     moeRoutingSoftmaxTopK, 0, 1.0f, SWIGLU, 0, 0},
    {"dbrx", "DBRX", "1b", 6144, 10752, 16, 4, 0, 0, 1, 1,
     moeRoutingSoftmaxTopK, 1, 1.0f, SWIGLU, 0, 0},
    {"llama4-scout", "Llama-4 Scout", "1e", 5120, 8192, 16, 1, 1, 8192, 1, 1,
     moeRoutingSigmoidTop1InputScale, 0, 1.0f, SWIGLU, 0, 0},
};

int bench_preset_count(void) { return (int)(sizeof(kPresets) / sizeof(kPresets[0])); }

const benchPreset *bench_preset_at(int i) {
  return i >= 0 && i < bench_preset_count() ? &kPresets[i] : NULL;
}

static int name_char(int c) { return c == '_' ? '-' : tolower(c); }

const benchPreset *bench_preset_find(const char *name) {
  for (int i = 0; i < bench_preset_count(); ++i) {
    const char *a = kPresets[i].name, *b = name;
    while (*a && *b && name_char((unsigned char)*a) == name_char((unsigned char)*b)) ++a, ++b;
    if (!*a && !*b) return &kPresets[i];
  }
  return NULL;
}

int64_t bench_scale_dim(int64_t dim, int scale) {
  if (scale <= 1) return dim;
  int64_t d = (dim / scale + 4) / 8 * 8; /* nearest multiple of 8 */
  return d < 8 ? 8 : d;
}

void bench_preset_config(const benchPreset *p, int scale, moeDtype_t dtype,
                         moeLayerConfig_t *cfg) {
  moeLayerConfig_t c = MOE_LAYER_CONFIG_INIT;
  c.hidden = bench_scale_dim(p->hidden, scale);
  c.intermediate = bench_scale_dim(p->intermediate, scale);
  c.num_experts = p->num_experts;
  c.top_k = p->top_k;
  c.routing = p->routing;
  c.norm_topk_prob = p->norm_topk_prob;
  c.n_group = p->n_group;
  c.topk_group = p->topk_group;
  c.routed_scaling_factor = p->routed_scaling_factor;
  c.activation = p->activation;
  c.expert_bias = p->expert_bias;
  c.dtype = dtype;
  c.num_shared_experts = p->num_shared;
  c.shared_intermediate = p->num_shared ? bench_scale_dim(p->shared_intermediate, scale) : 0;
  *cfg = c;
}

static const char *routing_label(const benchPreset *p) {
  switch (p->routing) {
    case moeRoutingTopKSoftmax: return p->router_bias ? "topk->softmax, router bias" : "topk->softmax";
    case moeRoutingSoftmaxTopK: return p->norm_topk_prob ? "softmax->topk, norm" : "softmax->topk";
    case moeRoutingSigmoidGroupTopK: return "sigmoid group-topk (noaux_tc)";
    case moeRoutingSoftmaxGroupTopK: return "softmax group-topk (greedy)";
    case moeRoutingSigmoidTop1InputScale: return "top1, sigmoid input scale";
    default: return "?";
  }
}

void bench_preset_print_table(void) {
  printf("%-16s %-16s %5s %6s %6s %4s %2s %-9s %-6s %5s %-30s %9s %8s\n", "preset", "model",
         "sec", "H", "I", "E", "k", "shared", "groups", "rsf", "routing", "params", "active");
  for (int i = 0; i < bench_preset_count(); ++i) {
    const benchPreset *p = &kPresets[i];
    char shared[16] = "-", groups[16] = "-", scaling[16] = "-";
    if (p->num_shared) snprintf(shared, sizeof shared, "%dx%lld", p->num_shared, (long long)p->shared_intermediate);
    if (p->n_group > 1) snprintf(groups, sizeof groups, "%d/%d", p->n_group, p->topk_group);
    if (p->routed_scaling_factor != 1.0f) snprintf(scaling, sizeof scaling, "%g", p->routed_scaling_factor);
    /* Parameters of the layer (routed + shared + router) and those one token touches. */
    double per_expert = 3.0 * (double)p->hidden * (double)p->intermediate;
    double shared_p = 3.0 * (double)p->hidden * (double)p->shared_intermediate * p->num_shared;
    double router = (double)p->hidden * p->num_experts;
    double total = per_expert * p->num_experts + shared_p + router;
    double active = per_expert * p->top_k + shared_p + router;
    printf("%-16s %-16s %5s %6lld %6lld %4d %2d %-9s %-6s %5s %-30s %8.2fB %7.2fB\n", p->name,
           p->model, p->section, (long long)p->hidden, (long long)p->intermediate,
           p->num_experts, p->top_k, shared, groups, scaling, routing_label(p), total / 1e9,
           active / 1e9);
  }
  printf("\nparams / active: parameters of ONE MoE layer (routed + shared experts + router) and "
         "those one token reads.\nrsf: routed_scaling_factor. Sections refer to "
         "docs/ROUTING.md. gpt-oss also uses the clamped SwiGLU and expert biases.\n");
}

static const char *activation_name(moeActivation_t a) {
  switch (a) {
    case moeActivationSwiGLU: return "swiglu";
    case moeActivationSwiGLUClamped: return "swiglu-clamped";
    case moeActivationGELU: return "gelu";
    case moeActivationReLU: return "relu";
    case moeActivationSquaredReLU: return "squared-relu";
    default: return "?";
  }
}

void bench_preset_write_json(FILE *f) {
  /* Names and numbers only (no string needs escaping); enums both as the moe.h value and as
   * the --routing name, so that a script need not retype the table (bench/compare_torch.py). */
  fputs("{\"presets\": [\n", f);
  for (int i = 0; i < bench_preset_count(); ++i) {
    const benchPreset *p = &kPresets[i];
    fprintf(f,
            "  {\"name\": \"%s\", \"model\": \"%s\", \"section\": \"%s\", \"hidden\": %lld, "
            "\"intermediate\": %lld, \"num_experts\": %d, \"top_k\": %d, \"num_shared\": %d, "
            "\"shared_intermediate\": %lld, \"n_group\": %d, \"topk_group\": %d, "
            "\"routing\": %d, \"routing_name\": \"%s\", \"norm_topk_prob\": %d, "
            "\"routed_scaling_factor\": %.9g, \"activation\": %d, \"activation_name\": \"%s\", "
            "\"expert_bias\": %d, \"router_bias\": %d}%s\n",
            p->name, p->model, p->section, (long long)p->hidden, (long long)p->intermediate,
            p->num_experts, p->top_k, p->num_shared, (long long)p->shared_intermediate,
            p->n_group, p->topk_group, (int)p->routing, bench_routing_name(p->routing),
            p->norm_topk_prob, (double)p->routed_scaling_factor, (int)p->activation,
            activation_name(p->activation), p->expert_bias, p->router_bias,
            i + 1 < bench_preset_count() ? "," : "");
  }
  fputs("]}\n", f);
}
