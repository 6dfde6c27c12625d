/* CUDA stages: route (logits, selection, capacity / expert choice, statistics), permute, and
 * the selection-bias update. Everything is enqueued on the stream: no host synchronization, no
 * allocation, so the lead's forward can be captured in a CUDA graph. */
#include <math.h>

#include "backend/cuda/cuda_backend.h"
#include "permute.h"
#include "route_post.h"
#include "routing.h"

#define ALIGN_UP(v) (((v) + (size_t)255) & ~(size_t)255)

typedef struct {
  size_t z, tmax, tsum, tlse, tent, counts, prob, prob_partial, dropped, post, post_bytes, total;
} RoutePlan;

static int capacity_active(const moeLayer *L) {
  return L->cfg.capacity_factor > 0.0f && L->cfg.routing != moeRoutingExpertChoice &&
         L->cfg.routing != moeRoutingDense;
}

/* Fallback when CUB's size query fails (it needs no device work, so this is not expected):
 * CUB's temporary storage holds the alternate key / value buffers plus small histograms. */
static size_t sort_fallback(int64_t n, size_t key_val_bytes) {
  return (size_t)n * key_val_bytes + ((size_t)1 << 20);
}

static void route_plan(const moeLayer *L, int64_t T, RoutePlan *p) {
  const size_t E = (size_t)L->E, t = (size_t)(T > 0 ? T : 0);
  size_t off = 0;
  p->z = off; off += ALIGN_UP(t * E * sizeof(float));
  p->tmax = off; off += ALIGN_UP(t * sizeof(float));
  p->tsum = off; off += ALIGN_UP(t * sizeof(double));
  p->tlse = off; off += ALIGN_UP(t * sizeof(float));
  p->tent = off; off += ALIGN_UP(t * sizeof(float));
  p->counts = off; off += ALIGN_UP(E * sizeof(int64_t));
  p->prob = off; off += ALIGN_UP(E * sizeof(float));
  p->prob_partial = off; off += ALIGN_UP((size_t)MOE_PROB_MEAN_CHUNKS * E * sizeof(double));
  p->dropped = off; off += ALIGN_UP(E * sizeof(int64_t));
  size_t post = 0;
  if (capacity_active(L)) {
    if (moe_capacity_scratch_bytes(T, L->K, L->E, &post) != cudaSuccess) {
      (void)cudaGetLastError();
      post = 4 * sort_fallback(T * L->K, 16);
    }
  } else if (L->cfg.routing == moeRoutingExpertChoice) {
    if (moe_expert_choice_scratch_bytes(T, L->E, &post) != cudaSuccess) {
      (void)cudaGetLastError();
      post = 4 * sort_fallback(T * L->E, 16);
    }
  }
  p->post = off;
  p->post_bytes = post;
  off += ALIGN_UP(post);
  p->total = off;
}

static size_t permute_scratch(const moeLayer *L, int64_t T) {
  size_t b = 0;
  if (T <= 0) return 0;
  if (moe_permute_scratch_bytes(T, L->K, L->E_local, &b) != cudaSuccess) {
    (void)cudaGetLastError();
    b = 3 * sort_fallback(T * L->K, 12);
  }
  return b;
}

size_t moe_cuda_ffn_scratch_bytes(const moeLayer *L, int64_t T); /* cuda_ffn.c */

size_t moe_cuda_scratch_bytes(const moeLayer *L, int64_t T) {
  /* The plans multiply T * E, T * K * I and T * Is * H in size_t without overflow checks;
   * beyond 2^40 selections (as on the CPU backend) report "too big" instead of wrapping. */
  const int64_t width = L->K > L->E ? L->K : L->E;
  if (T > ((int64_t)1 << 40) / (width > 0 ? width : 1)) return SIZE_MAX;
  RoutePlan rp;
  route_plan(L, T, &rp);
  size_t m = rp.total;
  const size_t pm = permute_scratch(L, T);
  if (pm > m) m = pm;
  const size_t fm = moe_cuda_ffn_scratch_bytes(L, T);
  if (fm > m) m = fm;
  return m;
}

moeStatus_t moe_cuda_route(const moeLayer *L, const moeRouteArgs *a, moeScratch s,
                           moeStream_t stream) {
  const int64_t T = a->T;
  if (T <= 0) return moeSuccess;
  cudaStream_t st = moe_cuda_stream(L->ctx, stream);
  RoutePlan rp;
  route_plan(L, T, &rp);
  if (s.bytes < rp.total || (rp.total && !s.ptr))
    return moe_error(moeErrorInvalidArgument, "route: scratch of %zu bytes, %zu needed", s.bytes,
                     rp.total);
  char *base = (char *)s.ptr;
  const moeRouterStats_t *stats = a->stats;
  const int want_scalars = stats && stats->scalars;
  const int routing = (int)L->cfg.routing;

  float *z = (float *)(base + rp.z);
  MOE_CUDA_TRY(moe_launch_router_logits(a->x, (int)L->cfg.dtype, L->router_weight, L->router_bias,
                                        z, T, L->E, L->Hr, st),
               "route: router logits kernel");

  moeSelectParams sp;
  sp.T = T;
  sp.E = L->E;
  sp.K = L->K;
  sp.family = routing;
  sp.norm_topk_prob = L->cfg.norm_topk_prob;
  sp.n_group = L->cfg.n_group > 0 ? L->cfg.n_group : 1;
  sp.topk_group = L->cfg.topk_group > 0 ? L->cfg.topk_group : 1;
  sp.scale = L->cfg.routed_scaling_factor;
  sp.top_p = L->cfg.top_p_threshold;
  sp.z = z;
  sp.selection_bias = L->selection_bias;
  sp.ids = a->expert_ids;
  sp.weights = a->weights;
  sp.tok_max = (float *)(base + rp.tmax);
  sp.tok_sum = (double *)(base + rp.tsum);
  sp.tok_lse = want_scalars ? (float *)(base + rp.tlse) : NULL;
  sp.tok_ent = want_scalars ? (float *)(base + rp.tent) : NULL;

  if (routing == moeRoutingExpertChoice) {
    /* C = floor(T * capacity_factor / E), at most T (docs/ROUTING.md [4c]). */
    double c = floor((double)T * (double)L->cfg.capacity_factor / (double)L->E);
    int64_t C = c < 0.0 ? 0 : (c > (double)T ? T : (int64_t)c);
    MOE_CUDA_TRY(moe_launch_route_softmax_stats(&sp, st), "route: softmax statistics kernel");
    moeExpertChoiceParams ep;
    ep.T = T;
    ep.E = L->E;
    ep.capacity = C;
    ep.z = z;
    ep.tok_max = sp.tok_max;
    ep.tok_sum = sp.tok_sum;
    ep.scale = L->cfg.routed_scaling_factor;
    ep.ids = a->expert_ids;
    ep.weights = a->weights;
    ep.scratch = base + rp.post;
    ep.scratch_bytes = rp.post_bytes;
    MOE_CUDA_TRY(moe_launch_expert_choice_pick(&ep, st), "route: expert-choice pick");
  } else {
    MOE_CUDA_TRY(moe_launch_route_select(&sp, st), "route: selection kernel");
  }

  const int want_dropped = stats && (stats->dropped_counts || want_scalars);
  int64_t *dropped = NULL;
  if (capacity_active(L)) {
    /* C = ceil(T * k / E * capacity_factor) (docs/ROUTING.md [4b]). */
    double c = ceil((double)T * (double)L->cfg.top_k / (double)L->E * (double)L->cfg.capacity_factor);
    moeCapacityParams cp;
    cp.T = T;
    cp.E = L->E;
    cp.K = L->K;
    /* Clamped to T * K like the CPU reference: capacity_factor has no upper bound, and a
     * double above INT64_MAX converts to INT64_MIN on x86 (every selection would be dropped). */
    const int64_t TK = T * (int64_t)L->K;
    cp.capacity = c < 0.0 ? 0 : (c > (double)TK ? TK : (int64_t)c);
    cp.policy = (int32_t)L->cfg.drop_policy;
    cp.ids = a->expert_ids;
    cp.weights = a->weights;
    cp.dropped = NULL;
    if (want_dropped) {
      dropped = (int64_t *)(base + rp.dropped);
      MOE_CUDA_TRY(cudaMemsetAsync(dropped, 0, (size_t)L->E * sizeof(int64_t), st),
                   "route: cudaMemsetAsync");
      cp.dropped = dropped;
    }
    cp.scratch = base + rp.post;
    cp.scratch_bytes = rp.post_bytes;
    MOE_CUDA_TRY(moe_launch_capacity(&cp, st), "route: capacity pass");
  }

  if (stats && (stats->expert_counts || stats->dropped_counts || stats->expert_prob_mean ||
                stats->scalars)) {
    moeStatsParams pp;
    pp.T = T;
    pp.E = L->E;
    pp.K = L->K;
    pp.variable_k = routing == moeRoutingTopP || routing == moeRoutingExpertChoice ||
                    routing == moeRoutingDense;
    pp.top_k = L->cfg.top_k;
    pp.ids = a->expert_ids;
    pp.z = z;
    pp.tok_max = sp.tok_max;
    pp.tok_sum = sp.tok_sum;
    pp.tok_lse = sp.tok_lse;
    pp.tok_ent = sp.tok_ent;
    pp.dropped = dropped;
    pp.counts = stats->expert_counts ? stats->expert_counts : (int64_t *)(base + rp.counts);
    pp.prob_mean = stats->expert_prob_mean ? stats->expert_prob_mean
                   : want_scalars          ? (float *)(base + rp.prob)
                                           : NULL;
    pp.prob_partial = (double *)(base + rp.prob_partial);
    pp.scalars = stats->scalars;
    pp.dropped_out = stats->dropped_counts;
    MOE_CUDA_TRY(moe_launch_router_stats(&pp, st), "route: router statistics");
  }
  return moeSuccess;
}

moeStatus_t moe_cuda_permute(const moeLayer *L, const moePermuteArgs *a, moeScratch s,
                             moeStream_t stream) {
  cudaStream_t st = moe_cuda_stream(L->ctx, stream);
  const size_t need = permute_scratch(L, a->T);
  if (s.bytes < need || (need && !s.ptr))
    return moe_error(moeErrorInvalidArgument, "permute: scratch of %zu bytes, %zu needed", s.bytes,
                     need);
  moePermuteParams p;
  p.T = a->T > 0 ? a->T : 0;
  p.K = L->K;
  p.expert_begin = L->expert_begin;
  p.E_local = L->E_local;
  p.expert_ids = a->expert_ids;
  p.expert_offsets = a->expert_offsets;
  p.sorted_pairs = a->sorted_pairs;
  p.pair_rows = a->pair_rows;
  p.scratch = s.ptr;
  p.scratch_bytes = s.bytes;
  MOE_CUDA_TRY(moe_launch_permute(&p, st), "permute");
  return moeSuccess;
}

moeStatus_t moe_cuda_update_selection_bias(const moeLayer *L, const int64_t *expert_counts,
                                           float rate, moeStream_t stream) {
  MOE_CUDA_TRY(moe_launch_update_selection_bias(L->selection_bias, expert_counts, L->E, rate,
                                                moe_cuda_stream(L->ctx, stream)),
               "update_selection_bias");
  return moeSuccess;
}
