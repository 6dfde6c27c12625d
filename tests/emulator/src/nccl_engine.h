// The emulated NCCL's engine as its two halves share it: nccl.cc (the API entry points) calls
// into nccl_engine.cc (matching, execution, group launch). Internal to libmoe_nccl_emu.so, which
// builds with hidden visibility: only the NCCL API is exported.
#pragma once

#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#ifndef MOE_EMU_NCCL
#error "tests/emulator/include/nccl.h must shadow the real nccl.h here"
#endif

namespace nccl_emu {

struct Clique;

enum class Kind { kSend, kRecv, kAllReduce };
enum class State { kPending, kDone, kFailed };

// One operation of one rank, as the group launches it.
struct Op {
  Kind kind;
  std::shared_ptr<Clique> clique;
  int rank = 0, peer = 0;
  const void *send = nullptr;
  void *recv = nullptr;
  size_t count = 0, bytes = 0;
  ncclDataType_t dtype = ncclInt8;
  ncclRedOp_t redop = ncclSum;
  cudaStream_t stream = nullptr;
  // execution state (under g_mu)
  State state = State::kPending;
  ncclResult_t result = ncclSuccess;
  std::string msg;
};

}  // namespace nccl_emu

// One rank's communicator (ncclComm_t): at global scope, where nccl.h declares it.
struct ncclComm {
  std::shared_ptr<nccl_emu::Clique> clique;
  int rank = 0, nranks = 0, device = 0;
  ncclResult_t async_error = ncclSuccess;
};

namespace nccl_emu {

// The ranks of one communicator: what each has posted and not yet matched.
struct Clique {
  int n = 0;
  unsigned long long serial = 0;  // for messages
  int joined = 0;
  std::vector<ncclComm *> members;         // by rank; nullptr once destroyed
  std::vector<std::deque<Op *>> sends;     // [src * n + dst], issue order
  std::vector<std::deque<Op *>> recvs;     // [src * n + dst], issue order
  std::vector<unsigned long long> coll_seq;  // per rank: collectives posted so far
  std::map<unsigned long long, std::vector<Op *>> colls;  // sequence -> per rank
  bool poisoned = false;
  std::string poison_msg;
};

// Defined in nccl_engine.cc.
extern std::mutex g_mu;  // everything below and every Clique
extern std::condition_variable g_cv;
extern std::set<const ncclComm *> g_live;
extern std::map<std::string, std::shared_ptr<Clique>> g_ids;  // unique id -> clique still joining
extern std::atomic<unsigned long long> g_serial;
// Streams executing a group, with the cliques involved: two executions of one clique on one
// stream would wait for each other.
extern std::multimap<const void *, std::pair<const Clique *, const void *>> g_busy;

// Per thread: the open group and the last error message.
struct GroupState {
  int depth = 0;
  std::vector<Op> ops;
  std::vector<std::pair<ncclComm *, std::shared_ptr<Clique>>> inits;  // joins to wait for
  ncclResult_t error = ncclSuccess;
};
extern thread_local GroupState t_group;
extern thread_local std::string t_last_error;

// ---- what the entry points call (nccl_engine.cc, where each is described) -----------------------
std::string strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
ncclResult_t fail_msg(ncclResult_t r, bool loud, const std::string &msg);
ncclResult_t fail(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void poison(Clique &c, const std::string &why);  // under g_mu
ncclResult_t check_comm(const ncclComm *comm, const char *fn);
ncclResult_t group_error(ncclResult_t r);
ncclResult_t make_op(Kind kind, const void *send, void *recv, size_t count, ncclDataType_t dt,
                     ncclRedOp_t red, int peer, ncclComm_t comm, cudaStream_t stream, Op *out);
ncclResult_t submit(Op op);
ncclResult_t launch(std::vector<Op> ops);

ncclResult_t wait_joined(const std::shared_ptr<Clique> &c, int rank);
void release(ncclComm *comm);
std::shared_ptr<Clique> new_clique(int n);  // under g_mu

}  // namespace nccl_emu
