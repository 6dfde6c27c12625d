/* Internal seam of the checkpoint loader: a plan (what to read, from where, under which naming
 * scheme) and sinks (where the weights go: a layer's setters, or host arrays). */
#ifndef MOE_IO_LOADER_H
#define MOE_IO_LOADER_H

#include <stdint.h>

#include "io/checkpoint.h"
#include "io/hf_config.h"
#include "moe/moe.h"
#include "moe/moe_io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  MOE_SCHEME_W123 = 0,     /* experts.j.{w1,w3,w2}.weight (Mixtral) */
  MOE_SCHEME_PROJ = 1,     /* experts.j.{gate,up,down}_proj.weight */
  MOE_SCHEME_STACKED = 2,  /* transformers v5: experts.gate_up_proj [E,2I,H], down_proj [E,H,I] */
  MOE_SCHEME_GPT_OSS = 3,  /* experts.gate_up_proj [E,H,2I] interleaved, down_proj [E,I,H], biases */
} moe_scheme;

typedef struct {
  moe_hf_config hf;        /* cfg.dtype: the dtype the layer will store */
  moe_ckpt *ckpt;
  moe_scheme scheme;
  moeDtype_t ckpt_dtype;   /* dtype of the first expert's gate weights */
  int32_t begin, count;    /* expert range */
  char prefix[96];         /* "model.layers.N.mlp." or "model.layers.N.block_sparse_moe." */
  char name[320];          /* scratch for tensor names */
} moe_plan;

/* Reads config.json, opens the checkpoint (no shard yet, or the one of the first expert) and
 * picks the scheme. On failure nothing stays open. */
moeStatus_t moe_plan_open(const char *dir, int32_t layer, const moeCheckpointOptions_t *opts,
                          moe_plan *plan);
void moe_plan_close(moe_plan *plan);

/* "<prefix><fmt...>" in plan->name (overwritten by the next call). */
const char *moe_tname(moe_plan *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* A tensor of the checkpoint with a supported dtype and exactly this shape. */
moeStatus_t moe_get(moe_plan *p, const char *name, int32_t ndim, const int64_t *shape,
                    const moe_st_tensor **t);

/* Where weights go. Matrices arrive in libmoe's layout (gate [I,H], up [I,H], down [H,I]; gate_up
 * bias [2I] gate half first), host memory, aligned, all of one call in dtype dt; router and
 * selection bias in fp32. Expert ids are global. */
typedef struct {
  moeStatus_t (*router)(void *user, const float *weight, const float *bias);
  moeStatus_t (*selection_bias)(void *user, const float *bias);
  moeStatus_t (*expert)(void *user, int32_t e, const void *gate, const void *up,
                        const void *down, moeDtype_t dt);
  moeStatus_t (*expert_bias)(void *user, int32_t e, const void *gate_up_bias,
                             const void *down_bias, moeDtype_t dt);
  moeStatus_t (*shared)(void *user, int32_t s, const void *gate, const void *up,
                        const void *down, moeDtype_t dt);
} moe_sink;

extern const moe_sink moe_layer_sink; /* user: moeLayer_t */
extern const moe_sink moe_host_sink;  /* user: moeCheckpointWeights_t * (arrays allocated) */

/* Reads the router (+ bias), the selection bias, the experts of the range (+ biases) and the
 * shared experts of the plan's layer, and hands them to the sink. */
moeStatus_t moe_load_weights(moe_plan *p, const moe_sink *sink, void *user);

#ifdef __cplusplus
}
#endif
#endif
