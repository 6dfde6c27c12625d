/* The communicator interface of expert parallelism: what dispatch and combine need from a
 * transport, and nothing more. Implementations: mpi.c (MPI_Alltoall[v] on host memory),
 * nccl.c (grouped ncclSend/ncclRecv on device memory, MOE_WITH_NCCL), loopback.c (virtual ranks
 * in one process, one thread each). All calls are collective over the communicator. */
#ifndef MOE_EP_COMM_H
#define MOE_EP_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "core/context.h"
#include "moe/moe_ep.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One buffer pair of an alltoallv: rows of row_bytes bytes each, backend memory. Several
 * planes share one set of counts and go out as one exchange (token rows, ids, weights). */
typedef struct {
  const void *send;
  void *recv;
  size_t row_bytes;
} moeEpPlane;

typedef struct moeEpCommOps {
  const char *name;
  /* recv[r * n + i] = what rank r sent as its send[rank * n + i]; host memory, n per rank. */
  moeStatus_t (*alltoall_i64)(moeEpComm_t comm, const int64_t *send, int64_t *recv, int n);
  /* vals[i] = max over ranks of vals[i] (in place, host memory). */
  moeStatus_t (*allreduce_max_i64)(moeEpComm_t comm, int64_t *vals, int n);
  /* For every plane: rows [send_displs[r], +send_counts[r]) of send go to rank r, which puts
   * them at rows [recv_displs[src], +recv_counts[src]) of its recv. Counts and displacements
   * are host arrays of size ranks, in rows; recv_counts must match what the peers send. */
  moeStatus_t (*alltoallv)(moeEpComm_t comm, const moeEpPlane *planes, int num_planes,
                           const int64_t *send_counts, const int64_t *send_displs,
                           const int64_t *recv_counts, const int64_t *recv_displs,
                           moeStream_t stream);
  moeStatus_t (*barrier)(moeEpComm_t comm);
  /* Local teardown. abort: without talking to peers. */
  moeStatus_t (*destroy)(moeEpComm_t comm);
  moeStatus_t (*abort)(moeEpComm_t comm);
  /* The most rows one alltoallv can address per rank, counts and displacements alike (MPI's
   * are int). Callers check their totals against it and agree BEFORE the exchange: a rank
   * that refused inside alltoallv would leave its peers waiting. */
  int64_t max_rows;
} moeEpCommOps;

struct moeEpComm_s {
  const moeEpCommOps *ops;
  moeContext_t ctx;
  int rank, size;
  moeStream_t stream; /* the stream of the EP call in progress: NCCL issues every operation of
                         the call (counts, status agreement, rows) on it, in one order */
  void *impl;         /* the transport's state */
};

/* Allocates a communicator shell (impl = NULL). */
moeStatus_t moe_ep_comm_new(moeEpComm_t *comm, const moeEpCommOps *ops, moeContext_t ctx,
                            int rank, int size);

/* Error agreement: every rank passes its local status; all return the max status over the ranks
 * (moeSuccess only when every rank succeeded). When this rank succeeded but another did not,
 * the thread's message names the lowest failing rank; a failing rank keeps its own message.
 * A transport failure is returned as such. */
moeStatus_t moe_ep_agree(moeEpComm_t comm, moeStatus_t local, const char *what);

/* Transports (constructors used by the public create functions). */
#ifdef MOE_WITH_NCCL
/* Wraps an NCCL communicator. owned: destroy it with the moeEpComm_t. */
moeStatus_t moe_ep_nccl_wrap(moeEpComm_t *comm, moeContext_t ctx, void *nccl_comm, int owned);
#endif

#ifdef __cplusplus
}
#endif
#endif
