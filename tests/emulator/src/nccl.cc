// The emulated NCCL: communicators between ranks of one process (threads, each with its own CUDA
// stream, all on the one emulated device), point-to-point sends and receives, ncclAllReduce,
// group calls, abort. libmoe_nccl_emu.so; the header is tests/emulator/include/nccl.h.
//
// This file: the API entry points. The engine they call (matching, execution, group launch, and
// how a group runs) is nccl_engine.cc, with what both share in nccl_engine.h.
//
// Where the real NCCL would corrupt memory or hang, this one fails loudly and releases everyone:
//  - a send and its receive with different counts or datatypes, collectives that differ in
//    count, datatype or operation: ncclInvalidUsage on both sides, a message on stderr, and the
//    communicator is poisoned (every pending and later operation on it fails, ncclRemoteError);
//  - a peer that never posts (watchdog, MOE_EMU_NCCL_TIMEOUT seconds, default 60): the waiting
//    rank gets ncclSystemError naming what it waited for, the communicator is poisoned;
//  - ncclCommAbort on one rank: every rank blocked on (or later using) the communicator gets
//    ncclRemoteError (the real NCCL releases only the aborting rank's own operations);
//  - buffers outside device allocations: ncclInvalidArgument at the call;
//  - two ranks of one communicator on the same stream (their kernels would serialize and wait
//    for each other): ncclInvalidUsage. The real NCCL refuses two ranks on one device at init;
//    here every rank shares the one emulated device, so the check is on streams instead.
// Graph capture: an operation on a capturing stream is recorded (as CUDA records the NCCL
// kernel) and runs when the graph is launched; a group mixing streams while capturing is refused.
// Not emulated: ranks in different processes (ncclCommInitRank with an id from another process
// fails with ncclInvalidUsage), reductions in half, bfloat16 and fp8, nonblocking communicators.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nccl_engine.h"

#define NCCL_EMU_EXPORT extern "C" __attribute__((visibility("default")))

using namespace nccl_emu;

constexpr char kIdMagic[16] = "moe-emu-nccl-id";  // ids from ncclGetUniqueId start with it

// ---- the API ------------------------------------------------------------------------------------
NCCL_EMU_EXPORT const char *ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

NCCL_EMU_EXPORT const char *ncclGetLastError(ncclComm_t comm) { return t_last_error.c_str(); }

NCCL_EMU_EXPORT ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
  if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
  std::memset(id, 0, sizeof *id);
  std::memcpy(id->internal, kIdMagic, sizeof kIdMagic);
  const int64_t pid = static_cast<int64_t>(getpid());
  const unsigned long long serial = ++g_serial;
  std::memcpy(id->internal + 16, &pid, sizeof pid);
  std::memcpy(id->internal + 24, &serial, sizeof serial);
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
  if (!comm) return group_error(fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL"));
  *comm = nullptr;
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return group_error(fail(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d ranks", rank, nranks));
  if (std::memcmp(id.internal, kIdMagic, sizeof kIdMagic) != 0)
    return group_error(fail(ncclInvalidArgument, "ncclCommInitRank: the id does not come from ncclGetUniqueId"));
  int64_t pid = 0;
  std::memcpy(&pid, id.internal + 16, sizeof pid);
  if (pid != static_cast<int64_t>(getpid()))
    return group_error(fail_msg(ncclInvalidUsage, true,
                                strf("ncclCommInitRank: the id comes from process %lld; the emulated "
                                     "NCCL connects ranks of one process only (threads)", (long long)pid)));
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess)
    return group_error(fail(ncclUnhandledCudaError, "ncclCommInitRank: cudaGetDevice failed"));
  const std::string key(id.internal, NCCL_UNIQUE_ID_BYTES);
  auto *c = new ncclComm;
  std::shared_ptr<Clique> cl;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_ids.find(key);
    if (it == g_ids.end()) it = g_ids.emplace(key, new_clique(nranks)).first;
    cl = it->second;
    if (cl->n != nranks || cl->members[static_cast<size_t>(rank)]) {
      delete c;
      return group_error(fail(ncclInvalidArgument, cl->n != nranks
                                  ? "ncclCommInitRank: rank %d says %d ranks, an earlier rank of this id said %d"
                                  : "ncclCommInitRank: rank %d joined this id twice (of %d; %d)",
                              rank, nranks, cl->n));
    }
    c->clique = cl;
    c->rank = rank;
    c->nranks = nranks;
    c->device = device;
    cl->members[static_cast<size_t>(rank)] = c;
    g_live.insert(c);
    if (++cl->joined == cl->n) g_ids.erase(key);  // complete: the id is spent
    g_cv.notify_all();
  }
  if (t_group.depth > 0) {  // joined; ncclGroupEnd waits for the others
    t_group.inits.emplace_back(c, cl);
    *comm = c;
    return ncclSuccess;
  }
  const ncclResult_t r = wait_joined(cl, rank);
  if (r != ncclSuccess) {
    release(c);
    delete c;
    return r;
  }
  *comm = c;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist) {
  if (!comms || ndev < 1) return fail(ncclInvalidArgument, "ncclCommInitAll: comms NULL or ndev %d", ndev);
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess)
    return fail(ncclUnhandledCudaError, "ncclCommInitAll: cudaGetDeviceCount failed");
  for (int r = 0; r < ndev; ++r) {
    const int d = devlist ? devlist[r] : r;
    if (d < 0 || d >= count)
      return fail(ncclInvalidArgument, "ncclCommInitAll: device %d of rank %d (%d device(s))", d, r, count);
  }
  // Every rank may name the one emulated device (the real NCCL wants distinct GPUs).
  std::lock_guard<std::mutex> lock(g_mu);
  auto cl = new_clique(ndev);
  for (int r = 0; r < ndev; ++r) {
    auto *c = new ncclComm;
    c->clique = cl;
    c->rank = r;
    c->nranks = ndev;
    c->device = devlist ? devlist[r] : r;
    cl->members[static_cast<size_t>(r)] = c;
    g_live.insert(c);
    comms[r] = c;
  }
  cl->joined = ndev;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  ncclResult_t r = check_comm(comm, "ncclCommDestroy");
  if (r != ncclSuccess) return r;
  for (const Op &op : t_group.ops)
    if (op.clique == comm->clique && op.rank == comm->rank)
      return fail(ncclInvalidUsage, "ncclCommDestroy: operations on this communicator are in the "
                  "open group (call ncclGroupEnd first)");
  release(comm);
  delete comm;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  ncclResult_t r = check_comm(comm, "ncclCommAbort");
  if (r != ncclSuccess) return r;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    poison(*comm->clique, strf("rank %d of communicator #%llu called ncclCommAbort", comm->rank,
                               comm->clique->serial));
  }
  // Its own operations queued in this thread's open group go with it.
  auto &ops = t_group.ops;
  ops.erase(std::remove_if(ops.begin(), ops.end(),
                           [&](const Op &op) { return op.clique == comm->clique && op.rank == comm->rank; }),
            ops.end());
  release(comm);
  delete comm;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *err) {
  ncclResult_t r = check_comm(comm, "ncclCommGetAsyncError");
  if (r != ncclSuccess) return r;
  if (!err) return fail(ncclInvalidArgument, "ncclCommGetAsyncError: asyncError is NULL");
  std::lock_guard<std::mutex> lock(g_mu);
  *err = comm->async_error;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) {
  ncclResult_t r = check_comm(comm, "ncclCommCount");
  if (r != ncclSuccess) return r;
  if (!count) return fail(ncclInvalidArgument, "ncclCommCount: count is NULL");
  *count = comm->nranks;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) {
  ncclResult_t r = check_comm(comm, "ncclCommUserRank");
  if (r != ncclSuccess) return r;
  if (!rank) return fail(ncclInvalidArgument, "ncclCommUserRank: rank is NULL");
  *rank = comm->rank;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                           cudaStream_t stream) {
  Op o{};
  ncclResult_t r = make_op(Kind::kAllReduce, sendbuff, recvbuff, count, datatype, op, 0, comm, stream, &o);
  if (r != ncclSuccess) return group_error(r);
  return submit(std::move(o));
}

NCCL_EMU_EXPORT ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype,
                                      int peer, ncclComm_t comm, cudaStream_t stream) {
  Op o{};
  ncclResult_t r = make_op(Kind::kSend, sendbuff, nullptr, count, datatype, ncclSum, peer, comm, stream, &o);
  if (r != ncclSuccess) return group_error(r);
  return submit(std::move(o));
}

NCCL_EMU_EXPORT ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
                                      ncclComm_t comm, cudaStream_t stream) {
  Op o{};
  ncclResult_t r = make_op(Kind::kRecv, nullptr, recvbuff, count, datatype, ncclSum, peer, comm, stream, &o);
  if (r != ncclSuccess) return group_error(r);
  return submit(std::move(o));
}

NCCL_EMU_EXPORT ncclResult_t ncclGroupStart(void) {
  if (t_group.depth == 0) {
    t_group.ops.clear();
    t_group.inits.clear();
    t_group.error = ncclSuccess;
  }
  ++t_group.depth;
  return ncclSuccess;
}

NCCL_EMU_EXPORT ncclResult_t ncclGroupEnd(void) {
  if (t_group.depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--t_group.depth > 0) return ncclSuccess;
  std::vector<Op> ops = std::move(t_group.ops);
  auto inits = std::move(t_group.inits);
  const ncclResult_t err = t_group.error;
  const std::string err_msg = t_last_error;
  t_group = GroupState{};
  // Communicators initialized in the group: every rank has to join.
  ncclResult_t r = ncclSuccess;
  for (auto &init : inits) {
    const ncclResult_t w = wait_joined(init.second, init.first->rank);
    if (w != ncclSuccess && r == ncclSuccess) r = w;
  }
  if (r != ncclSuccess) {
    const std::string m = t_last_error;
    for (auto &init : inits) {  // the caller got these handles: they stay valid, but unusable
      std::lock_guard<std::mutex> lock(g_mu);
      poison(*init.second, "communicator poisoned: " + m);
    }
    t_last_error = m;
    return r;
  }
  if (err != ncclSuccess) {  // an operation of the group was refused: nothing is launched
    t_last_error = err_msg;
    return err;
  }
  return launch(std::move(ops));
}
