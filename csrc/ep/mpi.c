/* The MPI transport: a duplicated communicator, MPI_Alltoall for counts, MPI_Ialltoallv per
 * plane (one contiguous datatype per row size) for token rows, on host memory (CPU backend).
 * On a CUDA context, moeEpCommCreateMpi bootstraps NCCL over MPI instead (nccl.c). */
#include <limits.h>
#include <stdlib.h>

#include "core/status.h"
#include "ep/comm.h"

#ifdef MOE_WITH_MPI
#include <mpi.h>

#ifdef MOE_WITH_NCCL
moeStatus_t moe_ep_nccl_create_over_mpi(moeEpComm_t *comm, moeContext_t ctx, MPI_Comm mpi_comm);
#endif

static moeStatus_t mpi_fail(int rc, const char *what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) text[0] = '\0';
  return moe_error(moeErrorMpi, "%s failed: %s (MPI error %d)", what, text, rc);
}

#define MPI_TRY(call, what)                            \
  do {                                                 \
    int mpi_rc_ = (call);                              \
    if (mpi_rc_ != MPI_SUCCESS) return mpi_fail(mpi_rc_, what); \
  } while (0)

typedef struct {
  MPI_Comm comm;
  int *counts, *displs; /* scratch: 4 arrays of size ranks */
} mpiImpl;

static MPI_Comm mc(moeEpComm_t c) { return ((mpiImpl *)c->impl)->comm; }

static moeStatus_t mpi_alltoall_i64(moeEpComm_t c, const int64_t *send, int64_t *recv, int n) {
  MPI_TRY(MPI_Alltoall(send, n, MPI_INT64_T, recv, n, MPI_INT64_T, mc(c)), "MPI_Alltoall");
  return moeSuccess;
}

static moeStatus_t mpi_allreduce_max(moeEpComm_t c, int64_t *vals, int n) {
  MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_INT64_T, MPI_MAX, mc(c)), "MPI_Allreduce");
  return moeSuccess;
}

static moeStatus_t mpi_barrier(moeEpComm_t c) {
  MPI_TRY(MPI_Barrier(mc(c)), "MPI_Barrier");
  return moeSuccess;
}

static moeStatus_t to_int(const int64_t *v, int *out, int n, const char *what) {
  for (int i = 0; i < n; ++i) {
    if (v[i] < 0 || v[i] > INT_MAX)
      return moe_error(moeErrorInternal, "MPI alltoallv: %s[%d] = %lld rows exceeds INT_MAX "
                       "(the caller checks max_rows before the exchange)",
                       what, i, (long long)v[i]);
    out[i] = (int)v[i];
  }
  return moeSuccess;
}

static moeStatus_t mpi_alltoallv(moeEpComm_t c, const moeEpPlane *planes, int num_planes,
                                 const int64_t *send_counts, const int64_t *send_displs,
                                 const int64_t *recv_counts, const int64_t *recv_displs,
                                 moeStream_t stream) {
  mpiImpl *m = (mpiImpl *)c->impl;
  int n = c->size;
  int *sc = m->counts, *sd = m->counts + n, *rc = m->counts + 2 * n, *rd = m->counts + 3 * n;
  MOE_TRY(to_int(send_counts, sc, n, "send_counts"));
  MOE_TRY(to_int(send_displs, sd, n, "send_displs"));
  MOE_TRY(to_int(recv_counts, rc, n, "recv_counts"));
  MOE_TRY(to_int(recv_displs, rd, n, "recv_displs"));
  enum { MAX_PLANES = 8 };
  if (num_planes > MAX_PLANES) return moe_error(moeErrorInternal, "too many alltoallv planes");
  MPI_Request req[MAX_PLANES];
  MPI_Datatype types[MAX_PLANES];
  int started = 0, rc_all = MPI_SUCCESS;
  for (int p = 0; p < num_planes && rc_all == MPI_SUCCESS; ++p) {
    if (planes[p].row_bytes > INT_MAX)
      return moe_error(moeErrorInvalidArgument, "MPI alltoallv: row of %zu bytes", planes[p].row_bytes);
    rc_all = MPI_Type_contiguous((int)planes[p].row_bytes, MPI_BYTE, &types[p]);
    if (rc_all != MPI_SUCCESS) break;
    rc_all = MPI_Type_commit(&types[p]);
    if (rc_all != MPI_SUCCESS) { MPI_Type_free(&types[p]); break; }
    rc_all = MPI_Ialltoallv(planes[p].send, sc, sd, types[p], planes[p].recv, rc, rd, types[p],
                            m->comm, &req[p]);
    if (rc_all != MPI_SUCCESS) { MPI_Type_free(&types[p]); break; }
    ++started;
  }
  int rc_wait = MPI_Waitall(started, req, MPI_STATUSES_IGNORE);
  for (int p = 0; p < started; ++p) MPI_Type_free(&types[p]);
  if (rc_all != MPI_SUCCESS) return mpi_fail(rc_all, "MPI_Ialltoallv");
  if (rc_wait != MPI_SUCCESS) return mpi_fail(rc_wait, "MPI_Waitall (alltoallv)");
  return moeSuccess;
}

static moeStatus_t mpi_destroy(moeEpComm_t c) {
  mpiImpl *m = (mpiImpl *)c->impl;
  if (!m) return moeSuccess;
  int fin = 0;
  MPI_Finalized(&fin);
  int rc = fin ? MPI_SUCCESS : MPI_Comm_free(&m->comm);
  free(m->counts);
  free(m);
  c->impl = NULL;
  return rc == MPI_SUCCESS ? moeSuccess : mpi_fail(rc, "MPI_Comm_free");
}

static moeStatus_t mpi_abort(moeEpComm_t c) {
  mpiImpl *m = (mpiImpl *)c->impl;
  if (!m) return moeSuccess;
  /* No MPI_Comm_free: it may wait for peers. The duplicate goes away with MPI_Finalize. */
  free(m->counts);
  free(m);
  c->impl = NULL;
  return moeSuccess;
}

static const moeEpCommOps g_mpi_ops = {"mpi",          mpi_alltoall_i64, mpi_allreduce_max,
                                       mpi_alltoallv,  mpi_barrier,      mpi_destroy,
                                       mpi_abort,      INT_MAX};

static moeStatus_t check_mpi(const void *mpi_comm) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin)
    return moe_error(moeErrorInvalidState, "MPI is %s: call MPI_Init before creating an EP "
                     "communicator", fin ? "finalized" : "not initialized");
  if (*(const MPI_Comm *)mpi_comm == MPI_COMM_NULL)
    return moe_error(moeErrorInvalidArgument, "mpi_comm is MPI_COMM_NULL");
  return moeSuccess;
}

moeStatus_t moeEpCommCreateMpi(moeEpComm_t *comm, moeContext_t ctx, const void *mpi_comm) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(comm);
  *comm = NULL;
  MOE_CHECK_NOT_NULL(ctx);
  MOE_CHECK_NOT_NULL(mpi_comm);
  MOE_TRY(check_mpi(mpi_comm));
  MPI_Comm user = *(const MPI_Comm *)mpi_comm;
  if (ctx->backend == moeBackendCuda) {
#ifdef MOE_WITH_NCCL
    return moe_ep_nccl_create_over_mpi(comm, ctx, user);
#else
    return moe_error(moeErrorNotSupported, "moeEpCommCreateMpi: a CUDA context needs NCCL, and "
                     "libmoe was built without it (the MPI transport moves host memory only)");
#endif
  }
  int rank = 0, size = 0;
  MPI_TRY(MPI_Comm_rank(user, &rank), "MPI_Comm_rank");
  MPI_TRY(MPI_Comm_size(user, &size), "MPI_Comm_size");
  mpiImpl *m = (mpiImpl *)calloc(1, sizeof *m);
  int *counts = (int *)calloc(4 * (size_t)size, sizeof(int));
  moeEpComm_t shell = NULL;
  if (moe_ep_comm_new(&shell, &g_mpi_ops, ctx, rank, size) != moeSuccess) shell = NULL;
  /* Agree on every allocation before the collective dup, so that no rank waits alone and no
   * rank is left holding a communicator whose peers gave up. */
  int ok = m && counts && shell, all_ok = 0;
  int rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, user);
  if (rc == MPI_SUCCESS && all_ok) {
    m->counts = counts;
    rc = MPI_Comm_dup(user, &m->comm);
    if (rc == MPI_SUCCESS) {
      shell->impl = m;
      *comm = shell;
      return moeSuccess;
    }
  }
  free(m);
  free(counts);
  free(shell);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, all_ok ? "MPI_Comm_dup" : "MPI_Allreduce");
  return moe_error(moeErrorOutOfMemory, "moeEpCommCreateMpi: out of host memory on %s",
                   ok ? "another rank" : "this rank");
}

moeStatus_t moeEpGetLocalDevice(const void *mpi_comm, int *device) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(mpi_comm);
  MOE_CHECK_NOT_NULL(device);
  *device = 0;
  MOE_TRY(check_mpi(mpi_comm));
  MPI_Comm node;
  int local = 0;
  MPI_TRY(MPI_Comm_split_type(*(const MPI_Comm *)mpi_comm, MPI_COMM_TYPE_SHARED, 0,
                              MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  int rc = MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Comm_rank");
  int count = 0;
  if (moeGetCudaDeviceCount(&count) != moeSuccess) count = 0;
  moe_clear_error();
  *device = count > 0 ? local % count : 0;
  return moeSuccess;
}

#else /* !MOE_WITH_MPI */

moeStatus_t moeEpCommCreateMpi(moeEpComm_t *comm, moeContext_t ctx, const void *mpi_comm) {
  moe_clear_error();
  if (comm) *comm = NULL;
  return moe_error(moeErrorNotSupported, "moeEpCommCreateMpi: libmoe was built without MPI");
}

moeStatus_t moeEpGetLocalDevice(const void *mpi_comm, int *device) {
  moe_clear_error();
  return moe_error(moeErrorNotSupported, "moeEpGetLocalDevice: libmoe was built without MPI");
}

#endif
