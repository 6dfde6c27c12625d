/* moe-bench: what a run benchmarks, one source at a time: a preset with random weights (at a
 * scale, with the routing overrides of the command line) or MoE layer N of a checkpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "moe/moe_io.h"

int bench_source_count(const benchOptions *opt) {
  return opt->checkpoint ? 1 : opt->num_presets;
}

static void checkpoint_options(const benchOptions *opt, moeCheckpointOptions_t *o) {
  moeCheckpointOptions_t d = MOE_CHECKPOINT_OPTIONS_INIT;
  *o = d;
  if (opt->dtype_set) {
    o->dtype_override = 1;
    o->dtype = opt->dtype;
  }
}

int bench_source_open(const benchOptions *opt, int i, int gpu, benchSource *src, char *err,
                      size_t err_len) {
  memset(src, 0, sizeof *src);
  if (opt->checkpoint) {
    const char *base = strrchr(opt->checkpoint, '/');
    base = base && base[1] ? base + 1 : opt->checkpoint;
    snprintf(src->name, sizeof src->name, "ckpt-L%d:%s", opt->ckpt_layer, base);
    src->ckpt_dir = opt->checkpoint;
    src->ckpt_layer = opt->ckpt_layer;
    src->scale = 1;
    moeCheckpointOptions_t o;
    checkpoint_options(opt, &o);
    src->cfg = (moeLayerConfig_t)MOE_LAYER_CONFIG_INIT;
    moeStatus_t st = moeCheckpointConfig(opt->checkpoint, opt->ckpt_layer, &o, &src->cfg);
    if (st != moeSuccess) {
      snprintf(err, err_len, "%s, layer %d: %s", opt->checkpoint, opt->ckpt_layer,
               moeGetLastErrorMessage());
      return -1;
    }
    return 0;
  }
  const benchPreset *p = bench_preset_find(opt->presets[i]);
  if (!p) {
    snprintf(err, err_len, "unknown preset '%s'", opt->presets[i]);
    return -1;
  }
  snprintf(src->name, sizeof src->name, "%s", p->name);
  src->router_bias = p->router_bias;
  src->scale = opt->scale > 0 ? opt->scale : gpu ? 1 : bench_auto_cpu_scale(p, opt->dtype);
  return bench_make_config(p, opt, src->scale, &src->cfg, err, err_len);
}

moeStatus_t bench_source_create_layer(benchSource *src, moeContext_t ctx, const benchOptions *opt,
                                      moeLayer_t *layer) {
  if (src->ckpt_dir) {
    moeCheckpointOptions_t o;
    checkpoint_options(opt, &o);
    return moeLayerCreateFromCheckpoint(layer, ctx, src->ckpt_dir, src->ckpt_layer, &o);
  }
  moeStatus_t st = moeLayerCreate(layer, ctx, &src->cfg);
  if (st != moeSuccess) return st;
  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
  st = moeLayerGetConfig(*layer, &cfg);
  if (st == moeSuccess) st = bench_upload_weights(*layer, &cfg, opt->seed, src->router_bias);
  if (st != moeSuccess) {
    moeLayerDestroy(*layer);
    *layer = NULL;
  }
  return st;
}

void bench_source_close(benchSource *src) {
  if (src->ckpt_weights) moeCheckpointWeightsDestroy((moeCheckpointWeights_t *)src->ckpt_weights);
  src->ckpt_weights = NULL;
}
