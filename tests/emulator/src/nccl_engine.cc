// The emulated NCCL's engine: matching of posted operations, their execution, argument checks
// and group launch, for the API entry points in nccl.cc (which says what is emulated and how it
// fails). What the entry points call is declared in nccl_engine.h; the rest is static.
//
// How it runs. The emulated device executes stream work when it is enqueued (runtime.cc), so a
// communication "kernel" runs when the group that launches it ends: ncclGroupEnd (or a call
// outside a group) enqueues one host operation on each stream of the group, and that operation
// posts the group's sends, receives and collectives, then blocks the calling thread until every
// one of them has met its peers' matching operations. Matching follows NCCL's rules: a send from
// a to b meets b's receives from a in issue order (per peer, across groups), and the k-th
// collective of a rank meets the k-th collective of every other rank of the communicator. The
// data moves with memmove between device allocations (host heap) when both sides are posted;
// the buffers are those of stream-ordered work that has already run.
#include "nccl_engine.h"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "moe_emu/emu.h"

namespace nccl_emu {

// Declared in nccl_engine.h, which says what g_mu guards.
std::mutex g_mu;
std::condition_variable g_cv;
std::set<const ncclComm *> g_live;
std::map<std::string, std::shared_ptr<Clique>> g_ids;
std::atomic<unsigned long long> g_serial{0};
std::multimap<const void *, std::pair<const Clique *, const void *>> g_busy;
thread_local GroupState t_group;
thread_local std::string t_last_error;

static const char *kind_name(Kind k) {
  return k == Kind::kSend ? "ncclSend" : k == Kind::kRecv ? "ncclRecv" : "ncclAllReduce";
}

static std::string format(const char *fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  return buf;
}

std::string strf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = format(fmt, ap);
  va_end(ap);
  return s;
}

// Records the thread's last error (ncclGetLastError) and returns r. loud: also on stderr
// (always for what the real NCCL would not report: mismatches, hangs), else with MOE_EMU_TRACE.
ncclResult_t fail_msg(ncclResult_t r, bool loud, const std::string &msg) {
  static const bool trace = std::getenv("MOE_EMU_TRACE") != nullptr;
  t_last_error = msg;
  if (loud || trace) std::fprintf(stderr, "[moe NCCL emulator] %s\n", msg.c_str());
  return r;
}

ncclResult_t fail(ncclResult_t r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = format(fmt, ap);
  va_end(ap);
  return fail_msg(r, false, s);
}

static double timeout_s() {
  const char *e = std::getenv("MOE_EMU_NCCL_TIMEOUT");
  if (e && *e) {
    const double v = std::atof(e);
    if (v > 0) return v;
  }
  return 60.0;
}

static size_t dtype_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

static const char *dtype_name(ncclDataType_t t) {
  static const char *const names[] = {"ncclInt8",    "ncclUint8",   "ncclInt32",     "ncclUint32",
                                      "ncclInt64",   "ncclUint64",  "ncclFloat16",   "ncclFloat32",
                                      "ncclFloat64", "ncclBfloat16", "ncclFloat8e4m3", "ncclFloat8e5m2"};
  return t >= 0 && t < ncclNumTypes ? names[t] : "an invalid datatype";
}

static const char *redop_name(ncclRedOp_t op) {
  static const char *const names[] = {"ncclSum", "ncclProd", "ncclMax", "ncclMin", "ncclAvg"};
  return op >= 0 && op < ncclNumOps ? names[op] : "an invalid operation";
}

static const void *stream_key(cudaStream_t s) {
  // The emulator runs the legacy and per-thread default streams as one.
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return nullptr;
  return s;
}

// ---- matching (under g_mu) --------------------------------------------------------------------
static void finish(Op *op, State st, ncclResult_t r, const std::string &msg) {
  if (op->state != State::kPending) return;
  op->state = st;
  op->result = r;
  op->msg = msg;
}

// Fails every pending operation of the clique and every later one.
void poison(Clique &c, const std::string &why) {
  if (!c.poisoned) {
    c.poisoned = true;
    c.poison_msg = why;
  }
  auto fail_all = [&](Op *op) { finish(op, State::kFailed, ncclRemoteError, c.poison_msg); };
  for (auto &q : c.sends) { for (Op *op : q) fail_all(op); q.clear(); }
  for (auto &q : c.recvs) { for (Op *op : q) fail_all(op); q.clear(); }
  for (auto &kv : c.colls) for (Op *op : kv.second) if (op) fail_all(op);
  c.colls.clear();
  g_cv.notify_all();
}

static void match_p2p(Clique &c, int src, int dst) {
  auto &sq = c.sends[static_cast<size_t>(src * c.n + dst)];
  auto &rq = c.recvs[static_cast<size_t>(src * c.n + dst)];
  while (!sq.empty() && !rq.empty()) {
    Op *s = sq.front(), *r = rq.front();
    sq.pop_front();
    rq.pop_front();
    if (s->count != r->count || s->dtype != r->dtype) {
      std::string m = strf("communicator #%llu: rank %d sends %zu elements of %s (%zu bytes) to "
                           "rank %d, whose matching ncclRecv expects %zu elements of %s (%zu bytes); "
                           "NCCL requires the same count and datatype on both sides",
                           c.serial, src, s->count, dtype_name(s->dtype), s->bytes, dst, r->count,
                           dtype_name(r->dtype), r->bytes);
      fail_msg(ncclInvalidUsage, true, m);
      finish(s, State::kFailed, ncclInvalidUsage, m);
      finish(r, State::kFailed, ncclInvalidUsage, m);
      poison(c, "communicator poisoned by an earlier error: " + m);
      return;
    }
    if (s->bytes) std::memmove(r->recv, s->send, s->bytes);
    finish(s, State::kDone, ncclSuccess, "");
    finish(r, State::kDone, ncclSuccess, "");
  }
  g_cv.notify_all();
}

template <typename T>
static void reduce_into(std::vector<unsigned char> &acc, const std::vector<Op *> &ops,
                        ncclRedOp_t red) {
  const size_t n = ops[0]->count;
  acc.resize(n * sizeof(T));
  T *out = reinterpret_cast<T *>(acc.data());
  std::memcpy(out, ops[0]->send, n * sizeof(T));
  for (size_t r = 1; r < ops.size(); ++r) {
    const T *in = static_cast<const T *>(ops[r]->send);
    for (size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, in + i, sizeof(T));
      switch (red) {
        case ncclSum: case ncclAvg: out[i] = static_cast<T>(out[i] + v); break;
        case ncclProd: out[i] = static_cast<T>(out[i] * v); break;
        case ncclMax: out[i] = v > out[i] ? v : out[i]; break;
        case ncclMin: out[i] = v < out[i] ? v : out[i]; break;
        default: break;
      }
    }
  }
  if (red == ncclAvg)
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<T>(out[i] / static_cast<T>(ops.size()));
}

static void complete_collective(Clique &c, unsigned long long seq) {
  std::vector<Op *> ops = c.colls[seq];
  c.colls.erase(seq);
  const Op *a = ops[0];
  for (int r = 1; r < c.n; ++r) {
    const Op *b = ops[static_cast<size_t>(r)];
    if (b->count != a->count || b->dtype != a->dtype || b->redop != a->redop) {
      std::string m = strf("communicator #%llu: collective #%llu differs between ranks: rank 0 "
                           "calls ncclAllReduce(count %zu, %s, %s), rank %d ncclAllReduce(count "
                           "%zu, %s, %s)",
                           c.serial, seq, a->count, dtype_name(a->dtype), redop_name(a->redop), r,
                           b->count, dtype_name(b->dtype), redop_name(b->redop));
      fail_msg(ncclInvalidUsage, true, m);
      for (Op *op : ops) finish(op, State::kFailed, ncclInvalidUsage, m);
      poison(c, "communicator poisoned by an earlier error: " + m);
      return;
    }
  }
  std::vector<unsigned char> acc;
  switch (a->dtype) {
    case ncclInt8: reduce_into<int8_t>(acc, ops, a->redop); break;
    case ncclUint8: reduce_into<uint8_t>(acc, ops, a->redop); break;
    case ncclInt32: reduce_into<int32_t>(acc, ops, a->redop); break;
    case ncclUint32: reduce_into<uint32_t>(acc, ops, a->redop); break;
    case ncclInt64: reduce_into<int64_t>(acc, ops, a->redop); break;
    case ncclUint64: reduce_into<uint64_t>(acc, ops, a->redop); break;
    case ncclFloat32: reduce_into<float>(acc, ops, a->redop); break;
    case ncclFloat64: reduce_into<double>(acc, ops, a->redop); break;
    default: break;  // refused at the call
  }
  for (Op *op : ops) {
    if (op->bytes) std::memcpy(op->recv, acc.data(), op->bytes);
    finish(op, State::kDone, ncclSuccess, "");
  }
  g_cv.notify_all();
}

static void post(Op *op) {
  Clique &c = *op->clique;
  if (c.poisoned) {
    finish(op, State::kFailed, ncclRemoteError, c.poison_msg);
    return;
  }
  switch (op->kind) {
    case Kind::kSend:
      c.sends[static_cast<size_t>(op->rank * c.n + op->peer)].push_back(op);
      match_p2p(c, op->rank, op->peer);
      break;
    case Kind::kRecv:
      c.recvs[static_cast<size_t>(op->peer * c.n + op->rank)].push_back(op);
      match_p2p(c, op->peer, op->rank);
      break;
    case Kind::kAllReduce: {
      const unsigned long long seq = c.coll_seq[static_cast<size_t>(op->rank)]++;
      auto &slot = c.colls[seq];
      slot.resize(static_cast<size_t>(c.n), nullptr);
      slot[static_cast<size_t>(op->rank)] = op;
      if (std::all_of(slot.begin(), slot.end(), [](Op *o) { return o != nullptr; }))
        complete_collective(c, seq);
      break;
    }
  }
}

// What a pending operation waits for, for the watchdog's message.
static std::string describe_wait(const Op &op) {
  const Clique &c = *op.clique;
  if (op.kind == Kind::kAllReduce) {
    std::string missing;
    for (const auto &kv : c.colls)
      for (size_t r = 0; r < kv.second.size(); ++r)
        if (kv.second[r] == &op) {
          for (size_t q = 0; q < kv.second.size(); ++q)
            if (!kv.second[q]) missing += (missing.empty() ? "" : ", ") + std::to_string(q);
          return strf("rank %d: ncclAllReduce #%llu (%zu elements) waits for rank(s) %s",
                      op.rank, kv.first, op.count, missing.c_str());
        }
    return strf("rank %d: ncclAllReduce (%zu elements) waits", op.rank, op.count);
  }
  const bool s = op.kind == Kind::kSend;
  return strf("rank %d: %s of %zu bytes %s rank %d waits for that rank's matching %s%s", op.rank,
              kind_name(op.kind), op.bytes, s ? "to" : "from", op.peer, s ? "ncclRecv" : "ncclSend",
              op.peer == op.rank ? " (a rank's send to itself needs its receive in the same group)"
                                 : "");
}

// Posts ops (one group of this thread) and waits until each has met its peers. Returns the
// first failure, with its message in t_last_error.
static ncclResult_t execute(std::vector<Op> &ops) {
  std::unique_lock<std::mutex> lock(g_mu);
  for (Op &op : ops) {
    op.state = State::kPending;
    post(&op);
  }
  auto all_done = [&] {
    return std::all_of(ops.begin(), ops.end(), [](const Op &o) { return o.state != State::kPending; });
  };
  const double limit = timeout_s();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                               std::chrono::duration<double>(limit));
  if (!g_cv.wait_until(lock, deadline, all_done)) {
    std::string m = strf("watchdog: no progress in %g s (MOE_EMU_NCCL_TIMEOUT); the peers never "
                         "posted the matching operations:", limit);
    for (const Op &op : ops)
      if (op.state == State::kPending)
        m += strf("\n  communicator #%llu %s", op.clique->serial, describe_wait(op).c_str());
    m += "\n  (every rank must call the same collectives in the same order, and the same number "
         "of sends and receives per peer)";
    fail_msg(ncclSystemError, true, m);
    std::vector<Op *> mine;
    for (Op &op : ops)
      if (op.state == State::kPending) mine.push_back(&op);
    for (Op *op : mine) {
      finish(op, State::kFailed, ncclSystemError, m);
      poison(*op->clique, "communicator poisoned: a rank's watchdog fired: " + m);
    }
  }
  // Nothing of ours may stay queued (poison cleared the queues of a failed clique).
  for (const Op &op : ops) {
    if (op.state == State::kFailed) {
      ncclComm *owner = op.clique->members[static_cast<size_t>(op.rank)];
      if (owner && owner->async_error == ncclSuccess) owner->async_error = op.result;
    }
  }
  for (const Op &op : ops)
    if (op.state == State::kFailed) {
      t_last_error = op.msg;
      return op.result;
    }
  return ncclSuccess;
}

// ---- argument checks --------------------------------------------------------------------------
ncclResult_t check_comm(const ncclComm *comm, const char *fn) {
  if (!comm) return fail(ncclInvalidArgument, "%s: comm is NULL", fn);
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_live.count(comm))
    return fail(ncclInvalidArgument, "%s: %p is not a live communicator (destroyed or aborted?)", fn,
                static_cast<const void *>(comm));
  return ncclSuccess;
}

static ncclResult_t check_buffer(const void *p, size_t bytes, const char *fn, const char *what) {
  if (bytes == 0) return ncclSuccess;
  if (!p) return fail(ncclInvalidArgument, "%s: %s is NULL", fn, what);
  if (!moe_emu::is_device_memory(p, bytes))
    return fail(ncclInvalidArgument, "%s: %s [%p, +%zu bytes) is not inside one device allocation "
                "(cudaMalloc)", fn, what, p, bytes);
  return ncclSuccess;
}

// Records a failure inside a group so that ncclGroupEnd reports it too.
ncclResult_t group_error(ncclResult_t r) {
  if (t_group.depth > 0 && t_group.error == ncclSuccess) t_group.error = r;
  return r;
}

// A checked operation: queued in the open group, or launched as a group of one.
ncclResult_t submit(Op op) {
  if (t_group.depth > 0) {
    for (const auto &init : t_group.inits)
      if (init.second == op.clique)
        return group_error(fail(ncclInvalidUsage, "%s: the communicator's ncclCommInitRank is in "
                                "the same group (NCCL allows initialization or communication in "
                                "one group, not both)", kind_name(op.kind)));
    t_group.ops.push_back(std::move(op));
    return ncclSuccess;
  }
  std::vector<Op> ops;
  ops.push_back(std::move(op));
  return launch(std::move(ops));
}

ncclResult_t make_op(Kind kind, const void *send, void *recv, size_t count, ncclDataType_t dt,
                     ncclRedOp_t red, int peer, ncclComm_t comm, cudaStream_t stream, Op *out) {
  const char *fn = kind_name(kind);
  ncclResult_t r = check_comm(comm, fn);
  if (r != ncclSuccess) return r;
  const size_t es = dtype_size(dt);
  if (es == 0) return fail(ncclInvalidArgument, "%s: invalid datatype %d", fn, (int)dt);
  if (count > SIZE_MAX / es) return fail(ncclInvalidArgument, "%s: count %zu overflows", fn, count);
  if (kind != Kind::kAllReduce && (peer < 0 || peer >= comm->nranks))
    return fail(ncclInvalidArgument, "%s: peer %d is not a rank of this %d-rank communicator", fn,
                peer, comm->nranks);
  if (kind == Kind::kAllReduce) {
    if (red < ncclSum || red >= ncclNumOps)
      return fail(ncclInvalidArgument, "%s: invalid reduction %d", fn, (int)red);
    if (dt == ncclFloat16 || dt == ncclBfloat16 || dt == ncclFloat8e4m3 || dt == ncclFloat8e5m2)
      return fail(ncclInvalidUsage, "%s: reductions in datatype %d are not emulated", fn, (int)dt);
  }
  const size_t bytes = count * es;
  if (kind != Kind::kRecv && (r = check_buffer(send, bytes, fn, "sendbuff")) != ncclSuccess) return r;
  if (kind != Kind::kSend && (r = check_buffer(recv, bytes, fn, "recvbuff")) != ncclSuccess) return r;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (comm->clique->poisoned)
      return fail(ncclRemoteError, "%s: %s", fn, comm->clique->poison_msg.c_str());
  }
  out->kind = kind;
  out->clique = comm->clique;
  out->rank = comm->rank;
  out->peer = peer;
  out->send = send;
  out->recv = recv;
  out->count = count;
  out->bytes = bytes;
  out->dtype = dt;
  out->redop = red;
  out->stream = stream;
  return ncclSuccess;
}

// Runs a group's operations in stream order: one host operation per stream (nested, streams in
// address order), which executes the communication and returns when it is complete.
ncclResult_t launch(std::vector<Op> ops) {
  if (ops.empty()) return ncclSuccess;
  std::vector<const void *> keys;
  std::vector<cudaStream_t> streams;
  for (const Op &op : ops) {
    const void *k = stream_key(op.stream);
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
      keys.push_back(k);
      streams.push_back(op.stream);
    }
  }
  std::vector<size_t> order(streams.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return reinterpret_cast<uintptr_t>(keys[a]) < reinterpret_cast<uintptr_t>(keys[b]);
  });

  bool capturing = false;
  for (cudaStream_t s : streams) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (s != nullptr && cudaStreamIsCapturing(s, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone)
      capturing = true;
  }
  if (capturing) {
    if (streams.size() > 1)
      return fail(ncclInvalidUsage, "ncclGroupEnd: a group on several streams while one captures a "
                  "CUDA graph is not emulated");
    // Recorded: the graph launch performs the communication (as the captured NCCL kernel).
    auto recorded = std::make_shared<std::vector<Op>>(std::move(ops));
    cudaError_t e = moe_emu::enqueue_host(streams[0], [recorded]() -> cudaError_t {
      std::vector<Op> run = *recorded;
      for (const Op &op : run) {
        std::lock_guard<std::mutex> lock(g_mu);
        if (!op.clique->members[static_cast<size_t>(op.rank)]) {
          fail_msg(ncclInvalidUsage, true, "graph launch: a captured NCCL operation's communicator "
                   "was destroyed");
          return cudaErrorLaunchFailure;
        }
      }
      const ncclResult_t r = execute(run);
      if (r != ncclSuccess) {
        std::fprintf(stderr, "[moe NCCL emulator] graph launch: captured NCCL operation failed: %s\n",
                     t_last_error.c_str());
        return cudaErrorLaunchFailure;
      }
      return cudaSuccess;
    });
    if (e != cudaSuccess)
      return fail(ncclUnhandledCudaError, "ncclGroupEnd: enqueue on the capturing stream: %s",
                  cudaGetErrorString(e));
    return ncclSuccess;
  }

  // Two executions of one communicator on one stream would wait for each other forever.
  const int token = 0;
  const void *me = &token;  // this execution
  auto unregister = [me] {
    std::lock_guard<std::mutex> lock(g_mu);
    for (auto it = g_busy.begin(); it != g_busy.end();) {
      if (it->second.second == me) it = g_busy.erase(it);
      else ++it;
    }
  };
  {
    std::unique_lock<std::mutex> lock(g_mu);
    for (const Op &op : ops) {
      const void *k = stream_key(op.stream);
      const Clique *c = op.clique.get();
      bool conflict = false, mine = false;
      auto range = g_busy.equal_range(k);
      for (auto it = range.first; it != range.second; ++it)
        if (it->second.first == c) (it->second.second == me ? mine : conflict) = true;
      if (conflict) {  // the rank already waiting there would wait forever: release it too
        const std::string m =
            strf("%s: rank %d of communicator #%llu uses stream %p, on which another rank of the "
                 "same communicator is blocked: NCCL kernels of two ranks on one stream wait for "
                 "each other forever (give every rank its own stream; the real NCCL refuses two "
                 "ranks on one GPU)", kind_name(op.kind), op.rank, c->serial, k);
        poison(*op.clique, "communicator poisoned: " + m);
        lock.unlock();
        unregister();
        return fail_msg(ncclInvalidUsage, true, m);
      }
      if (!mine) g_busy.emplace(k, std::make_pair(c, me));
    }
  }
  ncclResult_t result = ncclSuccess;
  std::string msg;
  std::function<cudaError_t()> body = [&]() -> cudaError_t {
    result = execute(ops);
    msg = t_last_error;
    return cudaSuccess;
  };
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    cudaStream_t s = streams[*it];
    std::function<cudaError_t()> inner = std::move(body);
    body = [s, inner]() { return moe_emu::enqueue_host(s, inner); };
  }
  const cudaError_t e = body();
  unregister();
  if (e != cudaSuccess)
    return fail(ncclUnhandledCudaError, "ncclGroupEnd: enqueue on the stream: %s", cudaGetErrorString(e));
  if (result != ncclSuccess) t_last_error = msg;
  return result;
}

// Waits until every rank of the clique has joined (ncclCommInitRank blocks until then).
ncclResult_t wait_joined(const std::shared_ptr<Clique> &c, int rank) {
  std::unique_lock<std::mutex> lock(g_mu);
  const double limit = timeout_s();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                               std::chrono::duration<double>(limit));
  if (!g_cv.wait_until(lock, deadline, [&] { return c->joined == c->n || c->poisoned; })) {
    std::string missing;
    for (int r = 0; r < c->n; ++r)
      if (!c->members[static_cast<size_t>(r)]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    std::string m = strf("watchdog: ncclCommInitRank of rank %d (communicator #%llu, %d ranks): "
                         "rank(s) %s never joined in %g s (MOE_EMU_NCCL_TIMEOUT)",
                         rank, c->serial, c->n, missing.c_str(), limit);
    fail_msg(ncclSystemError, true, m);
    poison(*c, "communicator poisoned: " + m);
    return ncclSystemError;
  }
  if (c->poisoned) return fail(ncclRemoteError, "ncclCommInitRank: %s", c->poison_msg.c_str());
  return ncclSuccess;
}

void release(ncclComm *comm) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_live.erase(comm);
  Clique &c = *comm->clique;
  if (comm->rank < c.n && c.members[static_cast<size_t>(comm->rank)] == comm)
    c.members[static_cast<size_t>(comm->rank)] = nullptr;
  // A clique still joining gives up its id once a member leaves: nobody else can complete it.
  for (auto it = g_ids.begin(); it != g_ids.end(); ++it)
    if (it->second.get() == &c) { g_ids.erase(it); break; }
  g_cv.notify_all();
}

std::shared_ptr<Clique> new_clique(int n) {
  auto c = std::make_shared<Clique>();
  c->n = n;
  c->serial = ++g_serial;
  c->members.assign(static_cast<size_t>(n), nullptr);
  c->sends.resize(static_cast<size_t>(n) * n);
  c->recvs.resize(static_cast<size_t>(n) * n);
  c->coll_seq.assign(static_cast<size_t>(n), 0);
  return c;
}

}  // namespace nccl_emu
