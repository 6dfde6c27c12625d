/* Route stage of the CPU backend (docs/ROUTING.md): router logits in fp32, then per token the
 * scores, selection and weights of the layer's family, then the batch-wide parts (capacity,
 * expert choice, statistics; route_select.c).
 *
 * Order of selection everywhere: the larger score first, ties to the lower expert index, NaN
 * below every other score (-inf included), so a token whose scores are all NaN still gets
 * distinct valid experts, lowest index first. Selected experts fill slots 0..n-1 in that order;
 * unused slots are id -1, weight 0. Group-limited families rank every expert of a kept group
 * above every expert of a masked group (the "-inf" mask of ROUTING.md 2a/2b, made total so that
 * NaN scores cannot pull a masked expert in). */
#include <math.h>
#include <omp.h>

#include "backend/cpu/cpu_internal.h"

#define ROWS_BLOCK 32      /* tokens per logits GEMM call */
#define TOPK_INSERT_MAX 32 /* k above this: full stable sort instead of insertion */

/* Per-thread arrays, each [E]. */
typedef struct {
  int64_t *idx, *tmp;
  float *key;
  float *gscore;
} moeCpuTokWork;

/* The k best experts of score[0..n) (key = score, ranked by keep first when keep != NULL) in
 * descending order into idx[0..k). */
static void topk(const float *score, const uint8_t *keep, int32_t n, int32_t k, int64_t *idx,
                 moeCpuTokWork *w) {
  if (keep) {
    /* kept experts sorted by score, then (only if k reaches past them) the masked ones */
    int64_t nk = 0;
    for (int32_t e = 0; e < n; ++e)
      if (keep[e]) w->idx[nk++] = e;
    moe_cpu_sort_desc(w->idx, w->tmp, nk, score, 1);
    if (nk < k) {
      int64_t nm = 0;
      for (int32_t e = 0; e < n; ++e)
        if (!keep[e]) w->idx[nk + nm++] = e;
      moe_cpu_sort_desc(w->idx + nk, w->tmp, nm, score, 1);
    }
    memcpy(idx, w->idx, (size_t)k * sizeof(int64_t));
    return;
  }
  if (k > TOPK_INSERT_MAX) {
    for (int32_t e = 0; e < n; ++e) w->idx[e] = e;
    moe_cpu_sort_desc(w->idx, w->tmp, n, score, 1);
    memcpy(idx, w->idx, (size_t)k * sizeof(int64_t));
    return;
  }
  /* insertion into a descending list: experts arrive in increasing index, so an equal score
   * never displaces an earlier one */
  int32_t m = 0;
  for (int32_t e = 0; e < n; ++e) {
    const float v = score[e];
    int32_t pos;
    if (m < k)
      pos = m++;
    else if (moe_cpu_beats(v, score[idx[k - 1]]))
      pos = k - 1;
    else
      continue;
    while (pos > 0 && moe_cpu_beats(v, score[idx[pos - 1]])) {
      idx[pos] = idx[pos - 1];
      --pos;
    }
    idx[pos] = e;
  }
}

/* Routing's exp and log: in double, rounded once to float, the same formula as the CUDA
 * kernels (kernels/moe_kernels_common.cuh, expf_ref), so that both backends round alike and
 * near ties break alike. glibc's expf differs from it by one ulp on about 1 input in 11,500 of
 * [-104, 0] (a review's exhaustive check; the double formula was the correctly rounded one). */
static inline float ref_expf(float x) { return (float)exp((double)x); }
static inline float ref_logf(float x) { return (float)log((double)x); }

static inline float sigmoid(float x) {
  return 1.0f / (1.0f + ref_expf(-x));
}

/* p = softmax(z) over n; returns logsumexp(z); *ent = entropy of p (nats).
 * The exponentials are fp32 (ref_expf), their sum is accumulated in double and each probability is
 * rounded once to fp32. The double sum makes softmax invariant, in practice, under permutations
 * of the logits: two tokens whose logits are a permutation of each other get bitwise equal
 * probabilities, so exact ties across tokens (expert choice ranks tokens) stay exact ties, as
 * in the by-definition reference. */
static float softmax(const float *z, int32_t n, float *p, float *ent) {
  float m = z[0];
  for (int32_t e = 1; e < n; ++e)
    if (z[e] > m) m = z[e];
  double sum = 0.0;
  for (int32_t e = 0; e < n; ++e) {
    p[e] = ref_expf(z[e] - m);
    sum += (double)p[e];
  }
  float h = 0.0f;
  for (int32_t e = 0; e < n; ++e) {
    p[e] = (float)((double)p[e] / sum);
    if (p[e] > 0.0f) h -= p[e] * ref_logf(p[e]);
  }
  *ent = h;
  return m + (float)log(sum);
}

/* Group-limited selection (2a/2b): keep[e] = 1 for the experts of the topk_group best groups.
 * Group score: sum of the top-2 key (2a; the one key when a group has one expert) or the
 * max key (2b). */
static void group_mask(const moeLayer *L, const float *key, int top2, uint8_t *keep,
                       moeCpuTokWork *w) {
  const int32_t E = L->E, G = L->cfg.n_group, gs = E / G;
  for (int32_t g = 0; g < G; ++g) {
    int64_t best[2];
    const int32_t nb = top2 && gs >= 2 ? 2 : 1;
    topk(key + (int64_t)g * gs, NULL, gs, nb, best, w);
    float s = key[(int64_t)g * gs + best[0]];
    if (nb == 2) s += key[(int64_t)g * gs + best[1]];
    w->gscore[g] = s;
  }
  int64_t gsel[4096];
  topk(w->gscore, NULL, G, L->cfg.topk_group, gsel, w);
  memset(keep, 0, (size_t)E);
  for (int32_t i = 0; i < L->cfg.topk_group; ++i) memset(keep + gsel[i] * gs, 1, (size_t)gs);
}

/* One token: z [E] logits in, p [E] = softmax(z) in; ids/wt [K] out. */
static void route_token(const moeLayer *L, const float *z, const float *p, int32_t *ids, float *wt,
                        moeCpuTokWork *w, uint8_t *keep) {
  const int32_t E = L->E, K = L->K, k = L->cfg.top_k;
  const float rsf = L->cfg.routed_scaling_factor;
  int64_t sel[4096];
  int32_t n = 0;
  for (int32_t j = 0; j < K; ++j) {
    ids[j] = -1;
    wt[j] = 0.0f;
  }
  switch (L->cfg.routing) {
    case moeRoutingTopKSoftmax: { /* 1a / 1c: softmax over the k selected logits */
      topk(z, NULL, E, k, sel, w);
      n = k;
      const float m = z[sel[0]];
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) sum += (wt[j] = ref_expf(z[sel[j]] - m));
      for (int32_t j = 0; j < n; ++j) wt[j] = wt[j] / sum;
      break;
    }
    case moeRoutingSoftmaxTopK: { /* 1b / 1d */
      topk(p, NULL, E, k, sel, w);
      n = k;
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) sum += (wt[j] = p[sel[j]]);
      if (L->cfg.norm_topk_prob)
        for (int32_t j = 0; j < n; ++j) wt[j] = wt[j] / sum;
      break;
    }
    case moeRoutingSigmoidGroupTopK: {       /* 2a: select on s + b, weigh with s */
      float *s = w->key + E, *ssel = w->key; /* key holds 2E floats */
      for (int32_t e = 0; e < E; ++e) {
        s[e] = sigmoid(z[e]);
        ssel[e] = s[e] + L->selection_bias[e];
      }
      group_mask(L, ssel, 1, keep, w);
      topk(ssel, keep, E, k, sel, w);
      n = k;
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) sum += (wt[j] = s[sel[j]]);
      if (L->cfg.norm_topk_prob)
        for (int32_t j = 0; j < n; ++j) wt[j] = wt[j] / (sum + 1e-20f);
      break;
    }
    case moeRoutingSoftmaxGroupTopK: { /* 2b */
      group_mask(L, p, 0, keep, w);
      topk(p, keep, E, k, sel, w);
      n = k;
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) sum += (wt[j] = p[sel[j]]);
      if (L->cfg.norm_topk_prob)
        for (int32_t j = 0; j < n; ++j) wt[j] = wt[j] / (sum + 1e-20f);
      break;
    }
    case moeRoutingSigmoidTop1InputScale: /* 1e: the weight is the input scale */
      topk(z, NULL, E, k, sel, w);
      n = k;
      for (int32_t j = 0; j < n; ++j) wt[j] = sigmoid(z[sel[j]]);
      break;
    case moeRoutingTopP: { /* [3]: up to and including the first cumulative sum > threshold */
      topk(p, NULL, E, K, sel, w);
      const float thr = L->cfg.top_p_threshold;
      float cum = 0.0f;
      for (n = 0; n < K;) {
        cum += p[sel[n]];
        wt[n] = p[sel[n]];
        ++n;
        if (thr < 1.0f && cum > thr) break;
      }
      break;
    }
    case moeRoutingDense:
      for (int32_t j = 0; j < E; ++j) {
        ids[j] = j;
        wt[j] = p[j] * rsf;
      }
      return;
    default:
      return; /* expert choice: batch-wide, see moe_cpu_expert_choice */
  }
  for (int32_t j = 0; j < n; ++j) {
    ids[j] = (int32_t)sel[j];
    wt[j] *= rsf;
  }
}

/* Bytes of one thread's buffers: ROWS_BLOCK x rows, idx/tmp [E] int64, key [2E], gscore [E],
 * keep [E]; each a multiple of MOE_CPU_ALIGN, so consecutive threads stay aligned. */
static size_t route_per_thread(const moeLayer *L) {
  const uint64_t E = (uint64_t)L->E;
  size_t per = moe_cpu_bytes((uint64_t)ROWS_BLOCK * (uint64_t)L->Hr, 4);
  per = moe_cpu_add(per, moe_cpu_mul(moe_cpu_bytes(E, 8), 2));
  per = moe_cpu_add(per, moe_cpu_bytes(2 * E, 4) + moe_cpu_bytes(E, 4));
  return moe_cpu_add(per, moe_cpu_bytes(E, 1));
}

size_t moe_cpu_route_scratch(const moeLayer *L, int64_t T) {
  const int64_t E = L->E, K = L->K, nth = moe_cpu_threads(L);
  const int64_t n = T * K > T ? T * K : T;
  size_t b =
      moe_cpu_mul(moe_cpu_bytes((uint64_t)T * (uint64_t)E, 4), 2);   /* logits, probabilities */
  b = moe_cpu_add(b, moe_cpu_mul(moe_cpu_bytes((uint64_t)T, 4), 2)); /* lse, entropy */
  b = moe_cpu_add(b, moe_cpu_mul(moe_cpu_bytes((uint64_t)n, 8), 2)); /* order, tmp */
  b = moe_cpu_add(
      b, moe_cpu_mul(moe_cpu_bytes((uint64_t)E + 1, 8), 4)); /* kept, dropped, start, psum */
  b = moe_cpu_add(b, moe_cpu_mul(route_per_thread(L), (size_t)nth));
  return moe_cpu_add(b, 16 * MOE_CPU_ALIGN);
}

static void zero_stats(const moeLayer *L, const moeRouterStats_t *st) {
  if (!st) return;
  for (int32_t e = 0; e < L->E; ++e) {
    if (st->expert_counts) st->expert_counts[e] = 0;
    if (st->dropped_counts) st->dropped_counts[e] = 0;
    if (st->expert_prob_mean) st->expert_prob_mean[e] = 0.0f;
  }
  if (st->scalars)
    for (int i = 0; i < moeStatScalarCount; ++i) st->scalars[i] = 0.0f;
}

moeStatus_t moe_cpu_route(const moeLayer *L, const moeRouteArgs *a, moeScratch scratch,
                          moeStream_t stream) {
  const int64_t T = a->T, E = L->E, K = L->K, Hr = L->Hr;
  if (E > 4096) /* per-token selections live in fixed [4096] arrays (moe.h: E <= 4096) */
    return moe_error(moeErrorNotSupported, "route: num_experts = %lld exceeds the CPU limit 4096",
                     (long long)E);
  if (T <= 0) {
    zero_stats(L, a->stats);
    return moeSuccess;
  }
  const int64_t n = T * K > T ? T * K : T;
  moeCpuArena ar = moe_cpu_arena(scratch);
  float *Z = moe_cpu_take(&ar, (uint64_t)T * (uint64_t)E, 4);
  float *P = moe_cpu_take(&ar, (uint64_t)T * (uint64_t)E, 4);
  float *lse = moe_cpu_take(&ar, (uint64_t)T, 4);
  float *ent = moe_cpu_take(&ar, (uint64_t)T, 4);
  moeCpuRouteWork wk = {
      moe_cpu_take(&ar, (uint64_t)E + 1, 8), moe_cpu_take(&ar, (uint64_t)E + 1, 8),
      moe_cpu_take(&ar, (uint64_t)n, 8),     moe_cpu_take(&ar, (uint64_t)n, 8),
      moe_cpu_take(&ar, (uint64_t)E + 1, 8), moe_cpu_take(&ar, (uint64_t)E + 1, 8)};
  if (!Z || !P || !lse || !ent || !wk.kept || !wk.dropped || !wk.order || !wk.tmp || !wk.start ||
      !wk.psum)
    return moe_error(moeErrorInvalidArgument,
                     "route: scratch of %zu bytes is too small for T = %lld (needs %zu)",
                     scratch.bytes, (long long)T, moe_cpu_route_scratch(L, T));
  /* per-thread buffers: as many threads as fit */
  const size_t per = route_per_thread(L);
  const size_t pad =
      (MOE_CPU_ALIGN - ((uintptr_t)(ar.base + ar.used) % MOE_CPU_ALIGN)) % MOE_CPU_ALIGN;
  const size_t left = ar.bytes - ar.used > pad ? ar.bytes - ar.used - pad : 0;
  int nth = moe_cpu_threads(L);
  if ((size_t)nth > left / per) nth = (int)(left / per);
  if (nth < 1)
    return moe_error(moeErrorInvalidArgument,
                     "route: scratch of %zu bytes is too small for T = %lld (needs %zu)",
                     scratch.bytes, (long long)T, moe_cpu_route_scratch(L, T));
  char *tbase = ar.base + ar.used + pad;
  const int64_t eb = Hr >= 32768 / 4 ? 4 : 32768 / Hr; /* router rows per block: ~128 KiB */

#pragma omp parallel num_threads(nth) if (T * E * Hr >= MOE_CPU_PAR_MIN)
  {
    moeCpuArena mine = {tbase + (size_t)omp_get_thread_num() * per, per, 0};
    float *xb = moe_cpu_take(&mine, (uint64_t)ROWS_BLOCK * (uint64_t)Hr, 4);
    moeCpuTokWork w = {moe_cpu_take(&mine, (uint64_t)E, 8), moe_cpu_take(&mine, (uint64_t)E, 8),
                       moe_cpu_take(&mine, 2 * (uint64_t)E, 4),
                       moe_cpu_take(&mine, (uint64_t)E, 4)};
    uint8_t *keep = moe_cpu_take(&mine, (uint64_t)E, 1);
    /* z = x Wr^T (+ br): each logit is one canonical dot */
#pragma omp for schedule(static)
    for (int64_t t0 = 0; t0 < T; t0 += ROWS_BLOCK) {
      const int64_t rb = T - t0 < ROWS_BLOCK ? T - t0 : ROWS_BLOCK;
      moe_cpu_rows_to_f32(xb, a->x, L->cfg.dtype, t0, rb, Hr);
      for (int64_t e0 = 0; e0 < E; e0 += eb) /* a block of router rows stays in L2 */
        moe_cpu_gemm_nt(xb, Hr, rb, L->router_weight + e0 * Hr, Hr, E - e0 < eb ? E - e0 : eb, Hr,
                        Z + t0 * E + e0, E);
      if (L->router_bias)
        for (int64_t r = 0; r < rb; ++r)
          for (int64_t e = 0; e < E; ++e) Z[(t0 + r) * E + e] += L->router_bias[e];
    }
    /* implicit barrier: every logit is ready */
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      lse[t] = softmax(Z + t * E, (int32_t)E, P + t * E, &ent[t]);
      route_token(L, Z + t * E, P + t * E, a->expert_ids + t * K, a->weights + t * K, &w, keep);
    }
  }

  if (L->cfg.routing == moeRoutingExpertChoice)
    moe_cpu_expert_choice(L, T, P, a->expert_ids, a->weights, &wk);
  else if (L->cfg.routing != moeRoutingDense)
    moe_cpu_apply_capacity(L, T, a->expert_ids, a->weights, &wk);
  else
    for (int64_t e = 0; e < E; ++e) wk.dropped[e] = 0;
  if (a->stats) {
    moe_cpu_count_kept(L, T, a->expert_ids, &wk);
    moe_cpu_write_stats(L, T, a->stats, P, lse, ent, &wk);
  }
  return moeSuccess;
}
