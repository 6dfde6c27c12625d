/* The loopback transport: P virtual ranks in one process, one thread each, meeting at a
 * barrier. A collective posts this rank's arguments in its slot, waits for everyone, PULLS what
 * the peers address to it, and waits again so that no peer reuses its buffers early.
 * Used to test dispatch and combine with P > 1 on one CPU or one GPU. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/status.h"
#include "ep/comm.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime.h>
#endif

typedef struct {
  const int64_t *i64;              /* alltoall / allreduce input */
  const moeEpPlane *planes;
  int num_planes;
  const int64_t *send_counts, *send_displs;
} lbSlot;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int n, arrived, aborted, refs;
  unsigned long generation;
  lbSlot *slots;
} lbShared;

static moeStatus_t lb_wait(lbShared *s) {
  pthread_mutex_lock(&s->mu);
  if (s->aborted) {
    pthread_mutex_unlock(&s->mu);
    return moe_error(moeErrorInvalidState, "loopback EP communicator was aborted");
  }
  unsigned long gen = s->generation;
  if (++s->arrived == s->n) {
    s->arrived = 0;
    s->generation++;
    pthread_cond_broadcast(&s->cv);
  } else {
    while (gen == s->generation && !s->aborted) pthread_cond_wait(&s->cv, &s->mu);
  }
  int aborted = s->aborted && gen == s->generation;
  pthread_mutex_unlock(&s->mu);
  if (aborted) return moe_error(moeErrorInvalidState, "loopback EP communicator was aborted");
  return moeSuccess;
}

static lbShared *sh(moeEpComm_t c) { return (lbShared *)c->impl; }

static moeStatus_t lb_barrier(moeEpComm_t c) { return lb_wait(sh(c)); }

static moeStatus_t lb_alltoall_i64(moeEpComm_t c, const int64_t *send, int64_t *recv, int n) {
  lbShared *s = sh(c);
  s->slots[c->rank].i64 = send;
  MOE_TRY(lb_wait(s));
  for (int r = 0; r < s->n; ++r)
    memcpy(recv + (size_t)r * n, s->slots[r].i64 + (size_t)c->rank * n, (size_t)n * sizeof(int64_t));
  return lb_wait(s);
}

static moeStatus_t lb_allreduce_max(moeEpComm_t c, int64_t *vals, int n) {
  lbShared *s = sh(c);
  int64_t local[16];
  if (n > 16) return moe_error(moeErrorInternal, "loopback allreduce of %d values", n);
  s->slots[c->rank].i64 = vals;
  MOE_TRY(lb_wait(s));
  for (int i = 0; i < n; ++i) {
    local[i] = s->slots[0].i64[i];
    for (int r = 1; r < s->n; ++r)
      if (s->slots[r].i64[i] > local[i]) local[i] = s->slots[r].i64[i];
  }
  MOE_TRY(lb_wait(s)); /* every peer has read vals before anyone overwrites them */
  memcpy(vals, local, (size_t)n * sizeof(int64_t));
  return moeSuccess;
}

static moeStatus_t lb_copy(moeEpComm_t c, void *dst, const void *src, size_t bytes,
                           moeStream_t stream) {
  if (!bytes) return moeSuccess;
#ifdef MOE_WITH_CUDA
  if (c->ctx->backend == moeBackendCuda) {
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault,
                                    (cudaStream_t)moe_stream_or_default(c->ctx, stream));
    if (e != cudaSuccess)
      return moe_error(moeErrorCuda, "loopback alltoallv: cudaMemcpyAsync: %s", cudaGetErrorString(e));
    return moeSuccess;
  }
#endif
  memcpy(dst, src, bytes);
  return moeSuccess;
}

static moeStatus_t lb_alltoallv(moeEpComm_t c, const moeEpPlane *planes, int num_planes,
                                const int64_t *send_counts, const int64_t *send_displs,
                                const int64_t *recv_counts, const int64_t *recv_displs,
                                moeStream_t stream) {
  lbShared *s = sh(c);
  moeContext_t ctx = c->ctx;
  /* The rows must be in memory before a peer copies them. */
  moeStatus_t st = ctx->ops->synchronize(ctx, stream);
  lbSlot *me = &s->slots[c->rank];
  me->planes = planes;
  me->num_planes = num_planes;
  me->send_counts = send_counts;
  me->send_displs = send_displs;
  MOE_TRY(lb_wait(s));
  for (int r = 0; r < s->n && st == moeSuccess; ++r) {
    const lbSlot *peer = &s->slots[r];
    int64_t rows = peer->send_counts[c->rank];
    if (rows != recv_counts[r] || peer->num_planes != num_planes) {
      st = moe_error(moeErrorInternal, "loopback alltoallv: rank %d sends %lld rows to rank %d, "
                     "which expects %lld", r, (long long)rows, c->rank, (long long)recv_counts[r]);
      break;
    }
    for (int p = 0; p < num_planes && st == moeSuccess; ++p) {
      size_t rb = planes[p].row_bytes;
      st = lb_copy(c, (char *)planes[p].recv + (size_t)recv_displs[r] * rb,
                   (const char *)peer->planes[p].send + (size_t)peer->send_displs[c->rank] * rb,
                   (size_t)rows * rb, stream);
    }
  }
  if (st == moeSuccess) st = ctx->ops->synchronize(ctx, stream);
  moeStatus_t st2 = lb_wait(s);
  return st != moeSuccess ? st : st2;
}

static void lb_release(lbShared *s) {
  pthread_mutex_lock(&s->mu);
  int last = --s->refs == 0;
  pthread_mutex_unlock(&s->mu);
  if (!last) return;
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s->slots);
  free(s);
}

static moeStatus_t lb_destroy(moeEpComm_t c) {
  if (c->impl) lb_release(sh(c));
  c->impl = NULL;
  return moeSuccess;
}

static moeStatus_t lb_abort(moeEpComm_t c) {
  lbShared *s = sh(c);
  if (!s) return moeSuccess;
  pthread_mutex_lock(&s->mu);
  s->aborted = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return lb_destroy(c);
}

static const moeEpCommOps g_loopback_ops = {"loopback",   lb_alltoall_i64, lb_allreduce_max,
                                            lb_alltoallv, lb_barrier,      lb_destroy,
                                            lb_abort,     INT64_MAX};

moeStatus_t moeEpCommCreateLoopback(moeEpComm_t *comms, moeContext_t ctx, int num_ranks) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(comms);
  MOE_CHECK_NOT_NULL(ctx);
  if (num_ranks < 1 || num_ranks > 4096)
    return moe_error(moeErrorInvalidArgument, "moeEpCommCreateLoopback: num_ranks = %d must be "
                     "in [1, 4096]", num_ranks);
  for (int r = 0; r < num_ranks; ++r) comms[r] = NULL;
  lbShared *s = (lbShared *)calloc(1, sizeof *s);
  lbSlot *slots = (lbSlot *)calloc((size_t)num_ranks, sizeof *slots);
  if (!s || !slots) {
    free(s);
    free(slots);
    return moe_error(moeErrorOutOfMemory, "moeEpCommCreateLoopback: out of host memory");
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->n = num_ranks;
  s->slots = slots;
  for (int r = 0; r < num_ranks; ++r) {
    moeStatus_t st = moe_ep_comm_new(&comms[r], &g_loopback_ops, ctx, r, num_ranks);
    if (st != moeSuccess) {
      for (int q = 0; q < r; ++q) {
        free(comms[q]);
        comms[q] = NULL;
      }
      pthread_mutex_destroy(&s->mu);
      pthread_cond_destroy(&s->cv);
      free(slots);
      free(s);
      return st;
    }
    comms[r]->impl = s;
    s->refs++;
  }
  return moeSuccess;
}
