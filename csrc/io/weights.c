/* Reading one layer's weights under each naming scheme, relayout into libmoe's layout, and the
 * two sinks (a layer's setters; host fp32 arrays). See loader.h. */
#define _POSIX_C_SOURCE 200809L /* strdup, O_CLOEXEC, mmap */
#include "io/loader.h"

#ifdef MOE_WITH_CJSON

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/status.h"

/* ---- scratch: aligned copies and dtype conversions ----------------------------------------- */

typedef struct {
  void *raw, *conv;
  size_t raw_cap, conv_cap;
} slot;

enum { SLOT_GATE, SLOT_UP, SLOT_DOWN, SLOT_GATE_UP_BIAS, SLOT_DOWN_BIAS, SLOT_COUNT };

static moeStatus_t grow(void **p, size_t *cap, size_t bytes) {
  if (bytes <= *cap) return moeSuccess;
  void *n = realloc(*p, bytes ? bytes : 1);
  if (!n) return moe_error(moeErrorOutOfMemory, "out of memory (%zu bytes of scratch)", bytes);
  *p = n;
  *cap = bytes;
  return moeSuccess;
}

/* n elements at src (dtype sd, any alignment) as an aligned buffer of dtype want: src itself
 * when that already is one, else a copy or a conversion in the slot. */
static moeStatus_t as_dtype(slot *s, const void *src, moeDtype_t sd, size_t n, moeDtype_t want,
                            const void **out) {
  size_t es = moe_dtype_size(sd);
  if ((uintptr_t)src % es != 0) {
    MOE_TRY(grow(&s->raw, &s->raw_cap, n * es));
    memcpy(s->raw, src, n * es);
    src = s->raw;
  }
  if (sd == want) {
    *out = src;
    return moeSuccess;
  }
  MOE_TRY(grow(&s->conv, &s->conv_cap, n * moe_dtype_size(want)));
  moe_convert(s->conv, want, src, sd, n);
  *out = s->conv;
  return moeSuccess;
}

static const void *elem(const moe_st_tensor *t, uint64_t i) {
  return t->data + i * moe_dtype_size(t->dtype);
}

/* One dtype for tensors handed over in one call: theirs when they agree, else fp32. */
static moeDtype_t common(const moe_st_tensor *a, const moe_st_tensor *b, const moe_st_tensor *c) {
  if (a->dtype == b->dtype && (!c || c->dtype == a->dtype)) return a->dtype;
  return moeFloat32;
}

/* ---- the parts of a layer ------------------------------------------------------------------ */

static moeStatus_t load_router(moe_plan *p, const moe_sink *sink, void *user, slot *sl) {
  const int64_t E = p->hf.cfg.num_experts, H = p->hf.cfg.hidden;
  const int gpt = p->hf.family == MOE_FAMILY_GPT_OSS;
  const moe_st_tensor *w, *b = NULL;
  const void *wf, *bf = NULL;
  int64_t sw[2] = {E, H}, sb[1] = {E};
  MOE_TRY(moe_get(p, moe_tname(p, gpt ? "router.weight" : "gate.weight"), 2, sw, &w));
  if (p->hf.has_router_bias) MOE_TRY(moe_get(p, moe_tname(p, "router.bias"), 1, sb, &b));
  MOE_TRY(as_dtype(&sl[0], w->data, w->dtype, (size_t)(E * H), moeFloat32, &wf));
  if (b) MOE_TRY(as_dtype(&sl[1], b->data, b->dtype, (size_t)E, moeFloat32, &bf));
  MOE_TRY(sink->router(user, wf, bf));
  if (!p->hf.has_selection_bias) return moeSuccess;
  MOE_TRY(moe_get(p, moe_tname(p, "gate.e_score_correction_bias"), 1, sb, &b));
  MOE_TRY(as_dtype(&sl[1], b->data, b->dtype, (size_t)E, moeFloat32, &bf));
  return sink->selection_bias(user, bf);
}

/* gate [I,H], up [I,H], down [H,I] of one (routed or shared) expert held as three tensors. */
static moeStatus_t load_triplet(moe_plan *p, const moe_sink *sink, void *user, slot *sl,
                                int32_t id, int shared, const char *const names[3], int64_t I) {
  const int64_t H = p->hf.cfg.hidden;
  const int64_t s_in[2] = {I, H}, s_out[2] = {H, I};
  const moe_st_tensor *t[3];
  for (int j = 0; j < 3; ++j) {
    const char *n = shared ? moe_tname(p, "shared_experts.%s.weight", names[j])
                           : moe_tname(p, "experts.%d.%s.weight", id, names[j]);
    MOE_TRY(moe_get(p, n, 2, j == 2 ? s_out : s_in, &t[j]));
  }
  moeDtype_t dt = common(t[0], t[1], t[2]);
  const void *v[3];
  for (int j = 0; j < 3; ++j)
    MOE_TRY(as_dtype(&sl[j], t[j]->data, t[j]->dtype, (size_t)(I * H), dt, &v[j]));
  return shared ? sink->shared(user, id, v[0], v[1], v[2], dt)
                : sink->expert(user, id, v[0], v[1], v[2], dt);
}

/* transformers v5: gate_up [E, 2I, H] (gate rows first), down [E, H, I]: slices, no relayout. */
static moeStatus_t load_stacked(moe_plan *p, const moe_sink *sink, void *user, slot *sl) {
  const int64_t E = p->hf.cfg.num_experts, H = p->hf.cfg.hidden, I = p->hf.cfg.intermediate;
  const int64_t s_gu[3] = {E, 2 * I, H}, s_d[3] = {E, H, I};
  const moe_st_tensor *gu, *d;
  MOE_TRY(moe_get(p, moe_tname(p, "experts.gate_up_proj"), 3, s_gu, &gu));
  MOE_TRY(moe_get(p, moe_tname(p, "experts.down_proj"), 3, s_d, &d));
  const moeDtype_t dt = common(gu, d, NULL);
  const size_t n = (size_t)(I * H);
  for (int32_t e = p->begin; e < p->begin + p->count; ++e) { /* only the range is touched */
    const void *g, *u, *dn;
    MOE_TRY(as_dtype(&sl[SLOT_GATE], elem(gu, (uint64_t)e * 2 * n), gu->dtype, n, dt, &g));
    MOE_TRY(as_dtype(&sl[SLOT_UP], elem(gu, (uint64_t)e * 2 * n + n), gu->dtype, n, dt, &u));
    MOE_TRY(as_dtype(&sl[SLOT_DOWN], elem(d, (uint64_t)e * n), d->dtype, n, dt, &dn));
    MOE_TRY(sink->expert(user, e, g, u, dn, dt));
  }
  return moeSuccess;
}

/* dst[c * rows + r] = src[r * rs + c * cs] for elements of es bytes (any alignment): a strided
 * transpose in 64 x 64 tiles, each element copied by a constant-size memcpy (a plain load). */
#define GATHER_TRANSPOSE_BODY(ES)                                                           \
  for (int64_t r0 = 0; r0 < rows; r0 += 64)                                                 \
    for (int64_t c0 = 0; c0 < cols; c0 += 64) {                                             \
      const int64_t r1 = r0 + 64 < rows ? r0 + 64 : rows, c1 = c0 + 64 < cols ? c0 + 64 : cols; \
      for (int64_t r = r0; r < r1; ++r)                                                     \
        for (int64_t c = c0; c < c1; ++c)                                                   \
          memcpy(dst + (size_t)(c * rows + r) * (ES), src + (size_t)(r * rs + c * cs) * (ES), (ES)); \
    }
static void gather_transpose(uint8_t *dst, const uint8_t *src, size_t es, int64_t rows,
                             int64_t cols, int64_t rs, int64_t cs) {
  if (es == 2) {
    GATHER_TRANSPOSE_BODY(2)
  } else {
    GATHER_TRANSPOSE_BODY(4)
  }
}

/* gpt-oss: gate_up [E, H, 2I] with gate at even and up at odd columns, bias [E, 2I] likewise;
 * down [E, I, H], bias [E, H]. Transposed and de-interleaved into [I,H] x2, [H,I], [2I], [H]. */
static moeStatus_t load_gpt_oss(moe_plan *p, const moe_sink *sink, void *user, slot *sl) {
  const int64_t E = p->hf.cfg.num_experts, H = p->hf.cfg.hidden, I = p->hf.cfg.intermediate;
  const int64_t s_gu[3] = {E, H, 2 * I}, s_gub[2] = {E, 2 * I};
  const int64_t s_d[3] = {E, I, H}, s_db[2] = {E, H};
  const moe_st_tensor *gu, *gub, *d, *db;
  MOE_TRY(moe_get(p, moe_tname(p, "experts.gate_up_proj"), 3, s_gu, &gu));
  MOE_TRY(moe_get(p, moe_tname(p, "experts.gate_up_proj_bias"), 2, s_gub, &gub));
  MOE_TRY(moe_get(p, moe_tname(p, "experts.down_proj"), 3, s_d, &d));
  MOE_TRY(moe_get(p, moe_tname(p, "experts.down_proj_bias"), 2, s_db, &db));
  const size_t n = (size_t)(I * H), gs = moe_dtype_size(gu->dtype), ds = moe_dtype_size(d->dtype);
  const size_t bs = moe_dtype_size(gub->dtype);
  MOE_TRY(grow(&sl[SLOT_GATE].raw, &sl[SLOT_GATE].raw_cap, n * gs));
  MOE_TRY(grow(&sl[SLOT_UP].raw, &sl[SLOT_UP].raw_cap, n * gs));
  MOE_TRY(grow(&sl[SLOT_DOWN].raw, &sl[SLOT_DOWN].raw_cap, n * ds));
  MOE_TRY(grow(&sl[SLOT_GATE_UP_BIAS].raw, &sl[SLOT_GATE_UP_BIAS].raw_cap, (size_t)(2 * I) * bs));
  const moeDtype_t dt = common(gu, d, NULL), bdt = common(gub, db, NULL);
  for (int32_t e = p->begin; e < p->begin + p->count; ++e) {
    uint8_t *g = sl[SLOT_GATE].raw, *u = sl[SLOT_UP].raw, *dn = sl[SLOT_DOWN].raw;
    const uint8_t *src = elem(gu, (uint64_t)e * 2 * n);
    gather_transpose(g, src, gs, H, I, 2 * I, 2);      /* gate[i][h] = gu[h][2i] */
    gather_transpose(u, src + gs, gs, H, I, 2 * I, 2); /* up[i][h] = gu[h][2i + 1] */
    gather_transpose(dn, elem(d, (uint64_t)e * n), ds, I, H, H, 1); /* down[h][i] = d[i][h] */
    uint8_t *b = sl[SLOT_GATE_UP_BIAS].raw;
    src = elem(gub, (uint64_t)e * 2 * (uint64_t)I);
    for (int64_t i = 0; i < I; ++i) {
      memcpy(b + (size_t)i * bs, src + (size_t)(2 * i) * bs, bs);
      memcpy(b + (size_t)(I + i) * bs, src + (size_t)(2 * i + 1) * bs, bs);
    }
    const void *vg, *vu, *vd, *vb, *vdb;
    MOE_TRY(as_dtype(&sl[SLOT_GATE], g, gu->dtype, n, dt, &vg));
    MOE_TRY(as_dtype(&sl[SLOT_UP], u, gu->dtype, n, dt, &vu));
    MOE_TRY(as_dtype(&sl[SLOT_DOWN], dn, d->dtype, n, dt, &vd));
    MOE_TRY(sink->expert(user, e, vg, vu, vd, dt));
    MOE_TRY(as_dtype(&sl[SLOT_GATE_UP_BIAS], b, gub->dtype, (size_t)(2 * I), bdt, &vb));
    MOE_TRY(as_dtype(&sl[SLOT_DOWN_BIAS], elem(db, (uint64_t)e * (uint64_t)H), db->dtype,
                     (size_t)H, bdt, &vdb));
    MOE_TRY(sink->expert_bias(user, e, vb, vdb, bdt));
  }
  return moeSuccess;
}

static moeStatus_t load_all(moe_plan *p, const moe_sink *sink, void *user, slot *sl) {
  static const char *const w123[3] = {"w1", "w3", "w2"};
  static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
  MOE_TRY(load_router(p, sink, user, sl));
  switch (p->scheme) {
    case MOE_SCHEME_W123:
    case MOE_SCHEME_PROJ:
      for (int32_t e = p->begin; e < p->begin + p->count; ++e)
        MOE_TRY(load_triplet(p, sink, user, sl, e, 0, p->scheme == MOE_SCHEME_W123 ? w123 : proj,
                             p->hf.cfg.intermediate));
      break;
    case MOE_SCHEME_STACKED: MOE_TRY(load_stacked(p, sink, user, sl)); break;
    case MOE_SCHEME_GPT_OSS: MOE_TRY(load_gpt_oss(p, sink, user, sl)); break;
  }
  if (p->hf.cfg.num_shared_experts > 0)
    MOE_TRY(load_triplet(p, sink, user, sl, 0, 1, proj, p->hf.cfg.shared_intermediate));
  return moeSuccess;
}

moeStatus_t moe_load_weights(moe_plan *p, const moe_sink *sink, void *user) {
  slot sl[SLOT_COUNT];
  memset(sl, 0, sizeof sl);
  moeStatus_t st = load_all(p, sink, user, sl);
  for (int j = 0; j < SLOT_COUNT; ++j) {
    free(sl[j].raw);
    free(sl[j].conv);
  }
  return st;
}

/* ---- sink: the layer's public setters ------------------------------------------------------ */

static moeStatus_t layer_router(void *u, const float *w, const float *b) {
  return moeLayerSetRouterWeights((moeLayer_t)u, w, b, moeFloat32);
}
static moeStatus_t layer_selection_bias(void *u, const float *b) {
  return moeLayerSetSelectionBias((moeLayer_t)u, b);
}
static moeStatus_t layer_expert(void *u, int32_t e, const void *g, const void *up, const void *d,
                                moeDtype_t dt) {
  return moeLayerSetExpertWeights((moeLayer_t)u, e, g, up, d, dt);
}
static moeStatus_t layer_expert_bias(void *u, int32_t e, const void *gub, const void *db,
                                     moeDtype_t dt) {
  return moeLayerSetExpertBiases((moeLayer_t)u, e, gub, db, dt);
}
static moeStatus_t layer_shared(void *u, int32_t s, const void *g, const void *up, const void *d,
                                moeDtype_t dt) {
  return moeLayerSetSharedExpertWeights((moeLayer_t)u, s, g, up, d, dt);
}
const moe_sink moe_layer_sink = {layer_router, layer_selection_bias, layer_expert,
                                 layer_expert_bias, layer_shared};

/* ---- sink: host fp32 arrays, rounded to the layer's dtype ---------------------------------- */

static void put(float *dst, const void *src, moeDtype_t sd, size_t n, moeDtype_t round_to) {
  if (sd == round_to || round_to == moeFloat32) { /* exact: no rounding needed */
    moe_to_f32(dst, src, sd, n);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    float v = moe_load_f32(src, sd, i);
    if (round_to != moeFloat32) {
      uint32_t h; /* room for any dtype */
      moe_store_f32(&h, round_to, 0, v);
      v = moe_load_f32(&h, round_to, 0);
    }
    dst[i] = v;
  }
}

static moeStatus_t host_router(void *u, const float *w, const float *b) {
  moeCheckpointWeights_t *x = u;
  const size_t E = (size_t)x->config.num_experts, H = (size_t)x->config.hidden;
  memcpy(x->router_weight, w, E * H * sizeof(float));
  if (b && x->router_bias) memcpy(x->router_bias, b, E * sizeof(float));
  return moeSuccess;
}
static moeStatus_t host_selection_bias(void *u, const float *b) {
  moeCheckpointWeights_t *x = u;
  memcpy(x->selection_bias, b, (size_t)x->config.num_experts * sizeof(float));
  return moeSuccess;
}
static moeStatus_t host_expert(void *u, int32_t e, const void *g, const void *up, const void *d,
                               moeDtype_t dt) {
  moeCheckpointWeights_t *x = u;
  const size_t H = (size_t)x->config.hidden, I = (size_t)x->config.intermediate;
  const size_t l = (size_t)(e - x->expert_begin);
  put(x->gate_up + l * 2 * I * H, g, dt, I * H, x->config.dtype);
  put(x->gate_up + l * 2 * I * H + I * H, up, dt, I * H, x->config.dtype);
  put(x->down + l * H * I, d, dt, H * I, x->config.dtype);
  return moeSuccess;
}
static moeStatus_t host_expert_bias(void *u, int32_t e, const void *gub, const void *db,
                                    moeDtype_t dt) {
  moeCheckpointWeights_t *x = u;
  const size_t H = (size_t)x->config.hidden, I = (size_t)x->config.intermediate;
  const size_t l = (size_t)(e - x->expert_begin);
  put(x->gate_up_bias + l * 2 * I, gub, dt, 2 * I, moeFloat32); /* biases are stored fp32 */
  put(x->down_bias + l * H, db, dt, H, moeFloat32);
  return moeSuccess;
}
static moeStatus_t host_shared(void *u, int32_t s, const void *g, const void *up, const void *d,
                               moeDtype_t dt) {
  moeCheckpointWeights_t *x = u;
  const size_t H = (size_t)x->config.hidden, Is = (size_t)x->config.shared_intermediate;
  put(x->shared_gate_up + (size_t)s * 2 * Is * H, g, dt, Is * H, x->config.dtype);
  put(x->shared_gate_up + (size_t)s * 2 * Is * H + Is * H, up, dt, Is * H, x->config.dtype);
  put(x->shared_down + (size_t)s * H * Is, d, dt, H * Is, x->config.dtype);
  return moeSuccess;
}
const moe_sink moe_host_sink = {host_router, host_selection_bias, host_expert, host_expert_bias,
                                host_shared};

#else
typedef int moe_io_weights_needs_cjson; /* keeps the translation unit non-empty */
#endif /* MOE_WITH_CJSON */
