/* moe-bench: deterministic random weights and tokens, uploaded through the public API. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

void bench_dims(const moeLayerConfig_t *cfg, benchDims *d) {
  d->H = cfg->hidden;
  d->heads = cfg->num_heads > 1 ? cfg->num_heads : 1;
  d->Hr = cfg->hidden / d->heads;
  d->I = cfg->intermediate;
  d->Is = cfg->shared_intermediate > 0 ? cfg->shared_intermediate : cfg->intermediate;
  d->E = cfg->num_experts;
  d->S = cfg->num_shared_experts;
  d->gated = cfg->activation == moeActivationSwiGLU || cfg->activation == moeActivationSwiGLUClamped;
  d->GI = d->gated ? 2 * d->I : d->I;
  d->GIs = d->gated ? 2 * d->Is : d->Is;
}

size_t bench_tensor_numel(const benchDims *d, benchTensor t) {
  switch (t) {
    case BENCH_T_ROUTER_W: return (size_t)d->E * (size_t)d->Hr;
    case BENCH_T_ROUTER_B:
    case BENCH_T_SELECTION_BIAS: return (size_t)d->E;
    case BENCH_T_GATE_UP: return (size_t)d->GI * (size_t)d->Hr;
    case BENCH_T_DOWN: return (size_t)d->Hr * (size_t)d->I;
    case BENCH_T_GATE_UP_BIAS: return (size_t)d->GI;
    case BENCH_T_DOWN_BIAS: return (size_t)d->Hr;
    case BENCH_T_SHARED_GATE_UP: return (size_t)d->GIs * (size_t)d->H;
    case BENCH_T_SHARED_DOWN: return (size_t)d->H * (size_t)d->Is;
    case BENCH_T_HEAD:
    case BENCH_T_MERGE: return (size_t)d->H * (size_t)d->H;
    default: return 0;
  }
}

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1) from a stateless hash of (key, i): any element can be made alone, and
 * the loop parallelizes. */
static inline float uniform_pm1(uint64_t key, uint64_t i) {
  uint64_t r = mix64(key + i * 0x9e3779b97f4a7c15ull);
  return (float)((double)(r >> 40) * (1.0 / 8388608.0) - 1.0);
}

/* Amplitude a of U(-a, a) per tensor: the router's logits get a standard deviation of about 2
 * on tokens U(-1, 1) (so routing is neither uniform nor one-hot), projections keep activations
 * O(1), biases are small. */
static float amplitude(const benchDims *d, benchTensor t) {
  switch (t) {
    case BENCH_T_ROUTER_W: return 6.0f / sqrtf((float)d->Hr);
    case BENCH_T_ROUTER_B: return 0.5f;
    case BENCH_T_SELECTION_BIAS: return 0.05f;
    case BENCH_T_GATE_UP: return 3.0f / sqrtf((float)d->Hr);
    case BENCH_T_DOWN: return 1.7320508f / sqrtf((float)d->I);
    case BENCH_T_GATE_UP_BIAS:
    case BENCH_T_DOWN_BIAS: return 0.1f;
    case BENCH_T_SHARED_GATE_UP: return 3.0f / sqrtf((float)d->H);
    case BENCH_T_SHARED_DOWN: return 1.7320508f / sqrtf((float)d->Is);
    case BENCH_T_HEAD:
    case BENCH_T_MERGE: return 1.7320508f / sqrtf((float)d->H);
    default: return 1.0f;
  }
}

static int is_vector(benchTensor t) {
  return t == BENCH_T_ROUTER_W || t == BENCH_T_ROUTER_B || t == BENCH_T_SELECTION_BIAS ||
         t == BENCH_T_GATE_UP_BIAS || t == BENCH_T_DOWN_BIAS;
}

void bench_gen_tensor(const moeLayerConfig_t *cfg, uint64_t seed, benchTensor t, int32_t index,
                      float *f32, void *bytes) {
  benchDims d;
  bench_dims(cfg, &d);
  const int64_t n = (int64_t)bench_tensor_numel(&d, t);
  const float a = amplitude(&d, t);
  const uint64_t key = mix64(seed ^ mix64(((uint64_t)t << 32) ^ (uint64_t)(uint32_t)index));
  /* The router weight and the biases are stored fp32 by the library: no rounding. */
  const moeDtype_t dt = is_vector(t) ? moeFloat32 : cfg->dtype;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float v = bench_round_to(a * uniform_pm1(key, (uint64_t)i), dt);
    if (f32) f32[i] = v;
    if (bytes) bench_store(bytes, dt, (size_t)i, v);
  }
}

void bench_make_tokens(int64_t T, int64_t H, moeDtype_t dtype, uint64_t seed, float *x_f32,
                       void *x_bytes) {
  const uint64_t key = mix64(seed ^ 0x746f6b656e73ull);
  const int64_t n = T * H;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float v = bench_round_to(uniform_pm1(key, (uint64_t)i), dtype);
    if (x_f32) x_f32[i] = v;
    if (x_bytes) bench_store(x_bytes, dtype, (size_t)i, v);
  }
}

moeStatus_t bench_upload_weights(moeLayer_t layer, const moeLayerConfig_t *cfg, uint64_t seed,
                                 int router_bias) {
  benchDims d;
  bench_dims(cfg, &d);
  const size_t es = bench_dtype_size(cfg->dtype);
  moeStatus_t st;

  /* Router (fp32), its optional bias, the selection bias of the sigmoid-group family. */
  float *rw = bench_xmalloc(bench_tensor_numel(&d, BENCH_T_ROUTER_W) * sizeof(float));
  float *rb = bench_xmalloc((size_t)d.E * sizeof(float));
  bench_gen_tensor(cfg, seed, BENCH_T_ROUTER_W, 0, rw, NULL);
  bench_gen_tensor(cfg, seed, BENCH_T_ROUTER_B, 0, rb, NULL);
  st = moeLayerSetRouterWeights(layer, rw, router_bias ? rb : NULL, moeFloat32);
  if (st == moeSuccess && cfg->routing == moeRoutingSigmoidGroupTopK) {
    bench_gen_tensor(cfg, seed, BENCH_T_SELECTION_BIAS, 0, rb, NULL);
    st = moeLayerSetSelectionBias(layer, rb);
  }
  free(rw);
  free(rb);
  if (st != moeSuccess) return st;

  /* Routed experts: stacked in one call when they fit in 1 GiB of host memory, else one expert
   * at a time (DeepSeek-V3 at full size is 22 GB in bf16). */
  const size_t ngu = bench_tensor_numel(&d, BENCH_T_GATE_UP), ndn = bench_tensor_numel(&d, BENCH_T_DOWN);
  const size_t per_expert = (ngu + ndn) * es;
  const int stacked = per_expert * (size_t)d.E <= ((size_t)1 << 30);
  if (stacked) {
    char *gu = bench_xmalloc(ngu * es * (size_t)d.E), *dn = bench_xmalloc(ndn * es * (size_t)d.E);
    for (int32_t e = 0; e < d.E; ++e) {
      bench_gen_tensor(cfg, seed, BENCH_T_GATE_UP, e, NULL, gu + (size_t)e * ngu * es);
      bench_gen_tensor(cfg, seed, BENCH_T_DOWN, e, NULL, dn + (size_t)e * ndn * es);
    }
    st = moeLayerSetExpertWeightsStacked(layer, gu, dn, cfg->dtype);
    free(gu);
    free(dn);
  } else {
    char *gu = bench_xmalloc(ngu * es), *dn = bench_xmalloc(ndn * es);
    for (int32_t e = 0; e < d.E && st == moeSuccess; ++e) {
      bench_gen_tensor(cfg, seed, BENCH_T_GATE_UP, e, NULL, gu);
      bench_gen_tensor(cfg, seed, BENCH_T_DOWN, e, NULL, dn);
      const char *gate = d.gated ? gu : NULL, *up = d.gated ? gu + (size_t)d.I * d.Hr * es : gu;
      st = moeLayerSetExpertWeights(layer, e, gate, up, dn, cfg->dtype);
    }
    free(gu);
    free(dn);
  }
  if (st != moeSuccess) return st;

  if (cfg->expert_bias) {
    float *bgu = bench_xmalloc((size_t)d.GI * sizeof(float)), *bdn = bench_xmalloc((size_t)d.Hr * sizeof(float));
    for (int32_t e = 0; e < d.E && st == moeSuccess; ++e) {
      bench_gen_tensor(cfg, seed, BENCH_T_GATE_UP_BIAS, e, bgu, NULL);
      bench_gen_tensor(cfg, seed, BENCH_T_DOWN_BIAS, e, bdn, NULL);
      st = moeLayerSetExpertBiases(layer, e, bgu, bdn, moeFloat32);
    }
    free(bgu);
    free(bdn);
    if (st != moeSuccess) return st;
  }

  if (d.S > 0) {
    const size_t nsgu = bench_tensor_numel(&d, BENCH_T_SHARED_GATE_UP);
    const size_t nsdn = bench_tensor_numel(&d, BENCH_T_SHARED_DOWN);
    char *gu = bench_xmalloc(nsgu * es), *dn = bench_xmalloc(nsdn * es);
    for (int32_t s = 0; s < d.S && st == moeSuccess; ++s) {
      bench_gen_tensor(cfg, seed, BENCH_T_SHARED_GATE_UP, s, NULL, gu);
      bench_gen_tensor(cfg, seed, BENCH_T_SHARED_DOWN, s, NULL, dn);
      const char *gate = d.gated ? gu : NULL, *up = d.gated ? gu + (size_t)d.Is * d.H * es : gu;
      st = moeLayerSetSharedExpertWeights(layer, s, gate, up, dn, cfg->dtype);
    }
    free(gu);
    free(dn);
    if (st != moeSuccess) return st;
  }

  if (d.heads > 1) {
    const size_t nh = bench_tensor_numel(&d, BENCH_T_HEAD);
    char *head = bench_xmalloc(nh * es), *merge = bench_xmalloc(nh * es);
    bench_gen_tensor(cfg, seed, BENCH_T_HEAD, 0, NULL, head);
    bench_gen_tensor(cfg, seed, BENCH_T_MERGE, 0, NULL, merge);
    st = moeLayerSetHeadWeights(layer, head, NULL, merge, NULL, cfg->dtype);
    free(head);
    free(merge);
  }
  return st;
}
