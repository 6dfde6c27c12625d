/* moe-bench presets: the model table of docs/ROUTING.md section 9, as layer configurations. */
#ifndef MOE_BENCH_PRESETS_H
#define MOE_BENCH_PRESETS_H

#include <stdint.h>
#include <stdio.h>

#include "moe/moe.h"

typedef struct {
  const char *name;          /* command-line name, e.g. "mixtral-8x7b" */
  const char *model;         /* the model it stands for */
  const char *section;       /* ROUTING.md section of its routing ("1a", "2a", ...) */
  int64_t hidden;            /* H */
  int64_t intermediate;      /* I of a routed expert */
  int32_t num_experts;       /* E */
  int32_t top_k;             /* k */
  int32_t num_shared;        /* shared experts */
  int64_t shared_intermediate; /* width of each shared expert (0 = none) */
  int32_t n_group, topk_group;
  moeRouting_t routing;
  int32_t norm_topk_prob;
  float routed_scaling_factor;
  moeActivation_t activation;
  int32_t expert_bias;       /* biases on both expert projections (gpt-oss) */
  int32_t router_bias;       /* the router has a bias (gpt-oss) */
} benchPreset;

int bench_preset_count(void);
const benchPreset *bench_preset_at(int i);
/* Returns: the preset of that name (case-insensitive; '_' and '-' are the same), or NULL. */
const benchPreset *bench_preset_find(const char *name);
/* Divides a width by scale and rounds to a multiple of 8 (at least 8). */
int64_t bench_scale_dim(int64_t dim, int scale);
/* The preset's layer configuration at a scale (H, I and the shared width divided by scale). */
void bench_preset_config(const benchPreset *p, int scale, moeDtype_t dtype,
                         moeLayerConfig_t *cfg);
/* Prints the table (--list). */
void bench_preset_print_table(void);
/* Writes the table as JSON (--list --json FILE): {"presets": [{...}, ...]}, full-size widths. */
void bench_preset_write_json(FILE *f);

#endif
