/* EP layer lifetime: collective create (config hash + status agreement), destroy, getters and
 * the workspace plan. The forward lives in ep_forward.c. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/status.h"
#include "ep/ep_layer.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ep_layout.h"
#endif

int moe_ep_enter_device(moeContext_t ctx) {
#ifdef MOE_WITH_CUDA
  int previous = -1;
  if (ctx && ctx->backend == moeBackendCuda && ctx->device >= 0 &&
      cudaGetDevice(&previous) == cudaSuccess && previous != ctx->device &&
      cudaSetDevice(ctx->device) == cudaSuccess)
    return previous;
#endif
  (void)ctx;
  return -1;
}

void moe_ep_leave_device(int previous) {
#ifdef MOE_WITH_CUDA
  if (previous >= 0) (void)cudaSetDevice(previous);
#endif
  (void)previous;
}

/* FNV-1a over the fields (not the bytes: padding is not part of a config). */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
#define HASH_FIELD(h, f) ((h) = fnv((h), &(f), sizeof(f)))

static int64_t config_hash(const moeLayerConfig_t *c, moeBackend_t backend, int P) {
  uint64_t h = 1469598103934665603ull;
  HASH_FIELD(h, c->hidden);
  HASH_FIELD(h, c->intermediate);
  HASH_FIELD(h, c->num_experts);
  HASH_FIELD(h, c->top_k);
  HASH_FIELD(h, c->routing);
  HASH_FIELD(h, c->norm_topk_prob);
  HASH_FIELD(h, c->n_group);
  HASH_FIELD(h, c->topk_group);
  HASH_FIELD(h, c->routed_scaling_factor);
  HASH_FIELD(h, c->top_p_threshold);
  HASH_FIELD(h, c->capacity_factor);
  HASH_FIELD(h, c->drop_policy);
  HASH_FIELD(h, c->num_heads);
  HASH_FIELD(h, c->activation);
  HASH_FIELD(h, c->swiglu_alpha);
  HASH_FIELD(h, c->swiglu_limit);
  HASH_FIELD(h, c->expert_bias);
  HASH_FIELD(h, c->dtype);
  HASH_FIELD(h, c->num_shared_experts);
  HASH_FIELD(h, c->shared_intermediate);
  HASH_FIELD(h, backend);
  HASH_FIELD(h, P);
  return (int64_t)(h >> 2); /* non-negative */
}

static moeStatus_t create_local(struct moeEpLayer_s *L, moeEpComm_t comm,
                                const moeLayerConfig_t *config) {
  MOE_TRY(moeLayerConfigValidate(config));
  const int P = comm->size;
  if (config->num_heads > 1)
    return moe_error(moeErrorNotSupported, "moeEpLayerCreate: num_heads = %d: multi-head MoE is "
                     "not supported with expert parallelism", config->num_heads);
  if (config->num_experts % P != 0)
    return moe_error(moeErrorInvalidConfig, "moeEpLayerCreate: num_experts E = %d is not "
                     "divisible by the EP size %d (experts are split in contiguous blocks of "
                     "E / EP per rank)", config->num_experts, P);
  L->P = P;
  L->rank = comm->rank;
  L->E = config->num_experts;
  L->E_per = L->E / P;
  MOE_TRY(moe_layer_create_local(&L->local, comm->ctx, config, comm->rank * L->E_per, L->E_per));
  L->K = L->local->K;
  L->S = L->local->S;
  L->H = L->local->H;
  L->es = moe_layer_elem_size(L->local);
  return moe_ep_layout_init(&L->layout, P, L->E, L->K);
}

static void free_layer(struct moeEpLayer_s *L) {
  if (!L) return;
  moeContext_t ctx = L->comm ? L->comm->ctx : NULL;
  if (L->local) moeLayerDestroy(L->local);
  for (int i = 0; i < 2; ++i)
    if (L->own_ws[i] && ctx) moe_backend_free(ctx, L->own_ws[i]);
  moe_ep_layout_free(&L->layout);
  free(L);
}

static moeStatus_t create_layer(moeEpLayer_t *layer, moeEpComm_t comm,
                                const moeLayerConfig_t *config,
                                const moeEpLayerConfig_t *ep_config) {
  /* Local part first; then every rank tells every other its status and config hash, so that
   * a failure or a differing config on any rank fails every rank (and nobody waits alone).
   * Only a NULL comm or layer keeps this rank out of the exchange. */
  moeEpLayerConfig_t epc = MOE_EP_LAYER_CONFIG_INIT;
  struct moeEpLayer_s *L = (struct moeEpLayer_s *)calloc(1, sizeof *L);
  moeStatus_t local = moeSuccess;
  if (!L)
    local = moe_error(moeErrorOutOfMemory, "moeEpLayerCreate: out of host memory");
  else if (!config)
    local = moe_error(moeErrorInvalidArgument, "moeEpLayerCreate: argument 'config' must not be NULL");
  else if (ep_config)
    local = moe_sized_in(&epc, ep_config,
                         offsetof(moeEpLayerConfig_t, collect_timings) + sizeof(int32_t),
                         sizeof(moeEpLayerConfig_t), "moeEpLayerConfig_t");
  char msg[512] = "";
  if (L && local == moeSuccess) {
    L->comm = comm;
    L->ep_cfg = epc;
    L->timings = (moeEpTimings_t)MOE_EP_TIMINGS_INIT;
    local = create_local(L, comm, config);
  }
  if (local != moeSuccess) snprintf(msg, sizeof msg, "%s", moeGetLastErrorMessage());
  const int P = comm->size;
  int64_t *buf = (int64_t *)malloc(4 * (size_t)P * sizeof(int64_t));
  if (!buf) { /* cannot take part: the peers would wait; nothing better to do than fail loudly */
    free_layer(L);
    return moe_error(moeErrorOutOfMemory, "moeEpLayerCreate: out of host memory (the other "
                     "ranks are left waiting in the config exchange)");
  }
  int64_t hash = config ? config_hash(config, comm->ctx->backend, P) : 0;
  for (int r = 0; r < P; ++r) {
    buf[2 * r] = (int64_t)local;
    buf[2 * r + 1] = hash;
  }
  comm->stream = NULL;
  moeStatus_t st = comm->ops->alltoall_i64(comm, buf, buf + 2 * P, 2);
  const int64_t *got = buf + 2 * P;
  if (st == moeSuccess && local != moeSuccess) {
    st = moe_error(local, "%s", msg);
  } else if (st == moeSuccess) {
    for (int r = 0; r < P && st == moeSuccess; ++r)
      if (got[2 * r] != moeSuccess)
        st = moe_error((moeStatus_t)got[2 * r], "moeEpLayerCreate failed on EP rank %d (%s); "
                       "no rank created its layer", r, moeGetErrorString((moeStatus_t)got[2 * r]));
    for (int r = 1; r < P && st == moeSuccess; ++r)
      if (got[2 * r + 1] != got[1])
        st = moe_error(moeErrorInvalidConfig, "moeEpLayerCreate: the layer configs differ across "
                       "the EP ranks: rank %d's config hash %llx differs from rank 0's %llx (every "
                       "field of moeLayerConfig_t, the backend and the EP size must agree; this "
                       "rank's is %llx)", r, (unsigned long long)got[2 * r + 1],
                       (unsigned long long)got[1], (unsigned long long)hash);
  }
  free(buf);
  if (st != moeSuccess) {
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", moeGetLastErrorMessage());
    free_layer(L); /* moeLayerDestroy clears the thread's message */
    return moe_error(st, "%s", keep);
  }
  *layer = L;
  return moeSuccess;
}

moeStatus_t moeEpLayerCreate(moeEpLayer_t *layer, moeEpComm_t comm, const moeLayerConfig_t *config,
                             const moeEpLayerConfig_t *ep_config) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  *layer = NULL;
  MOE_CHECK_NOT_NULL(comm);
  /* weights and the transport's buffers go to the context's device, not the thread's current */
  const int previous = moe_ep_enter_device(comm->ctx);
  const moeStatus_t st = create_layer(layer, comm, config, ep_config);
  moe_ep_leave_device(previous);
  return st;
}

moeStatus_t moeEpLayerDestroy(moeEpLayer_t layer) {
  moe_clear_error();
  free_layer(layer);
  return moeSuccess;
}

moeStatus_t moeEpLayerGetLocalLayer(moeEpLayer_t layer, moeLayer_t *local) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(local);
  *local = layer->local;
  return moeSuccess;
}

moeStatus_t moeEpLayerGetExpertRange(moeEpLayer_t layer, int32_t *expert_begin,
                                     int32_t *num_local) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  if (expert_begin) *expert_begin = layer->rank * layer->E_per;
  if (num_local) *num_local = layer->E_per;
  return moeSuccess;
}

moeStatus_t moeEpLayerGetTimings(moeEpLayer_t layer, moeEpTimings_t *timings) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(timings);
  return moe_sized_out(timings, &layer->timings, offsetof(moeEpTimings_t, layout_s),
                       sizeof(moeEpTimings_t), "moeEpTimings_t");
}

/* ---- workspace plan ------------------------------------------------------------------------ */
typedef struct {
  size_t off;
  int overflow;
} bump;

/* a * b, or 0 with the overflow flag set. */
static int64_t mul(bump *b, int64_t x, int64_t y) {
  int64_t r;
  if (x < 0 || y < 0 || __builtin_mul_overflow(x, y, &r)) {
    b->overflow = 1;
    return 0;
  }
  return r;
}

static size_t take(bump *b, int64_t count, size_t elem) {
  size_t at = (b->off + 255) & ~(size_t)255;
  if (count < 0 || (elem && (uint64_t)count > (SIZE_MAX / 4) / elem)) {
    b->overflow = 1;
    return at;
  }
  b->off = at + (size_t)count * elem;
  if (b->off > SIZE_MAX / 4) b->overflow = 1;
  return at;
}

/* Scratch of the local layer's stages for T (sub-)tokens: the stages called alone take only
 * their scratch from the workspace (every other buffer is planned here), so this is not
 * moeLayerGetWorkspaceSize, which would also reserve a whole forward's ids, pairs and
 * expert_out a second time. */
static size_t stage_scratch(bump *b, const struct moeEpLayer_s *L, int64_t T) {
  if (T == 0) return take(b, 0, 1);
  const size_t sb = L->comm->ctx->ops->scratch_bytes(L->local, T);
  if (sb == SIZE_MAX || sb > (size_t)INT64_MAX) {
    b->overflow = 1;
    return take(b, 0, 1);
  }
  return take(b, (int64_t)sb, 1);
}

/* CUB's temporary storage for the device layout's scans; the host driver needs none. */
static size_t layout_scan_bytes(const struct moeEpLayer_s *L, int64_t T) {
#ifdef MOE_WITH_CUDA
  if (T > 0 && L->comm->ctx->backend == moeBackendCuda) return moe_ep_layout_scan_bytes_cuda(L->P, T);
#endif
  (void)L;
  (void)T;
  return 0;
}

moeStatus_t moe_ep_plan_a(const struct moeEpLayer_s *L, int64_t T, moeEpWsPlan *p) {
  bump b = {0, 0};
  const int64_t K = L->K, H = L->H;
  const int64_t S = mul(&b, T, K < L->P ? K : L->P); /* upper bound of rows sent */
  p->ids = take(&b, mul(&b, T, K), 4);
  p->weights = take(&b, mul(&b, T, K), 4);
  p->shared_out = take(&b, L->S > 0 ? mul(&b, T, H) : 0, L->es);
  p->send_x = take(&b, mul(&b, S, H), L->es);
  p->send_ids = take(&b, mul(&b, S, K), 4);
  p->send_w = take(&b, mul(&b, S, K), 4);
  p->send_token = take(&b, S, 8);
  p->tok_ptr = take(&b, T + 1, 8);
  p->tok_rows = take(&b, S, 8);
  p->pos = take(&b, T > 0 ? mul(&b, L->P, T) + 1 : 0, 8);
  p->summary = take(&b, (int64_t)L->P + 2, 8);
  p->scan_bytes = layout_scan_bytes(L, T);
  p->scan = take(&b, (int64_t)p->scan_bytes, 1);
  p->back = take(&b, mul(&b, S, H), L->es);
  p->stage_a = stage_scratch(&b, L, T);
  p->bytes_a = take(&b, 0, 1);
  if (b.overflow)
    return moe_error(moeErrorInvalidArgument, "EP workspace for %lld tokens overflows", (long long)T);
  return moeSuccess;
}

moeStatus_t moe_ep_plan_b(const struct moeEpLayer_s *L, int64_t R, moeEpWsPlan *p) {
  bump b = {0, 0};
  const int64_t K = L->K, H = L->H;
  p->recv_x = take(&b, mul(&b, R, H), L->es);
  p->recv_ids = take(&b, mul(&b, R, K), 4);
  p->recv_w = take(&b, mul(&b, R, K), 4);
  p->offsets = take(&b, (int64_t)L->E_per + 1, 8);
  p->sorted_pairs = take(&b, mul(&b, R, K), 8);
  p->pair_rows = take(&b, mul(&b, R, K), 8);
  p->expert_out = take(&b, mul(&b, mul(&b, R, K), H), L->es);
  p->partial = take(&b, mul(&b, R, H), L->es);
  p->stage_b = stage_scratch(&b, L, R);
  p->bytes_b = take(&b, 0, 1);
  if (b.overflow)
    return moe_error(moeErrorInvalidArgument, "EP workspace for %lld received tokens overflows",
                     (long long)R);
  return moeSuccess;
}

moeStatus_t moeEpLayerGetWorkspaceSize(moeEpLayer_t layer, int64_t max_tokens_per_rank,
                                       size_t *bytes) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(layer);
  MOE_CHECK_NOT_NULL(bytes);
  if (max_tokens_per_rank < 0 || max_tokens_per_rank > (INT64_MAX / 4096) / layer->P)
    return moe_error(moeErrorInvalidArgument, "moeEpLayerGetWorkspaceSize: max_tokens_per_rank = "
                     "%lld out of range", (long long)max_tokens_per_rank);
  moeEpWsPlan p;
  MOE_TRY(moe_ep_plan_a(layer, max_tokens_per_rank, &p));
  MOE_TRY(moe_ep_plan_b(layer, max_tokens_per_rank * layer->P, &p));
  size_t a = (p.bytes_a + 255) & ~(size_t)255;
  if (a + p.bytes_b < a)
    return moe_error(moeErrorInvalidArgument, "moeEpLayerGetWorkspaceSize: overflow");
  *bytes = a + p.bytes_b;
  return moeSuccess;
}
