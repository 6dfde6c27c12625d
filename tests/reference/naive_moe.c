/* The naive MoE layer: docs/ROUTING.md computed straight from its definitions, in double, one
 * token and one selected expert at a time. Independent of csrc/ on purpose (it only shares the
 * public header), so that it can judge the library. Slow on purpose. */
#include "naive_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- storage rounding -------------------------------------------------------------------------
 * The layer stores activations between its projections in its dtype: the multi-head projection
 * x_hat = head x + b is such an activation, and the sub-tokens are routed on its stored value.
 * The reference rounds it the same way (written here, independent of csrc/), or a near-tie
 * flipped by rounding would decide the comparison rather than the layer's math. */
static double round_to_storage(double v, moeDtype_t dtype) {
  const float f = (float)v;
  if (dtype == moeFloat32 || f != f) return f;
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if (dtype == moeBFloat16) { /* keep 8 mantissa bits, round to nearest even */
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
  }
  /* f16: 11 significant bits, 2^-24 the smallest subnormal step, overflow past 65504 */
  const double a = fabs((double)f);
  if (a >= 65520.0) return f < 0 ? -INFINITY : INFINITY;
  int exp2;
  frexp(a, &exp2);                        /* a = m * 2^exp2, m in [0.5, 1) */
  const int e = exp2 - 1 < -14 ? -14 : exp2 - 1;
  const double step = ldexp(1.0, e - 10); /* spacing of f16 values near a */
  return nearbyint((double)f / step) * step; /* nearbyint: ties to even in the default mode */
}

/* ---- sizes ---------------------------------------------------------------------------------- */

static int is_gated(moeActivation_t a) {
  return a == moeActivationSwiGLU || a == moeActivationSwiGLUClamped;
}

static int64_t heads_of(const moeLayerConfig_t *c) { return c->num_heads > 1 ? c->num_heads : 1; }
static int64_t hr_of(const moeLayerConfig_t *c) { return c->hidden / heads_of(c); }
static int64_t is_of(const moeLayerConfig_t *c) {
  return c->shared_intermediate > 0 ? c->shared_intermediate : c->intermediate;
}

int32_t moe_naive_route_width(const moeLayerConfig_t *cfg) {
  if (cfg->routing == moeRoutingExpertChoice || cfg->routing == moeRoutingDense)
    return cfg->num_experts;
  return cfg->top_k;
}

/* Token-choice families: capacity (4b) applies to them. */
static int is_token_choice(moeRouting_t r) {
  return r != moeRoutingExpertChoice && r != moeRoutingDense;
}

/* ---- ordering: larger score first, then lower index; NaN never wins ------------------------- */

/* 1 if (sa, ia) ranks before (sb, ib). */
static int ranks_before(double sa, int64_t ia, double sb, int64_t ib) {
  int na = isnan(sa), nb = isnan(sb);
  if (na != nb) return nb; /* the non-NaN one ranks first */
  if (!na && sa != sb) return sa > sb;
  return ia < ib;
}

/* The n best of s[0..m) in rank order, into idx[0..n). O(m n), fine for a reference. */
static void top_n(const double *s, int64_t m, int64_t n, int64_t *idx, unsigned char *taken) {
  memset(taken, 0, (size_t)m);
  for (int64_t j = 0; j < n; ++j) {
    int64_t best = -1;
    for (int64_t i = 0; i < m; ++i) {
      if (taken[i]) continue;
      if (best < 0 || ranks_before(s[i], i, s[best], best)) best = i;
    }
    idx[j] = best;
    taken[best] = 1;
  }
}

typedef struct {
  double v;
  int64_t i;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
  const ranked *x = (const ranked *)a, *y = (const ranked *)b;
  if (ranks_before(x->v, x->i, y->v, y->i)) return -1;
  if (ranks_before(y->v, y->i, x->v, x->i)) return 1;
  return 0;
}

/* ---- small math ----------------------------------------------------------------------------- */

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

static void softmax(const double *z, int64_t n, double *p) {
  double m = -INFINITY;
  int nan = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (isnan(z[i])) nan = 1;
    else if (z[i] > m) m = z[i];
  }
  if (nan) {
    for (int64_t i = 0; i < n; ++i) p[i] = NAN;
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += (p[i] = exp(z[i] - m));
  for (int64_t i = 0; i < n; ++i) p[i] /= sum;
}

static double logsumexp(const double *z, int64_t n) {
  double m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (isnan(z[i])) return NAN;
    if (z[i] > m) m = z[i];
  }
  if (isinf(m)) return m;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += exp(z[i] - m);
  return m + log(sum);
}

/* ---- routing -------------------------------------------------------------------------------- */

/* Per-token selection for the token-choice families, dense gating and top-p. Writes the
 * selected experts in descending selection-score order into ids[0..K) (-1 past the count) and
 * their final weights (before capacity). z: the token's logits [E]. */
static void select_token(const moeNaiveLayer *L, const double *z, int32_t *ids, double *w,
                         double *sc /* [3E] scratch */, int64_t *idx, unsigned char *taken) {
  const moeLayerConfig_t *c = &L->cfg;
  const int64_t E = c->num_experts, K = moe_naive_route_width(c);
  double *p = sc, *sel = sc + E, *tmp = sc + 2 * E;
  int64_t n = K; /* experts selected */
  for (int64_t j = 0; j < K; ++j) ids[j] = -1, w[j] = 0.0;

  switch (c->routing) {
    case moeRoutingTopKSoftmax: {
      top_n(z, E, K, idx, taken);
      double m = z[idx[0]], sum = 0.0;
      for (int64_t j = 0; j < K; ++j) sum += (w[j] = exp(z[idx[j]] - m));
      for (int64_t j = 0; j < K; ++j) w[j] /= sum;
      break;
    }
    case moeRoutingSoftmaxTopK:
    case moeRoutingDense: {
      softmax(z, E, p);
      top_n(p, E, K, idx, taken);
      double sum = 0.0;
      for (int64_t j = 0; j < K; ++j) sum += (w[j] = p[idx[j]]);
      if (c->routing == moeRoutingSoftmaxTopK && c->norm_topk_prob)
        for (int64_t j = 0; j < K; ++j) w[j] /= sum;
      break;
    }
    case moeRoutingSigmoidGroupTopK:
    case moeRoutingSoftmaxGroupTopK: {
      const int sig = c->routing == moeRoutingSigmoidGroupTopK;
      const int64_t G = c->n_group > 0 ? c->n_group : 1, gs = E / G;
      if (sig) {
        for (int64_t e = 0; e < E; ++e) {
          p[e] = sigmoid(z[e]);
          sel[e] = p[e] + (L->selection_bias ? (double)L->selection_bias[e] : 0.0);
        }
      } else {
        softmax(z, E, p);
        for (int64_t e = 0; e < E; ++e) sel[e] = p[e];
      }
      /* Group scores: sum of the top-2 s_sel (2a) or the max p (2b). */
      for (int64_t g = 0; g < G; ++g) {
        const double *s = sel + g * gs;
        int64_t two[2];
        int64_t take = sig ? (gs < 2 ? gs : 2) : 1;
        top_n(s, gs, take, two, taken);
        tmp[g] = 0.0;
        for (int64_t j = 0; j < take; ++j) tmp[g] += s[two[j]];
      }
      int64_t kg = c->topk_group > 0 ? c->topk_group : 1;
      top_n(tmp, G, kg, idx, taken);
      unsigned char keep_buf[4096];
      memset(keep_buf, 0, sizeof keep_buf);
      for (int64_t j = 0; j < kg; ++j) keep_buf[idx[j]] = 1;
      for (int64_t e = 0; e < E; ++e)
        if (!keep_buf[e / gs]) sel[e] = -INFINITY;
      top_n(sel, E, K, idx, taken);
      double sum = 0.0;
      for (int64_t j = 0; j < K; ++j) sum += (w[j] = p[idx[j]]);
      if (c->norm_topk_prob)
        for (int64_t j = 0; j < K; ++j) w[j] /= (sum + 1e-20);
      break;
    }
    case moeRoutingSigmoidTop1InputScale: {
      top_n(z, E, K, idx, taken);
      for (int64_t j = 0; j < K; ++j) w[j] = sigmoid(z[idx[j]]);
      break;
    }
    case moeRoutingTopP: {
      softmax(z, E, p);
      int64_t *order = (int64_t *)malloc(sizeof(int64_t) * (size_t)E);
      unsigned char *tk = (unsigned char *)malloc((size_t)E);
      top_n(p, E, E, order, tk);
      int64_t cnt = E;
      if (c->top_p_threshold < 1.0f) {
        double cum = 0.0;
        for (int64_t j = 0; j < E; ++j) {
          cum += p[order[j]];
          if (cum > (double)c->top_p_threshold) {
            cnt = j + 1;
            break;
          }
        }
      }
      n = cnt < K ? cnt : K;
      for (int64_t j = 0; j < n; ++j) idx[j] = order[j], w[j] = p[order[j]];
      free(order);
      free(tk);
      break;
    }
    default: break;
  }
  for (int64_t j = 0; j < n; ++j) {
    ids[j] = (int32_t)idx[j];
    w[j] *= (double)c->routed_scaling_factor;
  }
}

static int route_d(const moeNaiveLayer *L, int64_t T, const double *x, int32_t *ids,
                   double *wts, moeNaiveStats *stats) {
  const moeLayerConfig_t *c = &L->cfg;
  if (c->num_experts < 1 || c->num_experts > 4096 || (int)c->routing < 0 ||
      c->routing >= moeRoutingCount)
    return -1;
  const int64_t E = c->num_experts, Hr = hr_of(c), K = moe_naive_route_width(c);
  if (K < 1 || K > E) return -1;
  double *Z = (double *)malloc(sizeof(double) * (size_t)(T * E + 1));
  double *P = (double *)malloc(sizeof(double) * (size_t)(T * E + 1));
  double *sc = (double *)malloc(sizeof(double) * (size_t)(3 * E));
  int64_t *idx = (int64_t *)malloc(sizeof(int64_t) * (size_t)E);
  unsigned char *taken = (unsigned char *)malloc((size_t)E);
  int64_t *cnt = (int64_t *)calloc((size_t)E, sizeof(int64_t));
  int64_t *drop = (int64_t *)calloc((size_t)E, sizeof(int64_t));
  ranked *rk = (ranked *)malloc(sizeof(ranked) * (size_t)(T * K + 1));
  int rc = 0;

  /* Logits and probabilities. */
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < E; ++e) {
      double acc = L->router_bias ? (double)L->router_bias[e] : 0.0;
      const float *wr = L->router_weight + e * Hr;
      for (int64_t i = 0; i < Hr; ++i) acc += (double)wr[i] * x[t * Hr + i];
      Z[t * E + e] = acc;
    }
    softmax(Z + t * E, E, P + t * E);
  }

  if (c->routing == moeRoutingExpertChoice) {
    /* 4c: C = floor(T * c / E); expert e takes its top-C tokens by P[:, e]; slot e of a token. */
    int64_t C = (int64_t)floor((double)T * (double)c->capacity_factor / (double)E);
    if (C > T || c->capacity_factor <= 0.0f) {
      rc = -1;
      goto done;
    }
    for (int64_t i = 0; i < T * K; ++i) ids[i] = -1, wts[i] = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t t = 0; t < T; ++t) rk[t].v = P[t * E + e], rk[t].i = t;
      qsort(rk, (size_t)T, sizeof(ranked), cmp_ranked);
      for (int64_t r = 0; r < C; ++r) {
        int64_t t = rk[r].i;
        ids[t * K + e] = (int32_t)e;
        wts[t * K + e] = P[t * E + e] * (double)c->routed_scaling_factor;
      }
    }
  } else {
    for (int64_t t = 0; t < T; ++t)
      select_token(L, Z + t * E, ids + t * K, wts + t * K, sc, idx, taken);
    if (c->capacity_factor > 0.0f && is_token_choice(c->routing)) {
      /* 4b: C = ceil(T * k / E * capacity_factor). */
      int64_t C = (int64_t)ceil((double)(T * K) / (double)E * (double)c->capacity_factor);
      if (c->drop_policy == moeDropByPosition) {
        /* Slot-major priority: every first choice (in token order) before any second one. */
        for (int64_t j = 0; j < K; ++j)
          for (int64_t t = 0; t < T; ++t) {
            int32_t e = ids[t * K + j];
            if (e < 0) continue;
            if (cnt[e] < C) cnt[e]++;
            else drop[e]++, ids[t * K + j] = -1, wts[t * K + j] = 0.0;
          }
      } else {
        /* Each expert keeps its C highest-weight selections; ties: lower pair index. */
        for (int64_t e = 0; e < E; ++e) {
          int64_t n = 0;
          for (int64_t q = 0; q < T * K; ++q)
            if (ids[q] == e) rk[n].v = wts[q], rk[n].i = q, n++;
          qsort(rk, (size_t)n, sizeof(ranked), cmp_ranked);
          for (int64_t r = C; r < n; ++r) {
            ids[rk[r].i] = -1, wts[rk[r].i] = 0.0;
            drop[e]++;
          }
        }
      }
    }
  }

  /* Statistics. */
  for (int64_t e = 0; e < E; ++e) cnt[e] = 0;
  int64_t kept = 0, dropped = 0;
  for (int64_t q = 0; q < T * K; ++q)
    if (ids[q] >= 0) cnt[ids[q]]++, kept++;
  for (int64_t e = 0; e < E; ++e) dropped += drop[e];
  if (stats) {
    double *pm = sc; /* [E] */
    for (int64_t e = 0; e < E; ++e) {
      pm[e] = 0.0;
      for (int64_t t = 0; t < T; ++t) pm[e] += P[t * E + e];
      pm[e] = T > 0 ? pm[e] / (double)T : 0.0;
    }
    if (stats->expert_counts)
      for (int64_t e = 0; e < E; ++e) stats->expert_counts[e] = cnt[e];
    if (stats->dropped_counts)
      for (int64_t e = 0; e < E; ++e) stats->dropped_counts[e] = drop[e];
    if (stats->expert_prob_mean)
      for (int64_t e = 0; e < E; ++e) stats->expert_prob_mean[e] = pm[e];
    for (int s = 0; s < moeStatScalarCount; ++s) stats->scalars[s] = 0.0;
    /* f_e = c_e / (T k) for the fixed-k token-choice families, c_e / kept otherwise. */
    int fixed_k = c->routing != moeRoutingTopP && is_token_choice(c->routing);
    double denom = fixed_k ? (double)(T * K) : (double)kept;
    double aux = 0.0;
    if (denom > 0)
      for (int64_t e = 0; e < E; ++e) aux += ((double)cnt[e] / denom) * pm[e];
    stats->scalars[moeStatAuxLoss] = (double)E * aux;
    double zl = 0.0, ent = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      double lse = logsumexp(Z + t * E, E);
      zl += lse * lse;
      double h = 0.0;
      for (int64_t e = 0; e < E; ++e) {
        double pe = P[t * E + e];
        if (pe > 0.0) h -= pe * log(pe);
      }
      ent += h;
    }
    if (T > 0) {
      stats->scalars[moeStatZLoss] = zl / (double)T;
      stats->scalars[moeStatEntropy] = ent / (double)T;
      stats->scalars[moeStatExpertsPerToken] = (double)kept / (double)T;
    }
    double mean = (double)kept / (double)E, mx = 0.0;
    for (int64_t e = 0; e < E; ++e)
      if ((double)cnt[e] > mx) mx = (double)cnt[e];
    stats->scalars[moeStatMaxViolation] = mean > 0.0 ? (mx - mean) / mean : 0.0;
    stats->scalars[moeStatDropped] = (double)dropped;
  }

done:
  free(Z), free(P), free(sc), free(idx), free(taken), free(cnt), free(drop), free(rk);
  return rc;
}

int moe_naive_route(const moeNaiveLayer *layer, int64_t T, const float *x, int32_t *expert_ids,
                    double *weights, moeNaiveStats *stats) {
  if (!layer || T < 0 || (T > 0 && (!x || !expert_ids || !weights))) return -1;
  const int64_t Hr = hr_of(&layer->cfg);
  double *xd = (double *)malloc(sizeof(double) * (size_t)(T * Hr + 1));
  for (int64_t i = 0; i < T * Hr; ++i) xd[i] = x[i];
  int rc = route_d(layer, T, xd, expert_ids, weights, stats);
  free(xd);
  return rc;
}

/* ---- expert FFN ----------------------------------------------------------------------------- */

static double activate(const moeLayerConfig_t *c, double g, double u) {
  switch (c->activation) {
    case moeActivationSwiGLU: return g * sigmoid(g) * u;
    case moeActivationSwiGLUClamped: {
      double lim = c->swiglu_limit;
      g = g < lim ? g : lim;
      u = u < -lim ? -lim : (u > lim ? lim : u);
      return (u + 1.0) * g * sigmoid((double)c->swiglu_alpha * g);
    }
    case moeActivationGELU: return 0.5 * u * (1.0 + erf(u / sqrt(2.0)));
    case moeActivationReLU: return u > 0.0 ? u : 0.0;
    case moeActivationSquaredReLU: return u > 0.0 ? u * u : 0.0;
    default: return NAN;
  }
}

void moe_naive_ffn(const moeNaiveLayer *layer, int32_t expert, const double *in, double *out) {
  const moeLayerConfig_t *c = &layer->cfg;
  const int gated = is_gated(c->activation);
  const int shared = expert < 0;
  const int64_t s = shared ? -1 - (int64_t)expert : expert;
  const int64_t W = shared ? c->hidden : hr_of(c);
  const int64_t I = shared ? is_of(c) : c->intermediate;
  const int64_t GI = gated ? 2 * I : I;
  const float *gu = (shared ? layer->shared_gate_up : layer->gate_up) + s * GI * W;
  const float *dn = (shared ? layer->shared_down : layer->down) + s * W * I;
  const float *bgu = (!shared && layer->gate_up_bias) ? layer->gate_up_bias + s * GI : NULL;
  const float *bdn = (!shared && layer->down_bias) ? layer->down_bias + s * W : NULL;
  double *h = (double *)malloc(sizeof(double) * (size_t)GI);
  for (int64_t r = 0; r < GI; ++r) {
    double acc = bgu ? (double)bgu[r] : 0.0;
    for (int64_t i = 0; i < W; ++i) acc += (double)gu[r * W + i] * in[i];
    h[r] = acc;
  }
  /* a[i] stored over h[i] (gate half) or h[i] (non-gated). */
  for (int64_t i = 0; i < I; ++i) h[i] = gated ? activate(c, h[i], h[I + i]) : activate(c, 0, h[i]);
  for (int64_t o = 0; o < W; ++o) {
    double acc = bdn ? (double)bdn[o] : 0.0;
    for (int64_t i = 0; i < I; ++i) acc += (double)dn[o * I + i] * h[i];
    out[o] = acc;
  }
  free(h);
}

/* ---- the whole layer ------------------------------------------------------------------------ */

int moe_naive_forward(const moeNaiveLayer *layer, int64_t T, const float *x, double *y,
                      moeNaiveStats *stats) {
  if (!layer || T < 0 || (T > 0 && (!x || !y))) return -1;
  const moeLayerConfig_t *c = &layer->cfg;
  const int64_t H = c->hidden, h = heads_of(c), Hr = hr_of(c), Tr = T * h;
  const int64_t K = moe_naive_route_width(c);
  if (H < 1 || Hr * h != H || K < 1) return -1;
  if (h > 1 && (!layer->head || !layer->merge)) return -1;

  /* Router tokens: x itself, or the multi-head sub-tokens of x_hat = head x + b. */
  double *xr = (double *)malloc(sizeof(double) * (size_t)(Tr * Hr + 1));
  for (int64_t t = 0; t < T; ++t) {
    const float *xt = x + t * H;
    for (int64_t o = 0; o < H; ++o) {
      if (h == 1) {
        xr[t * H + o] = xt[o];
        continue;
      }
      double acc = layer->head_bias ? (double)layer->head_bias[o] : 0.0;
      for (int64_t i = 0; i < H; ++i) acc += (double)layer->head[o * H + i] * xt[i];
      /* sub-token t*h + o/Hr, element o%Hr: the same memory; stored in the dtype as the layer does */
      xr[t * H + o] = round_to_storage(acc, c->dtype);
    }
  }
  int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(Tr * K + 1));
  double *w = (double *)malloc(sizeof(double) * (size_t)(Tr * K + 1));
  double *o = (double *)calloc((size_t)(Tr * Hr + 1), sizeof(double));
  double *in = (double *)malloc(sizeof(double) * (size_t)(H + 1));
  double *out = (double *)malloc(sizeof(double) * (size_t)(H + 1));
  int rc = route_d(layer, Tr, xr, ids, w, stats);
  if (rc == 0) {
    const int input_scale = c->routing == moeRoutingSigmoidTop1InputScale;
    for (int64_t t = 0; t < Tr; ++t) {
      for (int64_t j = 0; j < K; ++j) {
        int32_t e = ids[t * K + j];
        if (e < 0) continue;
        double a = input_scale ? w[t * K + j] : 1.0, b = input_scale ? 1.0 : w[t * K + j];
        for (int64_t i = 0; i < Hr; ++i) in[i] = a * xr[t * Hr + i];
        moe_naive_ffn(layer, e, in, out);
        for (int64_t i = 0; i < Hr; ++i) o[t * Hr + i] += b * out[i];
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      double *yt = y + t * H;
      for (int64_t r = 0; r < H; ++r) {
        if (h == 1) {
          yt[r] = o[t * H + r];
          continue;
        }
        double acc = layer->merge_bias ? (double)layer->merge_bias[r] : 0.0;
        for (int64_t i = 0; i < H; ++i) acc += (double)layer->merge[r * H + i] * o[t * H + i];
        yt[r] = acc;
      }
      for (int32_t s = 0; s < c->num_shared_experts; ++s) {
        for (int64_t i = 0; i < H; ++i) in[i] = x[t * H + i];
        moe_naive_ffn(layer, -1 - s, in, out);
        for (int64_t i = 0; i < H; ++i) yt[i] += out[i];
      }
    }
  }
  free(xr), free(ids), free(w), free(o), free(in), free(out);
  return rc;
}
