/* Communicator handles: the transport-independent part (rank, size, destroy, abort) and the
 * collective error agreement every EP call uses before it moves data. */
#include <limits.h>
#include <stdlib.h>

#include "core/status.h"
#include "ep/comm.h"

moeStatus_t moe_ep_comm_new(moeEpComm_t *comm, const moeEpCommOps *ops, moeContext_t ctx,
                            int rank, int size) {
  struct moeEpComm_s *c = (struct moeEpComm_s *)calloc(1, sizeof *c);
  *comm = NULL;
  if (!c) return moe_error(moeErrorOutOfMemory, "moeEpComm: out of host memory");
  c->ops = ops;
  c->ctx = ctx;
  c->rank = rank;
  c->size = size;
  *comm = c;
  return moeSuccess;
}

moeStatus_t moe_ep_agree(moeEpComm_t comm, moeStatus_t local, const char *what) {
  int64_t v[2] = {(int64_t)local, local != moeSuccess ? -(int64_t)comm->rank : INT64_MIN};
  moeStatus_t st = comm->ops->allreduce_max_i64(comm, v, 2);
  if (st != moeSuccess) return st;
  if (v[0] == moeSuccess) return moeSuccess;
  if (local != moeSuccess) return local; /* keep this rank's own message */
  return moe_error((moeStatus_t)v[0], "%s failed on EP rank %lld (%s); see that rank's message",
                   what, (long long)-v[1], moeGetErrorString((moeStatus_t)v[0]));
}

moeStatus_t moeEpCommGetRank(moeEpComm_t comm, int *rank) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(comm);
  MOE_CHECK_NOT_NULL(rank);
  *rank = comm->rank;
  return moeSuccess;
}

moeStatus_t moeEpCommGetSize(moeEpComm_t comm, int *size) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(comm);
  MOE_CHECK_NOT_NULL(size);
  *size = comm->size;
  return moeSuccess;
}

moeStatus_t moeEpCommDestroy(moeEpComm_t comm) {
  moe_clear_error();
  if (!comm) return moeSuccess;
  moeStatus_t st = comm->ops->destroy(comm);
  free(comm);
  return st;
}

moeStatus_t moeEpCommAbort(moeEpComm_t comm) {
  moe_clear_error();
  if (!comm) return moeSuccess;
  moeStatus_t st = comm->ops->abort(comm);
  free(comm);
  return st;
}

moeStatus_t moeEpCommCreateNccl(moeEpComm_t *comm, moeContext_t ctx, void *nccl_comm) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(comm);
  *comm = NULL;
  MOE_CHECK_NOT_NULL(ctx);
  MOE_CHECK_NOT_NULL(nccl_comm);
#ifdef MOE_WITH_NCCL
  if (ctx->backend != moeBackendCuda)
    return moe_error(moeErrorNotSupported,
                     "moeEpCommCreateNccl: the context must use the CUDA backend");
  return moe_ep_nccl_wrap(comm, ctx, nccl_comm, 0);
#else
  return moe_error(moeErrorNotSupported, "moeEpCommCreateNccl: libmoe was built without NCCL");
#endif
}
