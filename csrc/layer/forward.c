/* Forward orchestration: the workspace plan, the pipeline in stage order, and the public
 * single-stage entry points. Backends only compute; every argument check happens here. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "core/status.h"
#include "layer/layer_internal.h"

enum { MOE_WORKSPACE_ALIGN = 256 };

/* Byte offsets of every buffer forward carves out of the workspace for T tokens. */
typedef struct {
  int64_t T, Tr, P; /* tokens, router (sub-)tokens T * heads, selections Tr * K */
  size_t ids, weights, offsets, sorted_pairs, pair_rows, expert_out, shared_out, head_x, moe_out;
  size_t scratch, scratch_bytes, total;
} moeWorkspacePlan;

/* Appends a buffer of n * elem bytes at the next aligned offset; 0 on overflow. */
static int plan_take(size_t *cursor, int64_t n, size_t elem, size_t *offset) {
  size_t bytes;
  if (n < 0 || __builtin_mul_overflow((size_t)n, elem, &bytes)) return 0;
  size_t at = (*cursor + MOE_WORKSPACE_ALIGN - 1) & ~(size_t)(MOE_WORKSPACE_ALIGN - 1);
  if (at < *cursor || __builtin_add_overflow(at, bytes, cursor)) return 0;
  *offset = at;
  return 1;
}

static moeStatus_t plan_workspace(const moeLayer_s_alias *l, int64_t T, moeWorkspacePlan *p) {
  memset(p, 0, sizeof *p);
  p->T = T;
  const size_t el = moe_layer_elem_size(l);
  int ok = !__builtin_mul_overflow(T, (int64_t)l->heads, &p->Tr) &&
           !__builtin_mul_overflow(p->Tr, (int64_t)l->K, &p->P);
  int64_t expert_out_elems = 0, token_elems = 0;
  ok = ok && !__builtin_mul_overflow(p->P, l->Hr, &expert_out_elems) &&
       !__builtin_mul_overflow(T, l->H, &token_elems);
  size_t c = 0;
  ok = ok && plan_take(&c, p->P, sizeof(int32_t), &p->ids) &&
       plan_take(&c, p->P, sizeof(float), &p->weights) &&
       plan_take(&c, (int64_t)l->E_local + 1, sizeof(int64_t), &p->offsets) &&
       plan_take(&c, p->P, sizeof(int64_t), &p->sorted_pairs) &&
       plan_take(&c, p->P, sizeof(int64_t), &p->pair_rows) &&
       plan_take(&c, expert_out_elems, el, &p->expert_out) &&
       plan_take(&c, l->S > 0 ? token_elems : 0, el, &p->shared_out) &&
       plan_take(&c, l->heads > 1 ? token_elems : 0, el, &p->head_x) &&
       plan_take(&c, l->heads > 1 ? token_elems : 0, el, &p->moe_out);
  if (ok) {
    p->scratch_bytes = l->ctx->ops->scratch_bytes(l, p->Tr);
    ok = p->scratch_bytes != SIZE_MAX && plan_take(&c, (int64_t)p->scratch_bytes, 1, &p->scratch);
  }
  if (!ok)
    return moe_error(moeErrorInvalidArgument,
                     "num_tokens = %lld: the workspace size overflows (T * heads * K * H)",
                     (long long)T);
  p->total = c;
  return moeSuccess;
}

moeStatus_t moeLayerGetWorkspaceSize(moeLayer_t layer, int64_t max_tokens, size_t *bytes) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(bytes);
  if (max_tokens < 0)
    return moe_error(moeErrorInvalidArgument, "max_tokens = %lld must be >= 0",
                     (long long)max_tokens);
  moeWorkspacePlan p;
  MOE_TRY(plan_workspace(layer, max_tokens, &p));
  *bytes = p.total;
  return moeSuccess;
}

/* The workspace a call works in: the caller's (checked), or the layer's own, grown on demand.
 * Growing allocates, so it synchronizes and is not capturable: documented in moe.h. */
static moeStatus_t resolve_workspace(moeLayer_t l, void *workspace, size_t workspace_bytes,
                                     size_t needed, char **base) {
  if (workspace) {
    if (workspace_bytes < needed)
      return moe_error(moeErrorInvalidArgument,
                       "workspace_bytes = %zu is too small: this call needs %zu "
                       "(moeLayerGetWorkspaceSize)", workspace_bytes, needed);
    if ((uintptr_t)workspace % MOE_WORKSPACE_ALIGN != 0)
      return moe_error(moeErrorInvalidArgument, "workspace must be %d-byte aligned",
                       MOE_WORKSPACE_ALIGN);
    *base = workspace;
    return moeSuccess;
  }
  if (l->own_workspace_bytes < needed) {
    MOE_TRY(l->ctx->ops->synchronize(l->ctx, l->ctx->stream));
    moe_backend_free(l->ctx, l->own_workspace);
    l->own_workspace = NULL;
    l->own_workspace_bytes = 0;
    MOE_TRY(moe_backend_alloc(l->ctx, needed, &l->own_workspace));
    l->own_workspace_bytes = needed;
  }
  *base = l->own_workspace;
  return moeSuccess;
}

static moeStatus_t check_tokens(const char *fn, int64_t T) {
  if (T < 0) return moe_error(moeErrorInvalidArgument, "%s: num_tokens = %lld must be >= 0", fn, (long long)T);
  return moeSuccess;
}

/* The pipeline: [head] -> route -> permute -> experts -> [shared] -> combine -> [merge].
 * expert_out_override (dense forward) receives the per-expert outputs in place of the plan's. */
static moeStatus_t forward_impl(moeLayer_t l, int64_t T, const void *x, void *y,
                                const moeRouterStats_t *stats, void *expert_out_override,
                                void *workspace, size_t workspace_bytes, moeStream_t stream) {
  moeWorkspacePlan p;
  MOE_TRY(plan_workspace(l, T, &p));
  char *ws = NULL;
  MOE_TRY(resolve_workspace(l, workspace, workspace_bytes, p.total, &ws));
  const moeBackendOps *ops = l->ctx->ops;
  stream = moe_stream_or_default(l->ctx, stream);
  const moeScratch scratch = {ws + p.scratch, p.scratch_bytes};
  int32_t *ids = (int32_t *)(ws + p.ids);
  float *weights = (float *)(ws + p.weights);
  int64_t *offsets = (int64_t *)(ws + p.offsets);
  int64_t *sorted = (int64_t *)(ws + p.sorted_pairs);
  int64_t *pair_rows = (int64_t *)(ws + p.pair_rows);
  void *expert_out = expert_out_override ? expert_out_override : ws + p.expert_out;
  void *shared_out = l->S > 0 ? ws + p.shared_out : NULL;

  const void *x_routed = x;
  if (l->heads > 1) { /* multi-head MoE: project, then route h sub-tokens of width H/h */
    const moeProjectArgs head = {T, x, l->head_weight, l->head_bias, NULL, ws + p.head_x};
    MOE_TRY(ops->project(l, &head, scratch, stream));
    x_routed = ws + p.head_x;
  }
  const moeRouteArgs route = {p.Tr, x_routed, ids, weights, stats};
  MOE_TRY(ops->route(l, &route, scratch, stream));
  const moePermuteArgs permute = {p.Tr, ids, offsets, sorted, pair_rows};
  MOE_TRY(ops->permute(l, &permute, scratch, stream));
  const int input_scaled = l->cfg.routing == moeRoutingSigmoidTop1InputScale;
  const moeExpertsArgs experts = {p.Tr, x_routed, input_scaled ? weights : NULL, offsets, sorted,
                                  expert_out};
  MOE_TRY(ops->experts(l, &experts, scratch, stream));
  if (shared_out) {
    const moeSharedArgs shared = {T, x, shared_out};
    MOE_TRY(ops->shared_experts(l, &shared, scratch, stream));
  }
  if (l->heads == 1) {
    const moeCombineArgs combine = {p.Tr, expert_out, pair_rows, weights, shared_out, y};
    return ops->combine(l, &combine, stream);
  }
  void *moe_out = ws + p.moe_out;
  const moeCombineArgs combine = {p.Tr, expert_out, pair_rows, weights, NULL, moe_out};
  MOE_TRY(ops->combine(l, &combine, stream));
  const moeProjectArgs merge = {T, moe_out, l->merge_weight, l->merge_bias, shared_out, y};
  return ops->project(l, &merge, scratch, stream);
}

static moeStatus_t check_forward_args(moeLayer_t layer, int64_t T, const void *x, const void *y,
                                      const moeRouterStats_t *stats) {
  MOE_CHECK_NOT_NULL(layer);
  MOE_TRY(check_tokens("moeLayerForward", T));
  if (T == 0) return moeSuccess;
  MOE_CHECK_NOT_NULL(x);
  MOE_CHECK_NOT_NULL(y);
  MOE_TRY(moe_check_disjoint("moeLayerForward", x, y,
                             (size_t)T * (size_t)layer->H * moe_layer_elem_size(layer)));
  if (stats && (stats->size < sizeof(size_t) || stats->size > sizeof(moeRouterStats_t)))
    return moe_error(moeErrorInvalidArgument,
                     "stats->size = %zu is invalid: initialize with MOE_ROUTER_STATS_INIT",
                     stats->size);
  return moe_layer_check_ready(layer);
}

/* A copy of the caller's stats struct with fields an older caller lacks set to NULL. */
static const moeRouterStats_t *normalize_stats(const moeRouterStats_t *in, moeRouterStats_t *out) {
  if (!in) return NULL;
  moeRouterStats_t s = MOE_ROUTER_STATS_INIT;
  memcpy(&s, in, in->size);
  s.size = sizeof s;
  *out = s;
  return out;
}

moeStatus_t moeLayerForward(moeLayer_t layer, int64_t num_tokens, const void *x, void *y,
                            const moeRouterStats_t *stats, void *workspace,
                            size_t workspace_bytes, moeStream_t stream) {
  moe_clear_error();
  MOE_TRY(check_forward_args(layer, num_tokens, x, y, stats));
  if (num_tokens == 0) return moeSuccess;
  moeRouterStats_t s;
  return forward_impl(layer, num_tokens, x, y, normalize_stats(stats, &s), NULL, workspace,
                      workspace_bytes, stream);
}

moeStatus_t moeLayerForwardDense(moeLayer_t layer, int64_t num_tokens, const void *x, void *y,
                                 void *expert_outputs, void *workspace, size_t workspace_bytes,
                                 moeStream_t stream) {
  moe_clear_error();
  MOE_TRY(check_forward_args(layer, num_tokens, x, y, NULL));
  if (layer->cfg.routing != moeRoutingDense)
    return moe_error(moeErrorInvalidConfig,
                     "moeLayerForwardDense needs config.routing = moeRoutingDense (it is %d)",
                     (int)layer->cfg.routing);
  if (layer->heads != 1 || layer->E_local != layer->E)
    return moe_error(moeErrorNotSupported,
                     "moeLayerForwardDense: per-expert outputs need num_heads = 1 and a layer "
                     "holding every expert");
  if (num_tokens == 0) return moeSuccess;
  MOE_CHECK_NOT_NULL(expert_outputs);
  /* Dense routing selects every expert for every token, so the expert-sorted order of the
   * selections is expert-major with tokens ascending: exactly the [E, T, H] layout asked for. */
  return forward_impl(layer, num_tokens, x, y, NULL, expert_outputs, workspace, workspace_bytes,
                      stream);
}

/* ---- the stages alone ------------------------------------------------------------------- */

static moeStatus_t stage_scratch(moeLayer_t l, int64_t T, void *workspace, size_t workspace_bytes,
                                 moeScratch *scratch) {
  const size_t needed = l->ctx->ops->scratch_bytes(l, T);
  if (needed == SIZE_MAX)
    return moe_error(moeErrorInvalidArgument, "num_tokens = %lld: scratch size overflows",
                     (long long)T);
  char *base = NULL;
  MOE_TRY(resolve_workspace(l, workspace, workspace_bytes, needed, &base));
  scratch->ptr = base;
  scratch->bytes = needed;
  return moeSuccess;
}

moeStatus_t moeLayerRoute(moeLayer_t layer, int64_t num_tokens, const void *x,
                          int32_t *expert_ids, float *weights, const moeRouterStats_t *stats,
                          void *workspace, size_t workspace_bytes, moeStream_t stream) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_TRY(check_tokens("moeLayerRoute", num_tokens));
  if (num_tokens == 0) return moeSuccess;
  MOE_CHECK_NOT_NULL(x);
  MOE_CHECK_NOT_NULL(expert_ids);
  MOE_CHECK_NOT_NULL(weights);
  if (!layer->router_set)
    return moe_error(moeErrorInvalidState, "the router weights were never set");
  moeScratch scratch;
  MOE_TRY(stage_scratch(layer, num_tokens, workspace, workspace_bytes, &scratch));
  moeRouterStats_t s;
  const moeRouteArgs args = {num_tokens, x, expert_ids, weights, normalize_stats(stats, &s)};
  return layer->ctx->ops->route(layer, &args, scratch, moe_stream_or_default(layer->ctx, stream));
}

moeStatus_t moeLayerPermute(moeLayer_t layer, int64_t num_tokens, const int32_t *expert_ids,
                            int64_t *expert_offsets, int64_t *sorted_pairs, int64_t *pair_rows,
                            void *workspace, size_t workspace_bytes, moeStream_t stream) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_TRY(check_tokens("moeLayerPermute", num_tokens));
  MOE_CHECK_NOT_NULL(expert_offsets);
  if (num_tokens > 0) {
    MOE_CHECK_NOT_NULL(expert_ids);
    MOE_CHECK_NOT_NULL(sorted_pairs);
    MOE_CHECK_NOT_NULL(pair_rows);
  }
  moeScratch scratch;
  MOE_TRY(stage_scratch(layer, num_tokens, workspace, workspace_bytes, &scratch));
  const moePermuteArgs args = {num_tokens, expert_ids, expert_offsets, sorted_pairs, pair_rows};
  return layer->ctx->ops->permute(layer, &args, scratch, moe_stream_or_default(layer->ctx, stream));
}

moeStatus_t moeLayerExperts(moeLayer_t layer, int64_t num_tokens, const void *x,
                            const float *weights, const int64_t *expert_offsets,
                            const int64_t *sorted_pairs, void *expert_out, void *workspace,
                            size_t workspace_bytes, moeStream_t stream) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_TRY(check_tokens("moeLayerExperts", num_tokens));
  if (num_tokens == 0) return moeSuccess;
  MOE_CHECK_NOT_NULL(x);
  MOE_CHECK_NOT_NULL(expert_offsets);
  MOE_CHECK_NOT_NULL(sorted_pairs);
  MOE_CHECK_NOT_NULL(expert_out);
  const int input_scaled = layer->cfg.routing == moeRoutingSigmoidTop1InputScale;
  if (input_scaled && !weights)
    return moe_error(moeErrorInvalidArgument,
                     "moeLayerExperts: weights (the input scales) must not be NULL for "
                     "moeRoutingSigmoidTop1InputScale");
  MOE_TRY(moe_layer_check_ready(layer));
  moeScratch scratch;
  MOE_TRY(stage_scratch(layer, num_tokens, workspace, workspace_bytes, &scratch));
  const moeExpertsArgs args = {num_tokens, x, input_scaled ? weights : NULL, expert_offsets,
                               sorted_pairs, expert_out};
  return layer->ctx->ops->experts(layer, &args, scratch, moe_stream_or_default(layer->ctx, stream));
}

moeStatus_t moeLayerSharedExperts(moeLayer_t layer, int64_t num_tokens, const void *x,
                                  void *shared_out, void *workspace, size_t workspace_bytes,
                                  moeStream_t stream) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_TRY(check_tokens("moeLayerSharedExperts", num_tokens));
  if (layer->S == 0)
    return moe_error(moeErrorInvalidConfig,
                     "moeLayerSharedExperts: the layer has num_shared_experts = 0");
  if (num_tokens == 0) return moeSuccess;
  MOE_CHECK_NOT_NULL(x);
  MOE_CHECK_NOT_NULL(shared_out);
  MOE_TRY(moe_layer_check_ready(layer));
  moeScratch scratch;
  int64_t Tr;
  if (__builtin_mul_overflow(num_tokens, (int64_t)layer->heads, &Tr))
    return moe_error(moeErrorInvalidArgument, "num_tokens = %lld overflows", (long long)num_tokens);
  MOE_TRY(stage_scratch(layer, Tr, workspace, workspace_bytes, &scratch));
  const moeSharedArgs args = {num_tokens, x, shared_out};
  return layer->ctx->ops->shared_experts(layer, &args, scratch,
                                         moe_stream_or_default(layer->ctx, stream));
}

moeStatus_t moeLayerCombine(moeLayer_t layer, int64_t num_tokens, const void *expert_out,
                            const int64_t *pair_rows, const float *weights,
                            const void *shared_out, void *y, moeStream_t stream) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_TRY(check_tokens("moeLayerCombine", num_tokens));
  if (num_tokens == 0) return moeSuccess;
  MOE_CHECK_NOT_NULL(expert_out);
  MOE_CHECK_NOT_NULL(pair_rows);
  MOE_CHECK_NOT_NULL(weights);
  MOE_CHECK_NOT_NULL(y);
  const moeCombineArgs args = {num_tokens, expert_out, pair_rows, weights, shared_out, y};
  return layer->ctx->ops->combine(layer, &args, moe_stream_or_default(layer->ctx, stream));
}

moeStatus_t moeLayerUpdateSelectionBias(moeLayer_t layer, const int64_t *expert_counts,
                                        float rate, moeStream_t stream) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(expert_counts);
  if (!isfinite(rate))
    return moe_error(moeErrorInvalidArgument, "rate = %g must be finite", (double)rate);
  MOE_TRY(moe_layer_check_selection_bias_used(layer, "moeLayerUpdateSelectionBias"));
  return layer->ctx->ops->update_selection_bias(layer, expert_counts, rate,
                                                moe_stream_or_default(layer->ctx, stream));
}
