/* EP forward: route -> layout -> counts exchange -> dispatch -> local experts -> combine
 * exchange -> per-token sum in rank order (+ shared experts). Every step that could fail on one
 * rank only is followed by a collective agreement before the next data exchange, so a failure
 * anywhere makes every rank return an error and no rank waits for a message that never comes. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/status.h"
#include "ep/ep_layer.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime.h>

#include "ep_layout.h"
#include "ep_pack.h"
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
  struct moeEpLayer_s *L;
  moeContext_t ctx;
  moeStream_t stream;
  double t;
} clk;

/* Seconds since the last lap; with collect_timings the stream is drained first. */
static double lap(clk *c) {
  if (!c->L->ep_cfg.collect_timings) return 0.0;
  c->ctx->ops->synchronize(c->ctx, c->stream);
  double t = now_s(), d = t - c->t;
  c->t = t;
  return d;
}

#ifdef MOE_WITH_CUDA
static int on_gpu(moeContext_t ctx) { return ctx->backend == moeBackendCuda; }
#endif

static moeStatus_t gather_rows(moeContext_t ctx, void *dst, const void *src, const int64_t *idx,
                               int64_t n, size_t row_bytes, moeStream_t stream) {
#ifdef MOE_WITH_CUDA
  if (on_gpu(ctx)) {
    /* NULL means the context's stream, as for every stage (not the legacy stream) */
    int e = moe_ep_gather_rows_cuda(dst, src, idx, n, row_bytes,
                                    moe_stream_or_default(ctx, stream));
    return e ? moe_error(moeErrorCuda, "EP pack kernel launch failed (cudaError %d)", e) : moeSuccess;
  }
#endif
  moe_ep_gather_rows_host(dst, src, idx, n, row_bytes);
  return moeSuccess;
}

static moeStatus_t reduce_rows(moeContext_t ctx, void *y, const void *back, const void *shared,
                               const int64_t *tok_ptr, const int64_t *tok_rows, int64_t T,
                               int64_t H, moeDtype_t dtype, moeStream_t stream) {
#ifdef MOE_WITH_CUDA
  if (on_gpu(ctx)) {
    int e = moe_ep_reduce_rows_cuda(y, back, shared, tok_ptr, tok_rows, T, H, (int)dtype,
                                    moe_stream_or_default(ctx, stream));
    return e ? moe_error(moeErrorCuda, "EP unpack kernel launch failed (cudaError %d)", e)
             : moeSuccess;
  }
#endif
  moe_ep_reduce_rows_host(y, back, shared, tok_ptr, tok_rows, T, H, dtype);
  return moeSuccess;
}

/* Backend memory of one workspace phase: the caller's slice, or the layer's own (grown). */
static moeStatus_t phase_memory(struct moeEpLayer_s *L, int phase, size_t need, char *user_base,
                                size_t user_bytes, char **base) {
  moeContext_t ctx = L->comm->ctx;
  if (user_base) {
    if ((uintptr_t)user_base % 256 != 0)
      return moe_error(moeErrorInvalidArgument, "moeEpLayerForward: the workspace must be "
                       "256-byte aligned");
    if (need > user_bytes)
      return moe_error(moeErrorInvalidArgument, "moeEpLayerForward: the workspace is too small "
                       "on EP rank %d: %zu more bytes needed (size it with "
                       "moeEpLayerGetWorkspaceSize for the largest T of any rank)", L->rank,
                       need - user_bytes);
    *base = user_base;
    return moeSuccess;
  }
  if (need > L->own_ws_bytes[phase]) {
    if (L->own_ws[phase]) moe_backend_free(ctx, L->own_ws[phase]);
    L->own_ws[phase] = NULL;
    L->own_ws_bytes[phase] = 0;
    size_t grow = need + need / 4;
    MOE_TRY(moe_backend_alloc(ctx, grow, &L->own_ws[phase]));
    L->own_ws_bytes[phase] = grow;
  }
  *base = (char *)L->own_ws[phase];
  return moeSuccess;
}

/* The dispatch layout of this rank's T > 0 tokens into the workspace (phase A), by the host
 * driver on the CPU backend or the device driver on CUDA; then its summary on the host gives
 * the per-rank counts. The one host synchronization of an EP forward is here: NCCL's and MPI's
 * message sizes are host arguments. */
static moeStatus_t build_layout(struct moeEpLayer_s *L, int64_t T, const int32_t *ids,
                                const float *w, char *A, const moeEpWsPlan *p,
                                moeStream_t stream) {
  moeEpLayout *lay = &L->layout;
  moeEpLayoutArgs a;
  a.P = L->P;
  a.E = L->E;
  a.E_per = L->E_per;
  a.K = L->K;
  a.T = T;
  a.ids = ids;
  a.weights = w;
  a.pos = (int64_t *)(A + p->pos);
  a.tok_ptr = (int64_t *)(A + p->tok_ptr);
  a.send_token = (int64_t *)(A + p->send_token);
  a.tok_rows = (int64_t *)(A + p->tok_rows);
  a.send_ids = (int32_t *)(A + p->send_ids);
  a.send_weights = (float *)(A + p->send_w);
  a.summary = (int64_t *)(A + p->summary);
  a.scan_scratch = A + p->scan;
  a.scan_scratch_bytes = p->scan_bytes;
  const size_t summary_bytes = ((size_t)L->P + 2) * sizeof(int64_t);
  int32_t bad_value = 0;
#ifdef MOE_WITH_CUDA
  moeContext_t ctx = L->comm->ctx;
  if (on_gpu(ctx)) {
    int e = moe_ep_layout_build_cuda(&a, moe_stream_or_default(ctx, stream));
    if (e) return moe_error(moeErrorCuda, "EP layout kernels failed to launch (cudaError %d)", e);
    MOE_TRY(ctx->ops->synchronize(ctx, stream));
    MOE_TRY(ctx->ops->download(ctx, lay->summary, a.summary, summary_bytes));
    const int64_t bad = lay->summary[L->P + 1];
    if (bad != MOE_EP_NO_BAD_ID)
      MOE_TRY(ctx->ops->download(ctx, &bad_value, ids + bad, sizeof bad_value));
    return moe_ep_layout_finish(lay, T, lay->summary, bad_value);
  }
#endif
  moe_ep_layout_build_host(&a);
  memcpy(lay->summary, a.summary, summary_bytes);
  if (lay->summary[L->P + 1] != MOE_EP_NO_BAD_ID) bad_value = ids[lay->summary[L->P + 1]];
  return moe_ep_layout_finish(lay, T, lay->summary, bad_value);
}

static moeStatus_t forward(struct moeEpLayer_s *L, int64_t T, const void *x,
                           const int32_t *ids_in, const float *w_in, void *y,
                           const moeRouterStats_t *stats, void *workspace, size_t ws_bytes,
                           moeStream_t stream, moeStatus_t pre) {
  moeEpComm_t comm = L->comm;
  moeContext_t ctx = comm->ctx;
  moeEpLayout *lay = &L->layout;
  const int P = L->P;
  const int64_t K = L->K, H = L->H;
  const size_t es = L->es, row = (size_t)H * es;
  moeEpTimings_t tm = MOE_EP_TIMINGS_INIT;
  comm->stream = stream;
  clk c = {L, ctx, stream, now_s()};
  const double t_start = c.t;
  moeEpWsPlan p;
  char *A = NULL, *B = NULL;
#define AT(base, off, type) ((type)((base) + p.off))

  /* ---- phase A: route, shared experts, layout, pack (local; failures are carried) ---- */
  moeStatus_t st = pre;
  if (st == moeSuccess) st = moe_ep_plan_a(L, T, &p);
  if (st == moeSuccess) {
    size_t a_bytes = (p.bytes_a + 255) & ~(size_t)255;
    st = phase_memory(L, 0, a_bytes, (char *)workspace, ws_bytes, &A);
  }
  const int32_t *ids = ids_in;
  const float *w = w_in;
  if (st == moeSuccess && T > 0 && !ids_in) {
    ids = AT(A, ids, int32_t *);
    w = AT(A, weights, float *);
    st = moeLayerRoute(L->local, T, x, (int32_t *)ids, (float *)w, stats, A + p.stage_a,
                       p.bytes_a - p.stage_a, stream);
  }
  if (st == moeSuccess && T > 0 && L->S > 0)
    st = moeLayerSharedExperts(L->local, T, x, A + p.shared_out, A + p.stage_a,
                               p.bytes_a - p.stage_a, stream);
  tm.route_s = lap(&c);
  /* layout where the ids are; the host reads back only its summary (P + 2 counts) */
  if (st == moeSuccess && T > 0) st = build_layout(L, T, ids, w, A, &p, stream);
  else moe_ep_layout_clear(lay);
  if (st == moeSuccess && lay->S > 0)
    st = gather_rows(ctx, A + p.send_x, x, AT(A, send_token, const int64_t *), lay->S, row, stream);
  if (st != moeSuccess) moe_ep_layout_clear(lay);
  tm.layout_s = lap(&c);

  /* ---- counts exchange, carrying every rank's status ---- */
  int64_t *cx = lay->exchange;
  for (int r = 0; r < P; ++r) {
    cx[2 * r] = lay->send_counts[r];
    cx[2 * r + 1] = (int64_t)st;
  }
  MOE_TRY(comm->ops->alltoall_i64(comm, cx, cx + 2 * P, 2));
  int failed = -1;
  for (int r = 0; r < P; ++r) {
    cx[r] = cx[2 * P + 2 * r];
    if (failed < 0 && cx[2 * P + 2 * r + 1] != moeSuccess) failed = r;
  }
  if (failed >= 0) {
    moeStatus_t fs = (moeStatus_t)cx[2 * P + 2 * failed + 1];
    if (st != moeSuccess) return st;
    return moe_error(fs, "moeEpLayerForward failed on EP rank %d (%s); see that rank's message",
                     failed, moeGetErrorString(fs));
  }
  moe_ep_layout_set_recv(lay, cx);
  const int64_t S = lay->S, R = lay->R;

  /* ---- phase B memory and the transport's row limit, agreed ---- */
  st = moeSuccess;
  if (S > comm->ops->max_rows || R > comm->ops->max_rows)
    st = moe_error(moeErrorNotSupported, "moeEpLayerForward: EP rank %d sends %lld and receives "
                   "%lld token rows; the %s transport addresses at most %lld rows per exchange",
                   L->rank, (long long)S, (long long)R, comm->ops->name,
                   (long long)comm->ops->max_rows);
  if (st == moeSuccess) st = moe_ep_plan_b(L, R, &p);
  if (st == moeSuccess) {
    size_t a_bytes = (p.bytes_a + 255) & ~(size_t)255;
    if (workspace)
      st = phase_memory(L, 1, p.bytes_b, (char *)workspace + a_bytes,
                        ws_bytes > a_bytes ? ws_bytes - a_bytes : 0, &B);
    else
      st = phase_memory(L, 1, p.bytes_b, NULL, 0, &B);
  }
  MOE_TRY(moe_ep_agree(comm, st, "moeEpLayerForward (workspace)"));

  /* ---- dispatch: token rows, their ids and weights ---- */
  moeEpPlane planes[3] = {{A + p.send_x, B + p.recv_x, row},
                          {A + p.send_ids, B + p.recv_ids, (size_t)K * 4},
                          {A + p.send_w, B + p.recv_w, (size_t)K * 4}};
  MOE_TRY(comm->ops->alltoallv(comm, planes, 3, lay->send_counts, lay->send_displs,
                               lay->recv_counts, lay->recv_displs, stream));
  tm.dispatch_s = lap(&c);

  /* ---- local experts over the received tokens: permute, experts, per-token combine ---- */
  st = moeSuccess;
  if (R > 0) {
    void *sw = B + p.stage_b;
    size_t swb = p.bytes_b - p.stage_b;
    st = moeLayerPermute(L->local, R, AT(B, recv_ids, const int32_t *), AT(B, offsets, int64_t *),
                         AT(B, sorted_pairs, int64_t *), AT(B, pair_rows, int64_t *), sw, swb,
                         stream);
    if (st == moeSuccess)
      st = moeLayerExperts(L->local, R, B + p.recv_x, AT(B, recv_w, const float *),
                           AT(B, offsets, const int64_t *), AT(B, sorted_pairs, const int64_t *),
                           B + p.expert_out, sw, swb, stream);
    if (st == moeSuccess)
      st = moeLayerCombine(L->local, R, B + p.expert_out, AT(B, pair_rows, const int64_t *),
                           AT(B, recv_w, const float *), NULL, B + p.partial, stream);
  }
  MOE_TRY(moe_ep_agree(comm, st, "moeEpLayerForward (experts)"));
  tm.experts_s = lap(&c);

  /* ---- combine: partial rows back to their sources, summed per token in rank order ---- */
  moeEpPlane back = {B + p.partial, A + p.back, row};
  MOE_TRY(comm->ops->alltoallv(comm, &back, 1, lay->recv_counts, lay->recv_displs,
                               lay->send_counts, lay->send_displs, stream));
  if (T > 0)
    MOE_TRY(reduce_rows(ctx, y, A + p.back, L->S > 0 ? A + p.shared_out : NULL,
                        AT(A, tok_ptr, const int64_t *), AT(A, tok_rows, const int64_t *), T, H,
                        L->local->cfg.dtype, stream));
  tm.combine_s = lap(&c);
#undef AT

  /* ---- bookkeeping ---- */
  const size_t meta = (size_t)K * 8;
  tm.tokens_sent = S;
  tm.tokens_received = R;
  tm.tokens_self = lay->send_counts[L->rank];
  tm.dispatch_bytes_sent = (int64_t)((size_t)S * (row + meta));
  tm.dispatch_bytes_received = (int64_t)((size_t)R * (row + meta));
  tm.combine_bytes_sent = (int64_t)((size_t)R * row);
  tm.combine_bytes_received = (int64_t)((size_t)S * row);
  for (int r = 0; r < P; ++r)
    if (r != L->rank) tm.messages += (lay->send_counts[r] > 0) + (lay->recv_counts[r] > 0);
  tm.total_s = L->ep_cfg.collect_timings ? c.t - t_start : 0.0;
  L->timings = tm;
  return moeSuccess;
}

static moeStatus_t check_args(moeEpLayer_t layer, int64_t T, const void *x, const void *y) {
  MOE_CHECK_NOT_NULL(layer);
  if (T < 0)
    return moe_error(moeErrorInvalidArgument, "moeEpLayerForward: num_tokens = %lld < 0",
                     (long long)T);
  if (T > 0 && (!x || !y))
    return moe_error(moeErrorInvalidArgument, "moeEpLayerForward: x and y must not be NULL");
  if (T == 0) return moeSuccess;
  return moe_check_disjoint("moeEpLayerForward", x, y, (size_t)T * (size_t)layer->H * layer->es);
}

/* A rank whose arguments are bad must still take part, or its peers would hang: it runs the
 * exchange with no tokens and reports its error through the agreement. */
static moeStatus_t forward_checked(moeEpLayer_t layer, int64_t T, const void *x,
                                   const int32_t *ids, const float *w, int routed, void *y,
                                   const moeRouterStats_t *stats, void *ws, size_t ws_bytes,
                                   moeStream_t stream) {
  moe_clear_error();
  if (!layer) return moe_error(moeErrorInvalidArgument, "moeEpLayerForward: layer is NULL");
  moeStatus_t st = check_args(layer, T, x, y);
  if (st == moeSuccess && routed && T > 0 && (!ids || !w))
    st = moe_error(moeErrorInvalidArgument, "moeEpLayerForwardRouted: expert_ids and weights "
                   "must not be NULL");
  const int previous = moe_ep_enter_device(layer->comm->ctx);
  moeStatus_t result =
      st == moeSuccess ? forward(layer, T, x, ids, w, y, stats, ws, ws_bytes, stream, st)
                       : forward(layer, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, stream, st);
  moe_ep_leave_device(previous);
  return result;
}

moeStatus_t moeEpLayerForward(moeEpLayer_t layer, int64_t num_tokens, const void *x, void *y,
                              const moeRouterStats_t *stats, void *workspace,
                              size_t workspace_bytes, moeStream_t stream) {
  return forward_checked(layer, num_tokens, x, NULL, NULL, 0, y, stats, workspace,
                         workspace_bytes, stream);
}

moeStatus_t moeEpLayerForwardRouted(moeEpLayer_t layer, int64_t num_tokens, const void *x,
                                    const int32_t *expert_ids, const float *weights, void *y,
                                    void *workspace, size_t workspace_bytes, moeStream_t stream) {
  return forward_checked(layer, num_tokens, x, expert_ids, weights, 1, y, NULL, workspace,
                         workspace_bytes, stream);
}
