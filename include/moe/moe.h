/*
 * libmoe: a runtime for one sparse Mixture-of-Experts layer.
 *
 * The stable C API. One layer forward is one pipeline of stages, the same on every backend:
 *
 *   x [T,H] --route--> expert ids / weights [T,K] --permute--> expert-sorted order
 *           --experts--> per-selection outputs --combine--> y [T,H] (+ shared experts)
 *
 * moeLayerForward() runs the whole pipeline; each stage is also callable alone.
 *
 * Conventions
 *  - Every function returns a moeStatus_t. On failure, moeGetLastErrorMessage() holds a
 *    thread-local message that names the offending field and its limit.
 *  - Opaque handles come in Create/Destroy pairs; Destroy(NULL) is a no-op.
 *  - Config structs start with a size field that the MOE_*_INIT macros set; always start from
 *    the macro so that fields added later keep their defaults.
 *  - Tensor pointers given to forward and to the stages live where the context's backend
 *    computes: host memory for moeBackendCpu, device memory for moeBackendCuda. Weight setters
 *    always read host memory.
 *  - Calls that enqueue device work take the stream last, are asynchronous, never synchronize
 *    with the host and may be captured in a CUDA graph, unless their comment says otherwise.
 *    On the CPU backend they complete before returning and the stream is ignored.
 *  - Row-major tensors, element strides in the storage dtype; indices are int32 (expert ids)
 *    or int64 (anything that scales with T * K or T * H).
 *  - The library never prints, never calls exit() or abort().
 *  - Threads: calls on different layers may run concurrently. Calls on one layer may overlap
 *    only when each passes its own workspace; workspace = NULL uses (and may regrow) the
 *    layer's own, and the weight setters and Destroy must not overlap any call on the layer.
 */
#ifndef MOE_MOE_H
#define MOE_MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Version
 * ------------------------------------------------------------------------------------------- */
#define MOE_VERSION_MAJOR 0
#define MOE_VERSION_MINOR 1
#define MOE_VERSION_PATCH 0
#define MOE_VERSION_CODE (MOE_VERSION_MAJOR * 10000 + MOE_VERSION_MINOR * 100 + MOE_VERSION_PATCH)

#if defined(_WIN32)
#define MOE_API __declspec(dllexport)
#elif defined(__GNUC__)
#define MOE_API __attribute__((visibility("default")))
#else
#define MOE_API
#endif

/* Returns: MOE_VERSION_CODE of the library actually loaded (compare with the header's). */
MOE_API int moeGetVersion(void);

/* ---------------------------------------------------------------------------------------------
 * Status and errors
 * ------------------------------------------------------------------------------------------- */
typedef enum {
  moeSuccess = 0,
  moeErrorInvalidArgument = 1, /* a null pointer, a negative size, a buffer too small */
  moeErrorInvalidConfig = 2,   /* a layer or context configuration outside its valid range */
  moeErrorOutOfMemory = 3,     /* host or device allocation failed */
  moeErrorNotSupported = 4,    /* valid request that this backend or build does not implement */
  moeErrorBackendUnavailable = 5, /* e.g. CUDA asked for, but no GPU or no CUDA in this build */
  moeErrorInvalidState = 6,    /* e.g. forward before every weight was set */
  moeErrorCuda = 7,            /* a CUDA runtime call failed; the message carries its text */
  moeErrorCublas = 8,
  moeErrorNccl = 9,
  moeErrorMpi = 10,
  moeErrorIo = 11,             /* a file could not be opened, read or mapped */
  moeErrorFormat = 12,         /* a file's content is malformed (checkpoints) */
  moeErrorInternal = 13,       /* a bug in libmoe: please report it */
  moeStatusCount = 14
} moeStatus_t;

/* Returns: a static string naming the status ("moeErrorInvalidConfig: invalid configuration"). */
MOE_API const char *moeGetErrorString(moeStatus_t status);

/* Returns: the detail message of the last failing call on this thread ("" if none). The
 * pointer stays valid until the next libmoe call on this thread. */
MOE_API const char *moeGetLastErrorMessage(void);

/* ---------------------------------------------------------------------------------------------
 * Enumerations
 * ------------------------------------------------------------------------------------------- */
typedef enum { moeBackendAuto = 0, moeBackendCpu = 1, moeBackendCuda = 2 } moeBackend_t;

/* Storage dtype of weights and activations. All routing math and all accumulation is fp32. */
typedef enum { moeFloat32 = 0, moeFloat16 = 1, moeBFloat16 = 2 } moeDtype_t;

/* Routing families; the exact semantics are in docs/ROUTING.md (section numbers in brackets). */
typedef enum {
  /* [1a] Mixtral: I = topk(z, k); w = softmax(z_I). With a router bias (see
   * moeLayerSetRouterWeights) this is gpt-oss [1c]. */
  moeRoutingTopKSoftmax = 0,
  /* [1b] Qwen2/3-MoE, OLMoE, DBRX: p = softmax(z); I = topk(p, k); w = p_I, divided by its sum
   * when norm_topk_prob. Switch [1d] is this family with k = 1 and norm_topk_prob = 0. */
  moeRoutingSoftmaxTopK = 1,
  /* [2a] DeepSeek-V3 "noaux_tc": sigmoid scores, selection bias, groups scored by their top-2. */
  moeRoutingSigmoidGroupTopK = 2,
  /* [2b] DeepSeek-V2 "group_limited_greedy": softmax scores, groups scored by their max. */
  moeRoutingSoftmaxGroupTopK = 3,
  /* [1e] Llama-4: top-1 on logits, sigmoid of the chosen logit scales the routed expert's INPUT. */
  moeRoutingSigmoidTop1InputScale = 4,
  /* [3] Top-p dynamic routing: experts in probability order until the cumulative sum passes
   * top_p_threshold; at most top_k (k_max) per token; raw probabilities as weights. */
  moeRoutingTopP = 5,
  /* [4c] Expert choice: each expert picks its top C = T * capacity_factor / E tokens. Uses the
   * whole batch, so it is NOT causal: an encoder / research mode. */
  moeRoutingExpertChoice = 6,
  /* [6] Dense gating: every expert runs on every token, weighted by softmax(z). */
  moeRoutingDense = 7,
  moeRoutingCount = 8
} moeRouting_t;

typedef enum {
  moeActivationSwiGLU = 0,        /* W_down (silu(W_gate x) * (W_up x)) */
  moeActivationGELU = 1,          /* W_down gelu(W_up x), exact (erf) GELU */
  moeActivationReLU = 2,          /* W_down relu(W_up x) */
  moeActivationSquaredReLU = 3,   /* W_down relu(W_up x)^2 */
  moeActivationSwiGLUClamped = 4, /* gpt-oss: g = min(g, limit); u = clamp(u, -limit, limit);
                                     W_down ((u + 1) * g * sigmoid(alpha * g)) */
  moeActivationCount = 5
} moeActivation_t;

/* Which selections an expert keeps when capacity_factor > 0 (token-choice families, [4b]). */
typedef enum {
  moeDropByPosition = 0, /* earliest tokens keep their slot; for k = 2 every first choice
                            outranks every second choice (GShard) */
  moeDropByProbs = 1,    /* each expert keeps its C highest-weight selections */
  moeDropPolicyCount = 2
} moeDropPolicy_t;

/* A CUDA stream. Declared as the same incomplete type as cudaStream_t, so a cudaStream_t
 * converts without casts and this header does not need the CUDA headers. NULL = the
 * context's stream. Ignored by the CPU backend. */
typedef struct CUstream_st *moeStream_t;

/* ---------------------------------------------------------------------------------------------
 * Context: backend, device, stream, allocator
 * ------------------------------------------------------------------------------------------- */
typedef struct moeContext_s *moeContext_t;

/* Optional allocator callbacks for backend memory (weights and library-owned workspaces).
 * alloc returns NULL on failure; free accepts what alloc returned. on_device tells whether the
 * memory must be device memory (CUDA backend) or host memory (CPU backend). */
typedef struct {
  void *(*alloc)(void *user, size_t bytes, int on_device);
  void (*free)(void *user, void *ptr, int on_device);
  void *user;
} moeAllocator_t;

typedef struct {
  size_t size;             /* sizeof(moeContextConfig_t); set by MOE_CONTEXT_CONFIG_INIT */
  moeBackend_t backend;    /* default moeBackendAuto: CUDA if a GPU is visible, else CPU */
  int device;              /* CUDA device ordinal; default -1 = the current device */
  moeStream_t stream;      /* default stream for enqueued work; default NULL = legacy stream */
  moeAllocator_t allocator;/* default all NULL: malloc / cudaMalloc */
  int num_threads;         /* CPU backend threads; default 0 = OpenMP's default; range >= 0 */
} moeContextConfig_t;

#define MOE_CONTEXT_CONFIG_INIT                                                      \
  {                                                                                  \
    sizeof(moeContextConfig_t), moeBackendAuto, -1, NULL, {NULL, NULL, NULL}, 0      \
  }

/* Creates a context.
 * [out] ctx     the new context; set to NULL on failure.
 * [in]  config  NULL for all defaults; read only during the call.
 * Returns: moeSuccess, moeErrorBackendUnavailable (CUDA requested, none usable),
 *          moeErrorInvalidConfig, moeErrorOutOfMemory. */
MOE_API moeStatus_t moeContextCreate(moeContext_t *ctx, const moeContextConfig_t *config);

/* Destroys a context. Every layer created on it must be destroyed first. NULL is a no-op.
 * Returns: moeSuccess. */
MOE_API moeStatus_t moeContextDestroy(moeContext_t ctx);

/* [out] backend  the backend the context resolved to (never moeBackendAuto).
 * Returns: moeSuccess or moeErrorInvalidArgument. */
MOE_API moeStatus_t moeContextGetBackend(moeContext_t ctx, moeBackend_t *backend);

/* Number of CUDA devices usable by this build. No GPU, no driver, or a CPU-only build give 0
 * and moeSuccess (the CPU backend then serves).
 * Returns: moeSuccess or moeErrorInvalidArgument. */
MOE_API moeStatus_t moeGetCudaDeviceCount(int *count);

/* Waits until all work enqueued on the context's stream has finished (host synchronization).
 * Returns: moeSuccess or moeErrorCuda. */
MOE_API moeStatus_t moeContextSynchronize(moeContext_t ctx);

/* Loads a table of kernel choices for the CUDA backend's expert GEMMs (skinny or tiled, per
 * dtype, shape and rows per expert), as written by `moe-bench --tune FILE` on the GPU at hand;
 * shapes it does not cover keep the built-in heuristic. Replaces the previous table; path NULL
 * goes back to the heuristic alone. The variable MOE_TUNING_FILE names a table that every new
 * context loads. A CPU context validates and keeps the table (the CPU backend has no kernel
 * choices). Not to be called while work of this context is being enqueued on another thread.
 * Returns: moeSuccess, moeErrorInvalidArgument (unreadable file, or a malformed line: the
 *          message names file:line and the field; the previous table is kept), OutOfMemory. */
MOE_API moeStatus_t moeContextLoadTuning(moeContext_t ctx, const char *path);

/* ---------------------------------------------------------------------------------------------
 * Layer configuration
 * ------------------------------------------------------------------------------------------- */
typedef struct {
  size_t size;             /* sizeof(moeLayerConfig_t); set by MOE_LAYER_CONFIG_INIT */
  int64_t hidden;          /* H, model width. Required; 1 <= H <= 2^20 */
  int64_t intermediate;    /* I, routed expert width. Required; 1 <= I <= 2^20 */
  int32_t num_experts;     /* E, routed experts. Required; 1 <= E <= 4096 */
  int32_t top_k;           /* k experts per token (top-p: the cap k_max). Required; 1 <= k <= E.
                              Ignored (taken as E) for expert choice and dense gating. */
  moeRouting_t routing;    /* default moeRoutingTopKSoftmax */
  int32_t norm_topk_prob;  /* renormalize selected weights to sum 1 (1b, 2a); default 0 */
  int32_t n_group;         /* expert groups (2a, 2b); default 1; must divide E */
  int32_t topk_group;      /* groups kept (2a, 2b); default 1; 1 <= topk_group <= n_group and
                              topk_group * E / n_group >= k */
  float routed_scaling_factor; /* multiplies routed weights; default 1.0; finite, > 0 */
  float top_p_threshold;   /* top-p threshold, (0, 1]; default 0.4; 1 keeps every expert */
  float capacity_factor;   /* token choice: 0 = dropless (default), > 0 caps each expert at
                              C = ceil(T * k / E * capacity_factor) selections.
                              Expert choice: required > 0, C = floor(T * capacity_factor / E),
                              C <= T. */
  moeDropPolicy_t drop_policy; /* default moeDropByPosition */
  int32_t num_heads;       /* multi-head MoE sub-tokens per token; default 1 (off); divides H */
  moeActivation_t activation; /* default moeActivationSwiGLU */
  float swiglu_alpha;      /* moeActivationSwiGLUClamped alpha; default 1.702 */
  float swiglu_limit;      /* moeActivationSwiGLUClamped limit; default 7.0; > 0 */
  int32_t expert_bias;     /* experts have biases on both projections (gpt-oss); default 0 */
  moeDtype_t dtype;        /* storage of weights, x, y and expert outputs; default moeBFloat16 */
  int32_t num_shared_experts;    /* always-on experts, summed unweighted; default 0; 0..64 */
  int64_t shared_intermediate;   /* width of each shared expert; default 0 = intermediate */
} moeLayerConfig_t;

#define MOE_LAYER_CONFIG_INIT                                                                 \
  {                                                                                           \
    sizeof(moeLayerConfig_t), 0, 0, 0, 0, moeRoutingTopKSoftmax, 0, 1, 1, 1.0f, 0.4f, 0.0f,   \
        moeDropByPosition, 1, moeActivationSwiGLU, 1.702f, 7.0f, 0, moeBFloat16, 0, 0         \
  }

/* Checks a configuration without creating anything.
 * Returns: moeSuccess, or moeErrorInvalidConfig with a message naming the field and its limit. */
MOE_API moeStatus_t moeLayerConfigValidate(const moeLayerConfig_t *config);

/* ---------------------------------------------------------------------------------------------
 * Layer: weights
 * ------------------------------------------------------------------------------------------- */
typedef struct moeLayer_s *moeLayer_t;

/* Creates a layer on a context; weights are allocated (uninitialized) on the context's backend.
 * [out] layer   the new layer; NULL on failure.  [in] config copied; may be freed after.
 * Returns: moeSuccess, moeErrorInvalidConfig, moeErrorInvalidArgument, moeErrorOutOfMemory. */
MOE_API moeStatus_t moeLayerCreate(moeLayer_t *layer, moeContext_t ctx,
                                   const moeLayerConfig_t *config);

/* Destroys a layer and everything it owns (weights, its own workspace). NULL is a no-op.
 * On the CUDA backend it synchronizes the context's stream first. Returns: moeSuccess. */
MOE_API moeStatus_t moeLayerDestroy(moeLayer_t layer);

/* [in,out] config  the layer's configuration, defaults filled in. config->size must be set first
 *                  (MOE_LAYER_CONFIG_INIT): the first config->size bytes are written, so a caller
 *                  built against an older, smaller struct gets only the fields it knows.
 * Returns: moeSuccess or InvalidArgument (NULL, or config->size outside the valid range). */
MOE_API moeStatus_t moeLayerGetConfig(moeLayer_t layer, moeLayerConfig_t *config);

/* K, the width of the routing output: top_k for token-choice families, the cap k_max for
 * top-p, E for expert choice and dense gating. Returns: moeSuccess or InvalidArgument. */
MOE_API moeStatus_t moeLayerGetRouteWidth(moeLayer_t layer, int32_t *route_width);

/* The weight setters read host memory of dtype src_dtype (converted to the layer's dtype) and
 * copy it; the caller's buffers may be freed when they return. They synchronize with the host.
 * Hr below is H / num_heads, the width a (sub-)token has when it reaches the router. */

/* Router: weight [E, Hr] (required); bias [E] or NULL (gpt-oss's router bias). Stored fp32. */
MOE_API moeStatus_t moeLayerSetRouterWeights(moeLayer_t layer, const void *weight,
                                             const void *bias, moeDtype_t src_dtype);

/* DeepSeek-V3 selection bias (e_score_correction_bias) [E], fp32; used for selection only.
 * Defaults to zeros. Returns: moeSuccess, InvalidArgument; InvalidConfig unless the routing is
 * moeRoutingSigmoidGroupTopK (no other family reads it). */
MOE_API moeStatus_t moeLayerSetSelectionBias(moeLayer_t layer, const float *bias);

/* One routed expert e in [0, E): gate [I, Hr] (NULL for GELU/ReLU/squared-ReLU), up [I, Hr],
 * down [Hr, I] (PyTorch nn.Linear layout: out_features x in_features). */
MOE_API moeStatus_t moeLayerSetExpertWeights(moeLayer_t layer, int32_t expert, const void *gate,
                                             const void *up, const void *down,
                                             moeDtype_t src_dtype);

/* All routed experts at once as stacked tensors: gate_up [E, 2I, Hr] with the gate half first
 * (rows 0..I-1 gate, I..2I-1 up; [E, I, Hr] for the non-gated activations), down [E, Hr, I].
 * This is transformers v5's stacked layout. */
MOE_API moeStatus_t moeLayerSetExpertWeightsStacked(moeLayer_t layer, const void *gate_up,
                                                    const void *down, moeDtype_t src_dtype);

/* Expert biases (config.expert_bias): gate_up_bias [2I] (gate half first; [I] non-gated),
 * down_bias [Hr]. Stored fp32. */
MOE_API moeStatus_t moeLayerSetExpertBiases(moeLayer_t layer, int32_t expert,
                                            const void *gate_up_bias, const void *down_bias,
                                            moeDtype_t src_dtype);

/* Shared expert s in [0, num_shared_experts): gate [Is, H] (NULL when non-gated), up [Is, H],
 * down [H, Is], with Is = shared_intermediate. Shared experts see full-width tokens. */
MOE_API moeStatus_t moeLayerSetSharedExpertWeights(moeLayer_t layer, int32_t shared_expert,
                                                   const void *gate, const void *up,
                                                   const void *down, moeDtype_t src_dtype);

/* Multi-head MoE projections (num_heads > 1): head [H, H], head_bias [H] or NULL,
 * merge [H, H], merge_bias [H] or NULL. */
MOE_API moeStatus_t moeLayerSetHeadWeights(moeLayer_t layer, const void *head,
                                           const void *head_bias, const void *merge,
                                           const void *merge_bias, moeDtype_t src_dtype);

/* ---------------------------------------------------------------------------------------------
 * Router statistics ([7]). Every pointer is optional (NULL = not computed) and lives where the
 * backend computes (device memory on CUDA): no host synchronization is needed to produce them.
 * ------------------------------------------------------------------------------------------- */
typedef enum {
  moeStatAuxLoss = 0,          /* Switch/Megatron: E * sum_e f_e P_e (HF's loss = k times this) */
  moeStatZLoss = 1,            /* mean_t (logsumexp_j z_tj)^2 */
  moeStatEntropy = 2,          /* mean_t H(softmax(z_t)), nats */
  moeStatMaxViolation = 3,     /* (max_e c_e - mean c) / mean c */
  moeStatExpertsPerToken = 4,  /* mean number of experts a token reaches (top-p, capacity) */
  moeStatDropped = 5,          /* total dropped selections */
  moeStatScalarCount = 6
} moeStatScalar_t;

typedef struct {
  size_t size;              /* sizeof(moeRouterStats_t); set by MOE_ROUTER_STATS_INIT */
  int64_t *expert_counts;   /* [E] out: selections kept per expert (c_e) */
  int64_t *dropped_counts;  /* [E] out: selections dropped per expert (capacity) */
  float *expert_prob_mean;  /* [E] out: P_e = mean_t softmax(z_t)_e */
  float *scalars;           /* [moeStatScalarCount] out, indexed by moeStatScalar_t */
} moeRouterStats_t;

#define MOE_ROUTER_STATS_INIT { sizeof(moeRouterStats_t), NULL, NULL, NULL, NULL }

/* ---------------------------------------------------------------------------------------------
 * Workspace and forward
 * ------------------------------------------------------------------------------------------- */

/* Bytes of workspace forward needs for up to max_tokens tokens (also enough for every stage).
 * [out] bytes. Returns: moeSuccess, InvalidArgument (max_tokens < 0, sizes that overflow). */
MOE_API moeStatus_t moeLayerGetWorkspaceSize(moeLayer_t layer, int64_t max_tokens,
                                             size_t *bytes);

/* The whole layer: y = MoE(x).
 * [in]  num_tokens  T >= 0; T = 0 returns at once, touching neither y nor stats.
 * [in]  x           [T, H] in the layer's dtype.
 * [out] y           [T, H] in the layer's dtype; must not overlap x (InvalidArgument).
 * [out] stats       optional router statistics (see above); NULL for none.
 * [in]  workspace   workspace_bytes >= moeLayerGetWorkspaceSize(T) of backend memory, 256-byte
 *                   aligned; NULL lets the layer allocate and keep its own (that first call
 *                   allocates and is then not capturable in a CUDA graph).
 * Returns: moeSuccess, InvalidArgument, InvalidState (a weight not set), Cuda, OutOfMemory. */
MOE_API moeStatus_t moeLayerForward(moeLayer_t layer, int64_t num_tokens, const void *x, void *y,
                                    const moeRouterStats_t *stats, void *workspace,
                                    size_t workspace_bytes, moeStream_t stream);

/* Dense gating only: also returns every expert's output, expert_outputs [E, T, H] in the
 * layer's dtype (unweighted FFN_e(x_t)). Returns: as forward; InvalidConfig for other families. */
MOE_API moeStatus_t moeLayerForwardDense(moeLayer_t layer, int64_t num_tokens, const void *x,
                                         void *y, void *expert_outputs, void *workspace,
                                         size_t workspace_bytes, moeStream_t stream);

/* ---------------------------------------------------------------------------------------------
 * The stages, each callable alone. T below is the number of (sub-)tokens the router sees
 * (num_tokens * num_heads for multi-head MoE) and K the route width. Scratch is taken from the
 * workspace (sized by moeLayerGetWorkspaceSize for at least T tokens; NULL = the layer's own).
 *
 * Index arrays. expert_offsets, sorted_pairs and pair_rows are normally permute's outputs but
 * may be the caller's own. An entry outside its contract (an offset outside [0, T * K] or
 * below the one before it, a sorted pair outside [0, T * K), a pair row outside [-1, T * K)):
 *  - CPU backend: moeErrorInvalidArgument, the message naming the first bad entry.
 *  - CUDA backend: the call succeeds and never reads or writes outside a buffer; checking would
 *    need a host synchronization, which the asynchronous, graph-capturable stages never do.
 *    Instead: each offset is clamped into [0, T * K] and raised to the one before it, and
 *    experts computes exactly the groups of those offsets (rows outside them stay untouched);
 *    a sorted pair out of range reads no token; a pair row out of range is skipped like -1.
 *    Every output that depends on a bad entry is unspecified; the others are what valid inputs
 *    give.
 * Expert ids (permute's input) outside [-1, E): the CPU backend refuses them likewise; the CUDA
 * backend's permute gives them no row, as for -1.
 * ------------------------------------------------------------------------------------------- */

/* Route: scores, selection and weights.
 * [in]  x           [T, Hr] layer dtype.
 * [out] expert_ids  [T, K] int32, each in [0, E) or -1 for "no expert" (top-p tokens with
 *                   fewer than K experts, dropped selections, expert choice).
 * [out] weights     [T, K] fp32 combine weights (0 where the id is -1). For
 *                   moeRoutingSigmoidTop1InputScale they are the input scales.
 * [out] stats       optional. */
MOE_API moeStatus_t moeLayerRoute(moeLayer_t layer, int64_t num_tokens, const void *x,
                                  int32_t *expert_ids, float *weights,
                                  const moeRouterStats_t *stats, void *workspace,
                                  size_t workspace_bytes, moeStream_t stream);

/* Permute: a stable sort of the T * K selections by expert.
 * [in]  expert_ids      [T, K] from route: each in [0, E) or -1 (no row). The CPU backend
 *                       refuses any other value (InvalidArgument naming the pair).
 * [out] expert_offsets  [E + 1] int64: expert e's rows are [offsets[e], offsets[e+1]).
 * [out] sorted_pairs    [T * K] int64: for each sorted row, the pair index t * K + j that it
 *                       came from; rows past offsets[E] are unspecified.
 * [out] pair_rows       [T * K] int64: the inverse, the sorted row of pair t * K + j, or -1. */
MOE_API moeStatus_t moeLayerPermute(moeLayer_t layer, int64_t num_tokens,
                                    const int32_t *expert_ids, int64_t *expert_offsets,
                                    int64_t *sorted_pairs, int64_t *pair_rows, void *workspace,
                                    size_t workspace_bytes, moeStream_t stream);

/* Experts: row r of expert_out = FFN_e(x[sorted_pairs[r] / K]) for the expert e whose range
 * holds r; the input is scaled by weights[pair] for moeRoutingSigmoidTop1InputScale (weights may
 * be NULL otherwise).
 * [out] expert_out  [T * K, Hr] layer dtype, in sorted order; rows past offsets[E] untouched. */
MOE_API moeStatus_t moeLayerExperts(moeLayer_t layer, int64_t num_tokens, const void *x,
                                    const float *weights, const int64_t *expert_offsets,
                                    const int64_t *sorted_pairs, void *expert_out,
                                    void *workspace, size_t workspace_bytes, moeStream_t stream);

/* Shared experts: shared_out [T, H] = sum_s FFN_s(x) over full-width tokens x [T, H].
 * Returns: moeSuccess (InvalidConfig if the layer has no shared experts). */
MOE_API moeStatus_t moeLayerSharedExperts(moeLayer_t layer, int64_t num_tokens, const void *x,
                                          void *shared_out, void *workspace,
                                          size_t workspace_bytes, moeStream_t stream);

/* Combine: y[t] = sum_j weights[t,j] * expert_out[pair_rows[t*K+j]] (+ shared_out[t]), summed
 * in fp32 in slot order j = 0..K-1, deterministic; input-scaled routing sums with weight 1.
 * [in] shared_out [T, Hr] or NULL.  [out] y [T, Hr]. */
MOE_API moeStatus_t moeLayerCombine(moeLayer_t layer, int64_t num_tokens, const void *expert_out,
                                    const int64_t *pair_rows, const float *weights,
                                    const void *shared_out, void *y, moeStream_t stream);

/* Aux-loss-free balancing [2c]: bias_e += rate * sign(mean(c) - c_e) on the selection bias,
 * from per-expert counts [E] (int64, backend memory, e.g. moeRouterStats_t.expert_counts summed
 * over the data-parallel group). Returns: moeSuccess, InvalidArgument; InvalidConfig unless the
 * routing is moeRoutingSigmoidGroupTopK. */
MOE_API moeStatus_t moeLayerUpdateSelectionBias(moeLayer_t layer, const int64_t *expert_counts,
                                                float rate, moeStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* MOE_MOE_H */
