/*
 * libmoe checkpoint loading: one MoE layer of a Hugging Face checkpoint directory.
 *
 * A checkpoint directory holds config.json and either model.safetensors or shards listed by
 * model.safetensors.index.json. config.json's model_type selects the family, its naming scheme
 * and its routing (docs/ROUTING.md sections 1, 2 and 8):
 *
 *   model_type   routing                       tensors of layer N (prefix model.layers.N.)
 *   mixtral      moeRoutingTopKSoftmax [1a]    block_sparse_moe.gate.weight,
 *                                              block_sparse_moe.experts.j.{w1,w3,w2}.weight
 *   qwen3_moe    moeRoutingSoftmaxTopK [1b]    mlp.gate.weight,
 *   olmoe        (norm_topk_prob from config)  mlp.experts.j.{gate,up,down}_proj.weight
 *   deepseek_v3  moeRoutingSigmoidGroupTopK    as qwen3_moe, + mlp.gate.e_score_correction_bias
 *                [2a]                          + mlp.shared_experts.{gate,up,down}_proj.weight
 *   deepseek_v2  moeRoutingSoftmaxGroupTopK    as deepseek_v3 without the selection bias
 *                [2b] ("greedy": SoftmaxTopK)
 *   gpt_oss      moeRoutingTopKSoftmax with    mlp.router.{weight,bias}, mlp.experts.gate_up_proj
 *                router bias [1c], SwiGLU      [E, H, 2I] (gate/up interleaved: even = gate),
 *                clamped, expert biases        gate_up_proj_bias [E, 2I], down_proj [E, I, H],
 *                                              down_proj_bias [E, H]
 *
 * DeepSeek's n_shared_experts shared experts become ONE shared expert of width
 * moe_intermediate_size * n_shared_experts, as transformers builds them. Layers below
 * first_k_dense_replace (or off moe_layer_freq; Qwen3: in mlp_only_layers or off
 * decoder_sparse_step) are dense: moeErrorInvalidConfig.
 *
 * Per layer, the loader also accepts transformers v5's stacked experts (for every family but
 * gpt_oss): mlp.experts.gate_up_proj [E, 2I, H] (gate half first) and mlp.experts.down_proj
 * [E, H, I]. Tensors in F32, F16 or BF16 load; other dtypes (F8_E4M3 with block scales, MXFP4
 * blocks) give moeErrorNotSupported naming the dtype and the tensor.
 *
 * Typical use:
 *   one process    moeLayerCreateFromCheckpoint(&layer, ctx, dir, N, NULL)
 *   expert para-   moeCheckpointConfig(dir, N, NULL, &cfg); moeEpLayerCreate(&ep, comm, &cfg, NULL);
 *   llelism        moeEpLayerGetLocalLayer(ep, &local); moeLayerLoadCheckpoint(local, dir, N, NULL)
 *                  (each rank reads only its experts' tensors and opens only their shards)
 *   checks         moeCheckpointReadWeights(dir, N, &opts, &w): fp32 host copies for a reference
 *
 * Errors: moeErrorIo (a file cannot be opened or mapped), moeErrorFormat (malformed file,
 * missing tensor or config key, shape that config.json contradicts), moeErrorInvalidConfig (the
 * layer asked for is not an MoE layer), moeErrorNotSupported (a family or dtype not handled yet).
 * The message of moeGetLastErrorMessage() names the file and the tensor or key.
 * Every function frees all it allocated on every error path. They read files with the host's
 * CPU and are not meant for a CUDA graph.
 */
#ifndef MOE_MOE_IO_H
#define MOE_MOE_IO_H

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  size_t size;           /* sizeof(moeCheckpointOptions_t); set by MOE_CHECKPOINT_OPTIONS_INIT */
  int32_t dtype_override;/* 0 (default): the layer stores weights in the checkpoint's dtype (that
                            of the first loaded expert's weights); 1: in `dtype` */
  moeDtype_t dtype;      /* storage dtype when dtype_override = 1; default moeBFloat16 */
  int32_t expert_begin;  /* first routed expert to read; default 0; 0 <= begin < E */
  int32_t expert_count;  /* routed experts to read from expert_begin; default -1 = through E-1;
                            1 <= count <= E - begin otherwise. Tensors of experts outside the
                            range are never read, and a shard that holds only such tensors is
                            never opened (expert parallelism: each rank reads its own experts).
                            The router, the selection bias and shared experts are always read. */
} moeCheckpointOptions_t;

#define MOE_CHECKPOINT_OPTIONS_INIT { sizeof(moeCheckpointOptions_t), 0, moeBFloat16, 0, -1 }

/* The layer configuration of MoE layer layer_index of a checkpoint: sizes, routing, shared
 * experts and activation from config.json, dtype from the checkpoint's expert weights (opens the
 * shard holding the first expert's weights to see it) unless opts overrides it.
 * [in]  dir          checkpoint directory.
 * [in]  layer_index  0 <= layer_index < num_hidden_layers, and an MoE layer (DeepSeek-V3's first
 *                    first_k_dense_replace layers are dense; so are Qwen3's mlp_only_layers).
 * [in]  opts         NULL for defaults.
 * [in,out] config    a config for moeLayerCreate (shared_intermediate filled in); config->size
 *                    must be set first (MOE_LAYER_CONFIG_INIT), that many bytes are written.
 * Returns: moeSuccess, InvalidArgument, Io, Format, InvalidConfig, NotSupported, OutOfMemory. */
MOE_API moeStatus_t moeCheckpointConfig(const char *dir, int32_t layer_index,
                                        const moeCheckpointOptions_t *opts,
                                        moeLayerConfig_t *config);

/* Creates a layer on ctx from MoE layer layer_index of a checkpoint and sets its weights
 * (router and router bias, selection bias, routed experts of the range, expert biases, shared
 * experts). This is what `moe-bench --checkpoint DIR --layer N` calls.
 * With an expert range narrower than [0, E) the layer is an expert-parallel local layer: it
 * holds only the experts of the range (global ids, as the setters take them) while its router
 * still chooses among all E; tokens routed elsewhere are the expert-parallel engine's to send.
 * [out] layer  the new layer; NULL on failure (nothing leaks).
 * Returns: as moeCheckpointConfig, and the errors of moeLayerCreate and the weight setters. */
MOE_API moeStatus_t moeLayerCreateFromCheckpoint(moeLayer_t *layer, moeContext_t ctx,
                                                 const char *dir, int32_t layer_index,
                                                 const moeCheckpointOptions_t *opts);

/* Sets the weights of a layer the caller created (e.g. an expert-parallel layer holding a local
 * expert range) from MoE layer layer_index of a checkpoint. The layer's configuration must match
 * the checkpoint's (sizes, routing, groups, scaling, activation, biases, shared experts); its
 * dtype may differ (weights are converted). opts: dtype fields are ignored; the expert range
 * defaults to the experts the layer holds, and an explicit one must lie inside them.
 * Returns: moeErrorInvalidArgument (a config field that differs, named), and as
 *          moeLayerCreateFromCheckpoint. On failure some weights may already be set. */
MOE_API moeStatus_t moeLayerLoadCheckpoint(moeLayer_t layer, const char *dir,
                                           int32_t layer_index,
                                           const moeCheckpointOptions_t *opts);

/* One layer's weights on the host as fp32, rounded to config.dtype (what a layer of that dtype
 * holds), in libmoe's layout; the shapes of moeNaiveLayer (tests/reference/naive_moe.h), so
 * that a reference or a check can run on a checkpoint. Experts are those of the range:
 * expert_count of them starting at global expert expert_begin. fp32 copies of every expert of a
 * large layer are big (DeepSeek-V3: 45 GB): narrow the range for checks on such models. */
typedef struct {
  moeLayerConfig_t config;
  int32_t expert_begin, expert_count;
  float *router_weight;  /* [E, H] */
  float *router_bias;    /* [E] or NULL */
  float *selection_bias; /* [E] or NULL */
  float *gate_up;        /* [expert_count, GI, H], GI = 2I (gate rows first) for SwiGLU */
  float *down;           /* [expert_count, H, I] */
  float *gate_up_bias;   /* [expert_count, GI] or NULL */
  float *down_bias;      /* [expert_count, H] or NULL */
  float *shared_gate_up; /* [S, 2Is, H] or NULL */
  float *shared_down;    /* [S, H, Is] or NULL */
} moeCheckpointWeights_t;

/* Reads one layer's weights to the host (see moeCheckpointWeights_t).
 * [out] weights  owned by the caller, released with moeCheckpointWeightsDestroy; NULL on failure.
 * Returns: as moeCheckpointConfig. */
MOE_API moeStatus_t moeCheckpointReadWeights(const char *dir, int32_t layer_index,
                                             const moeCheckpointOptions_t *opts,
                                             moeCheckpointWeights_t **weights);

/* Frees what moeCheckpointReadWeights returned. NULL is a no-op. Returns: moeSuccess. */
MOE_API moeStatus_t moeCheckpointWeightsDestroy(moeCheckpointWeights_t *weights);

#ifdef __cplusplus
}
#endif
#endif /* MOE_MOE_IO_H */
