/* The batch-wide parts of routing on the CPU backend: token-choice capacity (dropping), expert
 * choice, and the router statistics. Each walks the batch in a fixed order (or sorts stably),
 * so the result is the same whatever the thread count. */
#include <math.h>
#include <omp.h>

#include "backend/cpu/cpu_internal.h"

void moe_cpu_sort_desc(int64_t *idx, int64_t *tmp, int64_t n, const float *key, int64_t stride) {
  /* bottom-up merge sort; take from the right run only when it strictly beats the left */
  int64_t *src = idx, *dst = tmp;
  for (int64_t width = 1; width < n; width *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * width) {
      const int64_t mid = lo + width < n ? lo + width : n;
      const int64_t hi = lo + 2 * width < n ? lo + 2 * width : n;
      int64_t i = lo, j = mid, o = lo;
      while (i < mid && j < hi)
        dst[o++] = moe_cpu_beats(key[src[j] * stride], key[src[i] * stride]) ? src[j++] : src[i++];
      while (i < mid) dst[o++] = src[i++];
      while (j < hi) dst[o++] = src[j++];
    }
    int64_t *s = src;
    src = dst;
    dst = s;
  }
  if (src != idx) memcpy(idx, src, (size_t)n * sizeof *idx);
}

/* Token-choice capacity [4b]: C = ceil(T * k / E * capacity_factor), evaluated in double as
 * ceil(((double)T * k / E) * (double)capacity_factor), k = top_k.
 *  Position: priority is slot-major (every token's slot 0 in token order, then slot 1, ...):
 *            GShard's "first choices outrank second choices", earliest tokens first.
 *  Probs:    each expert keeps its C highest-weight selections; ties go to the lower pair
 *            index t * K + j; NaN weights rank last.
 * A dropped selection becomes id -1, weight 0, and is counted in wk->dropped. */
void moe_cpu_apply_capacity(const moeLayer *L, int64_t T, int32_t *ids, float *w,
                            moeCpuRouteWork *wk) {
  const int32_t E = L->E;
  const int64_t K = L->K, TK = T * K;
  for (int32_t e = 0; e < E; ++e) wk->dropped[e] = 0;
  if (!(L->cfg.capacity_factor > 0.0f) || TK == 0) return;
  const double cd =
      ceil((double)T * (double)L->cfg.top_k / (double)E * (double)L->cfg.capacity_factor);
  const int64_t C = cd > (double)TK ? TK : (int64_t)cd;
  if (L->cfg.drop_policy == moeDropByProbs) {
    /* stable counting sort of the pairs by expert, then each expert's list by weight */
    for (int32_t e = 0; e <= E; ++e) wk->start[e] = 0;
    for (int64_t p = 0; p < TK; ++p)
      if (ids[p] >= 0) wk->start[ids[p] + 1]++;
    for (int32_t e = 0; e < E; ++e) wk->start[e + 1] += wk->start[e];
    for (int32_t e = 0; e < E; ++e) wk->kept[e] = wk->start[e]; /* cursor */
    for (int64_t p = 0; p < TK; ++p)
      if (ids[p] >= 0) wk->order[wk->kept[ids[p]]++] = p;
#pragma omp parallel for schedule(dynamic, 1) num_threads(moe_cpu_threads(L)) if (TK >= 4096)
    for (int32_t e = 0; e < E; ++e) {
      const int64_t lo = wk->start[e], n = wk->start[e + 1] - lo;
      if (n <= C) continue;
      moe_cpu_sort_desc(wk->order + lo, wk->tmp + lo, n, w, 1);
      for (int64_t i = C; i < n; ++i) {
        const int64_t p = wk->order[lo + i];
        ids[p] = -1;
        w[p] = 0.0f;
      }
      wk->dropped[e] = n - C;
    }
  } else {
    for (int32_t e = 0; e < E; ++e) wk->kept[e] = 0;
    for (int64_t j = 0; j < K; ++j)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t p = t * K + j;
        const int32_t e = ids[p];
        if (e < 0) continue;
        if (wk->kept[e] < C) {
          wk->kept[e]++;
        } else {
          wk->dropped[e]++;
          ids[p] = -1;
          w[p] = 0.0f;
        }
      }
  }
}

/* Expert choice [4c]: C = floor(T * capacity_factor / E) (in double, at most T); expert e
 * picks the C tokens with the largest P[t, e] (ties: lower token index; NaN last). Slot j of a
 * token holds expert j when j picked it (weight P[t, j] * routed_scaling_factor), else -1. */
void moe_cpu_expert_choice(const moeLayer *L, int64_t T, const float *P, int32_t *ids, float *w,
                           moeCpuRouteWork *wk) {
  const int32_t E = L->E;
  const float rsf = L->cfg.routed_scaling_factor;
  for (int64_t p = 0; p < T * E; ++p) {
    ids[p] = -1;
    w[p] = 0.0f;
  }
  for (int32_t e = 0; e < E; ++e) wk->dropped[e] = 0;
  const double cd = floor((double)T * (double)L->cfg.capacity_factor / (double)E);
  const int64_t C = cd > (double)T ? T : (cd < 0 ? 0 : (int64_t)cd);
  if (C == 0) return;
  /* experts in parallel, each sorting its column with its own [T] slices of order/tmp (they
   * hold T * E entries); each expert writes only its own slot of each token */
  const int nth = moe_cpu_threads(L) < E ? moe_cpu_threads(L) : E;
#pragma omp parallel num_threads(nth) if (T * E >= 4096)
  {
    int64_t *order = wk->order + (int64_t)omp_get_thread_num() * T;
    int64_t *tmp = wk->tmp + (int64_t)omp_get_thread_num() * T;
#pragma omp for schedule(dynamic, 1)
    for (int32_t e = 0; e < E; ++e) {
      for (int64_t t = 0; t < T; ++t) order[t] = t;
      moe_cpu_sort_desc(order, tmp, T, P + e, E);
      for (int64_t i = 0; i < C; ++i) {
        const int64_t t = order[i];
        ids[t * E + e] = e;
        w[t * E + e] = P[t * E + e] * rsf;
      }
    }
  }
}

void moe_cpu_count_kept(const moeLayer *L, int64_t T, const int32_t *ids, moeCpuRouteWork *wk) {
  for (int32_t e = 0; e < L->E; ++e) wk->kept[e] = 0;
  for (int64_t p = 0; p < T * L->K; ++p)
    if (ids[p] >= 0) wk->kept[ids[p]]++;
}

/* Router statistics [7]. P [T, E] softmax(z), lse [T] logsumexp(z), ent [T] entropy of
 * softmax(z), wk->kept / wk->dropped per expert. Reductions over tokens run in double, in token
 * order (deterministic).
 * f_e = c_e / D with D = T * top_k for the token-choice families (so dropped selections lower
 * f, as in Switch) and D = the total of kept selections for top-p, expert choice and dense
 * gating, whose number of selections per token is not k. AuxLoss = E * sum_e f_e P_e (HF's
 * load_balancing_loss_func is top_k times this for token choice). */
void moe_cpu_write_stats(const moeLayer *L, int64_t T, const moeRouterStats_t *st, const float *P,
                         const float *lse, const float *ent, const moeCpuRouteWork *wk) {
  const int32_t E = L->E;
  const moeRouting_t r = L->cfg.routing;
  int64_t kept = 0, dropped = 0, cmax = 0;
  for (int32_t e = 0; e < E; ++e) {
    kept += wk->kept[e];
    dropped += wk->dropped[e];
    if (wk->kept[e] > cmax) cmax = wk->kept[e];
    if (st->expert_counts) st->expert_counts[e] = wk->kept[e];
    if (st->dropped_counts) st->dropped_counts[e] = wk->dropped[e];
  }
  const int variable = r == moeRoutingTopP || r == moeRoutingExpertChoice || r == moeRoutingDense;
  const double D = variable ? (double)kept : (double)T * (double)L->cfg.top_k;
  /* P_e: each expert's sum runs over tokens in increasing order (row-wise for the cache) */
  double *psum = wk->psum;
  for (int32_t e = 0; e < E; ++e) psum[e] = 0.0;
  for (int64_t t = 0; t < T; ++t)
    for (int32_t e = 0; e < E; ++e) psum[e] += (double)P[t * E + e];
  double aux = 0.0;
  for (int32_t e = 0; e < E; ++e) {
    const double pe = T > 0 ? psum[e] / (double)T : 0.0;
    if (st->expert_prob_mean) st->expert_prob_mean[e] = (float)pe;
    if (D > 0) aux += ((double)wk->kept[e] / D) * pe;
  }
  if (!st->scalars) return;
  double z = 0.0, h = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    z += (double)lse[t] * (double)lse[t];
    h += (double)ent[t];
  }
  const double mean_c = (double)kept / (double)E;
  float *s = st->scalars;
  s[moeStatAuxLoss] = (float)(aux * (double)E);
  s[moeStatZLoss] = T > 0 ? (float)(z / (double)T) : 0.0f;
  s[moeStatEntropy] = T > 0 ? (float)(h / (double)T) : 0.0f;
  s[moeStatMaxViolation] = mean_c > 0 ? (float)(((double)cmax - mean_c) / mean_c) : 0.0f;
  s[moeStatExpertsPerToken] = T > 0 ? (float)((double)kept / (double)T) : 0.0f;
  s[moeStatDropped] = (float)dropped;
}
