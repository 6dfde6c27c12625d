/* The NCCL transport (CUDA backend): counts and status through small device buffers, token rows
 * with grouped ncclSend/ncclRecv per peer (one group per exchange, every plane inside it).
 * Built with MOE_WITH_NCCL (CUDA + libnccl found by cmake/ep.cmake). */
#ifdef MOE_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "ep/comm.h"

#ifdef MOE_WITH_MPI
#include <mpi.h>
#endif

typedef struct {
  ncclComm_t comm;
  int owned;        /* created by libmoe (bootstrapped over MPI): destroy it with the handle */
  int64_t *d_buf;   /* device staging for counts / statuses */
  size_t d_cap;     /* in int64 */
} ncclImpl;

static moeStatus_t nccl_fail(ncclResult_t r, const char *what) {
  return moe_error(moeErrorNccl, "%s failed: %s (%s)", what, ncclGetErrorString(r),
                   ncclGetLastError(NULL));
}
static moeStatus_t cuda_fail(cudaError_t e, const char *what) {
  return moe_error(moeErrorCuda, "%s failed: %s", what, cudaGetErrorString(e));
}
#define NCCL_TRY(call, what)                                        \
  do {                                                              \
    ncclResult_t r_ = (call);                                       \
    if (r_ != ncclSuccess) return nccl_fail(r_, what);              \
  } while (0)
/* Inside ncclGroupStart/End: a refused call still ends the group (which then launches nothing).
 * NCCL's group state is per thread; a group left open would swallow every later NCCL call of
 * this thread, and the next status agreement would return without having talked to anyone. */
#define NCCL_GROUP_TRY(call, what)                                  \
  do {                                                              \
    ncclResult_t r_ = (call);                                       \
    if (r_ != ncclSuccess) {                                        \
      moeStatus_t st_ = nccl_fail(r_, what);                        \
      (void)ncclGroupEnd();                                         \
      return st_;                                                   \
    }                                                               \
  } while (0)
#define CUDA_TRY(call, what)                                        \
  do {                                                              \
    cudaError_t e_ = (call);                                        \
    if (e_ != cudaSuccess) return cuda_fail(e_, what);              \
  } while (0)

static ncclImpl *ni(moeEpComm_t c) { return (ncclImpl *)c->impl; }
static cudaStream_t strm(moeEpComm_t c, moeStream_t s) {
  return (cudaStream_t)moe_stream_or_default(c->ctx, s ? s : c->stream);
}

static moeStatus_t staging(moeEpComm_t c, size_t n) {
  ncclImpl *m = ni(c);
  if (n <= m->d_cap) return moeSuccess;
  if (m->d_buf) cudaFree(m->d_buf);
  m->d_buf = NULL;
  m->d_cap = 0;
  CUDA_TRY(cudaMalloc((void **)&m->d_buf, n * sizeof(int64_t)), "cudaMalloc (NCCL staging)");
  m->d_cap = n;
  return moeSuccess;
}

static moeStatus_t nccl_alltoall_i64(moeEpComm_t c, const int64_t *send, int64_t *recv, int n) {
  const size_t total = (size_t)n * c->size;
  MOE_TRY(staging(c, 2 * total));
  cudaStream_t s = strm(c, NULL);
  int64_t *ds = ni(c)->d_buf, *dr = ds + total;
  CUDA_TRY(cudaMemcpyAsync(ds, send, total * 8, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
  NCCL_TRY(ncclGroupStart(), "ncclGroupStart");
  for (int r = 0; r < c->size; ++r) {
    NCCL_GROUP_TRY(ncclSend(ds + (size_t)r * n, (size_t)n, ncclInt64, r, ni(c)->comm, s), "ncclSend");
    NCCL_GROUP_TRY(ncclRecv(dr + (size_t)r * n, (size_t)n, ncclInt64, r, ni(c)->comm, s), "ncclRecv");
  }
  NCCL_TRY(ncclGroupEnd(), "ncclGroupEnd");
  CUDA_TRY(cudaMemcpyAsync(recv, dr, total * 8, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  CUDA_TRY(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  return moeSuccess;
}

static moeStatus_t nccl_allreduce_max(moeEpComm_t c, int64_t *vals, int n) {
  MOE_TRY(staging(c, (size_t)n));
  cudaStream_t s = strm(c, NULL);
  int64_t *d = ni(c)->d_buf;
  CUDA_TRY(cudaMemcpyAsync(d, vals, (size_t)n * 8, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
  NCCL_TRY(ncclAllReduce(d, d, (size_t)n, ncclInt64, ncclMax, ni(c)->comm, s), "ncclAllReduce");
  CUDA_TRY(cudaMemcpyAsync(vals, d, (size_t)n * 8, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  CUDA_TRY(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  return moeSuccess;
}

static moeStatus_t nccl_barrier(moeEpComm_t c) {
  int64_t v = 0;
  return nccl_allreduce_max(c, &v, 1);
}

static moeStatus_t nccl_alltoallv(moeEpComm_t c, const moeEpPlane *planes, int num_planes,
                                  const int64_t *send_counts, const int64_t *send_displs,
                                  const int64_t *recv_counts, const int64_t *recv_displs,
                                  moeStream_t stream) {
  cudaStream_t s = strm(c, stream);
  ncclComm_t comm = ni(c)->comm;
  NCCL_TRY(ncclGroupStart(), "ncclGroupStart");
  for (int p = 0; p < num_planes; ++p) {
    const size_t rb = planes[p].row_bytes;
    for (int r = 0; r < c->size; ++r) {
      if (send_counts[r] > 0)
        NCCL_GROUP_TRY(ncclSend((const char *)planes[p].send + (size_t)send_displs[r] * rb,
                                (size_t)send_counts[r] * rb, ncclUint8, r, comm, s), "ncclSend");
      if (recv_counts[r] > 0)
        NCCL_GROUP_TRY(ncclRecv((char *)planes[p].recv + (size_t)recv_displs[r] * rb,
                                (size_t)recv_counts[r] * rb, ncclUint8, r, comm, s), "ncclRecv");
    }
  }
  NCCL_TRY(ncclGroupEnd(), "ncclGroupEnd");
  return moeSuccess;
}

static moeStatus_t nccl_destroy(moeEpComm_t c) {
  ncclImpl *m = ni(c);
  if (!m) return moeSuccess;
  ncclResult_t r = m->owned ? ncclCommDestroy(m->comm) : ncclSuccess;
  if (m->d_buf) cudaFree(m->d_buf);
  free(m);
  c->impl = NULL;
  return r == ncclSuccess ? moeSuccess : nccl_fail(r, "ncclCommDestroy");
}

static moeStatus_t nccl_abort(moeEpComm_t c) {
  ncclImpl *m = ni(c);
  if (!m) return moeSuccess;
  /* A caller-owned communicator is the caller's to abort; ours goes with ncclCommAbort. */
  ncclResult_t r = m->owned ? ncclCommAbort(m->comm) : ncclSuccess;
  if (m->d_buf) cudaFree(m->d_buf);
  free(m);
  c->impl = NULL;
  return r == ncclSuccess ? moeSuccess : nccl_fail(r, "ncclCommAbort");
}

static const moeEpCommOps g_nccl_ops = {"nccl",         nccl_alltoall_i64, nccl_allreduce_max,
                                        nccl_alltoallv, nccl_barrier,      nccl_destroy,
                                        nccl_abort,     INT64_MAX};

moeStatus_t moe_ep_nccl_wrap(moeEpComm_t *comm, moeContext_t ctx, void *nccl_comm, int owned) {
  ncclComm_t nc = (ncclComm_t)nccl_comm;
  int rank = 0, size = 0;
  NCCL_TRY(ncclCommUserRank(nc, &rank), "ncclCommUserRank");
  NCCL_TRY(ncclCommCount(nc, &size), "ncclCommCount");
  ncclImpl *m = (ncclImpl *)calloc(1, sizeof *m);
  if (!m) return moe_error(moeErrorOutOfMemory, "moeEpComm (NCCL): out of host memory");
  m->comm = nc;
  m->owned = owned;
  moeStatus_t st = moe_ep_comm_new(comm, &g_nccl_ops, ctx, rank, size);
  if (st != moeSuccess) {
    free(m);
    return st;
  }
  (*comm)->impl = m;
  return moeSuccess;
}

#ifdef MOE_WITH_MPI
/* NCCL bootstrapped over MPI: rank 0 draws the unique id, MPI_Bcast hands it out (with rank 0's
 * status, so that a failure there fails everyone), every rank joins on the context's device,
 * and an MPI_Allreduce agrees on the outcome. */
static moeStatus_t create_over_mpi(moeEpComm_t *comm, moeContext_t ctx, MPI_Comm mpi_comm) {
  int rank = 0, size = 0;
  if (MPI_Comm_rank(mpi_comm, &rank) != MPI_SUCCESS || MPI_Comm_size(mpi_comm, &size) != MPI_SUCCESS)
    return moe_error(moeErrorMpi, "moeEpCommCreateMpi: MPI_Comm_rank/size failed");
  struct {
    int status;
    ncclUniqueId id;
  } boot;
  memset(&boot, 0, sizeof boot);
  char msg[512] = "";
  if (rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&boot.id);
    if (r != ncclSuccess) {
      boot.status = (int)nccl_fail(r, "ncclGetUniqueId");
      snprintf(msg, sizeof msg, "%s", moeGetLastErrorMessage());
    }
  }
  if (MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, mpi_comm) != MPI_SUCCESS)
    return moe_error(moeErrorMpi, "moeEpCommCreateMpi: MPI_Bcast of the NCCL unique id failed");
  if (boot.status != moeSuccess)
    return rank == 0 ? moe_error((moeStatus_t)boot.status, "%s", msg)
                     : moe_error((moeStatus_t)boot.status, "moeEpCommCreateMpi: NCCL bootstrap "
                                 "failed on rank 0");
  moeStatus_t st = moeSuccess;
  if (ctx->device >= 0) {
    cudaError_t e = cudaSetDevice(ctx->device);
    if (e != cudaSuccess) st = cuda_fail(e, "cudaSetDevice");
  }
  /* ncclCommInitRank blocks until every rank has joined: a rank that cannot even select its
   * device must not leave the others waiting there, so the ranks agree first. */
  int bad = st != moeSuccess, any_bad = 0;
  if (MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, mpi_comm) != MPI_SUCCESS)
    return moe_error(moeErrorMpi, "moeEpCommCreateMpi: MPI_Allreduce before ncclCommInitRank "
                     "failed");
  if (any_bad)
    return bad ? st : moe_error(moeErrorCuda, "moeEpCommCreateMpi: another rank could not "
                                "select its CUDA device; NCCL was not initialized");
  ncclComm_t nc = NULL;
  {
    ncclResult_t r = ncclCommInitRank(&nc, size, boot.id, rank);
    if (r != ncclSuccess) {
      st = nccl_fail(r, "ncclCommInitRank");
      nc = NULL;
    }
  }
  if (st == moeSuccess) st = moe_ep_nccl_wrap(comm, ctx, nc, 1);
  int local = (int)st, worst = 0;
  if (MPI_Allreduce(&local, &worst, 1, MPI_INT, MPI_MAX, mpi_comm) != MPI_SUCCESS)
    worst = moeErrorMpi;
  if (worst == moeSuccess) return moeSuccess;
  if (st == moeSuccess) {
    moeEpCommAbort(*comm); /* frees the handle and aborts nc */
    *comm = NULL;
    return moe_error((moeStatus_t)worst, "moeEpCommCreateMpi: NCCL initialization failed on "
                     "another rank (%s)", moeGetErrorString((moeStatus_t)worst));
  }
  if (nc) ncclCommAbort(nc);
  return st;
}

/* NCCL joins on the context's device; the caller's current device is given back after, as
 * every backend op does. */
moeStatus_t moe_ep_nccl_create_over_mpi(moeEpComm_t *comm, moeContext_t ctx, MPI_Comm mpi_comm) {
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  moeStatus_t st = create_over_mpi(comm, ctx, mpi_comm);
  if (previous >= 0) (void)cudaSetDevice(previous);
  return st;
}
#endif

#else
typedef int moe_ep_nccl_unused; /* ISO C forbids an empty translation unit */
#endif
