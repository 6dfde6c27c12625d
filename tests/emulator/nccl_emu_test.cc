// The emulated NCCL's own check (tests/emulator/src/nccl.cc): matching in issue order per peer,
// collectives, groups over several streams, and every way a program that would corrupt memory
// or hang on a real NCCL fails here instead, quickly and with a message.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

static_assert(MOE_EMU_NCCL, "the emulated NCCL's header");

namespace {

#define NCCL_OK(call) ASSERT_EQ((call), ncclSuccess) << ncclGetLastError(nullptr)

// Device memory holding n values of T, filled from host.
template <typename T>
struct Dev {
  T *p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count, T fill = T()) : n(count) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T) + 1), cudaSuccess);
    std::vector<T> h(n, fill);
    EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  Dev(const std::vector<T> &h) : Dev(h.size()) { Put(h); }
  ~Dev() { cudaFree(p); }
  void Put(const std::vector<T> &h) {
    EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> Get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

// P ranks as threads (ncclCommInitRank each, own stream); body(rank, comm, stream).
void Ranks(int P, const std::function<void(int, ncclComm_t, cudaStream_t)> &body) {
  ncclUniqueId id;
  NCCL_OK(ncclGetUniqueId(&id));
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r)
    threads.emplace_back([&, r] {
      cudaStream_t s = nullptr;
      ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
      ncclComm_t c = nullptr;
      NCCL_OK(ncclCommInitRank(&c, P, id, r));
      int rank = -1, count = -1;
      EXPECT_EQ(ncclCommUserRank(c, &rank), ncclSuccess);
      EXPECT_EQ(ncclCommCount(c, &count), ncclSuccess);
      EXPECT_EQ(rank, r);
      EXPECT_EQ(count, P);
      body(r, c, s);
      ncclCommDestroy(c);
      cudaStreamDestroy(s);
    });
  for (auto &t : threads) t.join();
}

// Short watchdog for the tests that provoke it; restored after.
struct Timeout {
  explicit Timeout(const char *s) { setenv("MOE_EMU_NCCL_TIMEOUT", s, 1); }
  ~Timeout() { unsetenv("MOE_EMU_NCCL_TIMEOUT"); }
};

TEST(NcclEmu, AllToAllInGroupsMatchesPerPeerInIssueOrder) {
  const int P = 3, n = 4;
  Ranks(P, [&](int r, ncclComm_t c, cudaStream_t s) {
    // Two messages to every peer in one group: the first send meets the first receive.
    std::vector<int32_t> h(2 * P * n);
    for (size_t i = 0; i < h.size(); ++i) h[i] = r * 1000 + (int32_t)i;
    Dev<int32_t> send(h), recv(2 * P * n, -1);
    NCCL_OK(ncclGroupStart());
    for (int m = 0; m < 2; ++m)
      for (int q = 0; q < P; ++q) {
        NCCL_OK(ncclSend(send.p + (m * P + q) * n, n, ncclInt32, q, c, s));
        NCCL_OK(ncclRecv(recv.p + (m * P + q) * n, n, ncclInt32, q, c, s));
      }
    NCCL_OK(ncclGroupEnd());
    std::vector<int32_t> got = recv.Get();
    for (int m = 0; m < 2; ++m)
      for (int q = 0; q < P; ++q)
        for (int i = 0; i < n; ++i)
          EXPECT_EQ(got[(m * P + q) * n + i], q * 1000 + (m * P + r) * n + i) << "rank " << r;
  });
}

TEST(NcclEmu, AllReduceInPlaceAndOutOfPlace) {
  const int P = 4;
  Ranks(P, [&](int r, ncclComm_t c, cudaStream_t s) {
    Dev<int64_t> v(std::vector<int64_t>{r, -r, INT64_MIN + r});
    NCCL_OK(ncclAllReduce(v.p, v.p, 3, ncclInt64, ncclMax, c, s));
    EXPECT_EQ(v.Get(), (std::vector<int64_t>{P - 1, 0, INT64_MIN + P - 1}));
    Dev<float> a(std::vector<float>{1.0f + r, 2.0f}), b(2, 0.0f);
    NCCL_OK(ncclAllReduce(a.p, b.p, 2, ncclFloat32, ncclSum, c, s));
    EXPECT_EQ(b.Get(), (std::vector<float>{10.0f, 8.0f}));
    NCCL_OK(ncclAllReduce(a.p, b.p, 2, ncclFloat32, ncclMin, c, s));
    EXPECT_EQ(b.Get(), (std::vector<float>{1.0f, 2.0f}));
  });
}

// One thread drives both ranks of an ncclCommInitAll clique, each on its own stream, in one
// group (NCCL's "management of multiple GPUs from one thread").
TEST(NcclEmu, OneThreadTwoRanksTwoStreams) {
  ncclComm_t c[2];
  const int devs[2] = {0, 0};
  NCCL_OK(ncclCommInitAll(c, 2, devs));
  cudaStream_t s[2];
  for (auto &x : s) ASSERT_EQ(cudaStreamCreateWithFlags(&x, cudaStreamNonBlocking), cudaSuccess);
  Dev<uint8_t> a(std::vector<uint8_t>{1, 2, 3}), b(std::vector<uint8_t>{7, 8, 9});
  Dev<uint8_t> ra(3, 0), rb(3, 0);
  NCCL_OK(ncclGroupStart());
  NCCL_OK(ncclSend(a.p, 3, ncclUint8, 1, c[0], s[0]));
  NCCL_OK(ncclRecv(ra.p, 3, ncclUint8, 1, c[0], s[0]));
  NCCL_OK(ncclSend(b.p, 3, ncclUint8, 0, c[1], s[1]));
  NCCL_OK(ncclRecv(rb.p, 3, ncclUint8, 0, c[1], s[1]));
  NCCL_OK(ncclGroupEnd());
  EXPECT_EQ(ra.Get(), (std::vector<uint8_t>{7, 8, 9}));
  EXPECT_EQ(rb.Get(), (std::vector<uint8_t>{1, 2, 3}));
  for (auto &x : c) EXPECT_EQ(ncclCommDestroy(x), ncclSuccess);
  for (auto &x : s) cudaStreamDestroy(x);
}

// A send and its receive that differ in size: both ranks fail, loudly, and the communicator is
// unusable after (the real NCCL would truncate, overrun or hang).
TEST(NcclEmu, MismatchedSizesFailBothRanks) {
  Timeout t("10");
  Ranks(2, [&](int r, ncclComm_t c, cudaStream_t s) {
    Dev<uint8_t> buf(64, 0);
    ncclResult_t res = r == 0 ? ncclSend(buf.p, 16, ncclUint8, 1, c, s)
                              : ncclRecv(buf.p, 24, ncclUint8, 0, c, s);
    EXPECT_EQ(res, ncclInvalidUsage);
    EXPECT_NE(std::string(ncclGetLastError(c)).find("expects 24 elements"), std::string::npos)
        << ncclGetLastError(c);
    ncclResult_t async = ncclSuccess;
    EXPECT_EQ(ncclCommGetAsyncError(c, &async), ncclSuccess);
    EXPECT_EQ(async, ncclInvalidUsage);
    EXPECT_EQ(ncclAllReduce(buf.p, buf.p, 1, ncclUint8, ncclMax, c, s), ncclRemoteError);
  });
}

TEST(NcclEmu, CollectivesThatDifferFail) {
  Ranks(2, [&](int r, ncclComm_t c, cudaStream_t s) {
    Dev<int32_t> v(4, r);
    EXPECT_EQ(ncclAllReduce(v.p, v.p, r == 0 ? 4 : 2, ncclInt32, ncclSum, c, s), ncclInvalidUsage);
    EXPECT_NE(std::string(ncclGetLastError(c)).find("differs between ranks"), std::string::npos);
  });
}

// A peer that never posts: the watchdog fails the waiting rank with a message that says what
// it waited for, instead of a hang.
TEST(NcclEmu, WatchdogInsteadOfHang) {
  Timeout t("0.3");
  std::atomic<bool> done{false};
  Ranks(2, [&](int r, ncclComm_t c, cudaStream_t s) {
    Dev<int32_t> v(8, 1);
    if (r == 1) {  // never posts; waits until rank 0 gave up, then finds the communicator dead
      while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      EXPECT_EQ(ncclRecv(v.p, 8, ncclInt32, 0, c, s), ncclRemoteError);
      EXPECT_NE(std::string(ncclGetLastError(c)).find("watchdog"), std::string::npos);
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(ncclSend(v.p, 8, ncclInt32, 1, c, s), ncclSystemError);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(waited, 0.25);
    EXPECT_LT(waited, 10.0);
    const std::string m = ncclGetLastError(c);
    EXPECT_NE(m.find("watchdog"), std::string::npos) << m;
    EXPECT_NE(m.find("rank 0: ncclSend of 32 bytes to rank 1 waits for that rank's matching ncclRecv"),
              std::string::npos) << m;
    done = true;
  });
}

TEST(NcclEmu, InitRankWatchdogWhenARankNeverJoins) {
  Timeout t("0.2");
  ncclUniqueId id;
  NCCL_OK(ncclGetUniqueId(&id));
  ncclComm_t c = reinterpret_cast<ncclComm_t>(1);
  EXPECT_EQ(ncclCommInitRank(&c, 2, id, 0), ncclSystemError);
  EXPECT_EQ(c, nullptr);
  EXPECT_NE(std::string(ncclGetLastError(nullptr)).find("rank(s) 1 never joined"), std::string::npos)
      << ncclGetLastError(nullptr);
}

// ncclCommAbort on one rank releases a peer blocked in an operation.
TEST(NcclEmu, AbortReleasesBlockedPeer) {
  ncclComm_t c[2];
  const int devs[2] = {0, 0};
  NCCL_OK(ncclCommInitAll(c, 2, devs));
  std::atomic<bool> posted{false};
  ncclResult_t res = ncclSuccess;
  std::string msg;
  std::thread waiter([&] {
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    Dev<int64_t> v(2, 0);
    posted = true;
    res = ncclAllReduce(v.p, v.p, 2, ncclInt64, ncclMax, c[1], s);
    msg = ncclGetLastError(c[1]);
    cudaStreamDestroy(s);
  });
  while (!posted) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(ncclCommAbort(c[0]), ncclSuccess);
  waiter.join();
  EXPECT_EQ(res, ncclRemoteError);
  EXPECT_NE(msg.find("rank 0 of communicator"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ncclCommAbort"), std::string::npos) << msg;
  EXPECT_EQ(ncclCommDestroy(c[1]), ncclSuccess);
}

// Two ranks of one communicator on one stream would each block the stream the other needs.
TEST(NcclEmu, TwoRanksOnOneStreamAreRefused) {
  Timeout t("5");
  ncclComm_t c[2];
  const int devs[2] = {0, 0};
  NCCL_OK(ncclCommInitAll(c, 2, devs));
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ncclResult_t res[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      Dev<int32_t> v(1, r);
      res[r] = ncclAllReduce(v.p, v.p, 1, ncclInt32, ncclSum, c[r], s);
    });
  for (auto &t : threads) t.join();
  // One is refused at once; the other, alone, then times out or sees the poisoned clique: no
  // hang either way, and at least one message names the shared stream.
  EXPECT_TRUE(res[0] == ncclInvalidUsage || res[1] == ncclInvalidUsage);
  for (auto &x : c) ncclCommDestroy(x);
  cudaStreamDestroy(s);
}

TEST(NcclEmu, ArgumentsAreChecked) {
  ncclComm_t c;
  const int dev = 0;
  NCCL_OK(ncclCommInitAll(&c, 1, &dev));
  std::vector<int32_t> host(4, 0);
  Dev<int32_t> d(4, 0);
  EXPECT_EQ(ncclSend(host.data(), 4, ncclInt32, 0, c, nullptr), ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(c)).find("not inside one device allocation"), std::string::npos);
  EXPECT_EQ(ncclSend(d.p, 5, ncclInt32, 0, c, nullptr), ncclInvalidArgument);  // overruns
  EXPECT_EQ(ncclSend(d.p, 4, ncclInt32, 1, c, nullptr), ncclInvalidArgument);  // no rank 1
  EXPECT_EQ(ncclAllReduce(d.p, d.p, 4, ncclInt32, (ncclRedOp_t)9, c, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(d.p, d.p, 4, ncclBfloat16, ncclSum, c, nullptr), ncclInvalidUsage);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  // A refused operation inside a group fails the group; nothing of it runs.
  Dev<int32_t> r(4, -1);
  d.Put({1, 2, 3, 4});
  NCCL_OK(ncclGroupStart());
  EXPECT_EQ(ncclRecv(r.p, 4, ncclInt32, 0, c, nullptr), ncclSuccess);
  EXPECT_EQ(ncclSend(host.data(), 4, ncclInt32, 0, c, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidArgument);
  EXPECT_EQ(r.Get(), (std::vector<int32_t>(4, -1)));
  // A rank sends to itself within one group.
  NCCL_OK(ncclGroupStart());
  NCCL_OK(ncclSend(d.p, 4, ncclInt32, 0, c, nullptr));
  NCCL_OK(ncclRecv(r.p, 4, ncclInt32, 0, c, nullptr));
  NCCL_OK(ncclGroupEnd());
  EXPECT_EQ(r.Get(), (std::vector<int32_t>{1, 2, 3, 4}));
  ncclUniqueId bad;
  std::memset(&bad, 0, sizeof bad);
  ncclComm_t c2 = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c2, 1, bad, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
  EXPECT_EQ(ncclCommDestroy(c), ncclInvalidArgument);  // no longer a live communicator
  EXPECT_EQ(ncclCommDestroy(nullptr), ncclSuccess);
  EXPECT_STREQ(ncclGetErrorString(ncclSuccess), "no error");
}

// ncclCommInitRank inside a group: the join completes at ncclGroupEnd.
TEST(NcclEmu, InitRankInAGroup) {
  ncclUniqueId id;
  NCCL_OK(ncclGetUniqueId(&id));
  ncclComm_t c[2] = {nullptr, nullptr};
  NCCL_OK(ncclGroupStart());
  for (int r = 0; r < 2; ++r) NCCL_OK(ncclCommInitRank(&c[r], 2, id, r));
  NCCL_OK(ncclGroupEnd());
  for (auto &x : c) EXPECT_EQ(ncclCommDestroy(x), ncclSuccess);
}

// An operation captured into a CUDA graph runs when the graph is launched, not at capture.
TEST(NcclEmu, CapturedOperationRunsAtGraphLaunch) {
  ncclComm_t c;
  const int dev = 0;
  NCCL_OK(ncclCommInitAll(&c, 1, &dev));
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  Dev<int64_t> a(std::vector<int64_t>{5}), b(1, 0);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(ncclAllReduce(a.p, b.p, 1, ncclInt64, ncclSum, c, s), ncclSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  EXPECT_EQ(b.Get(), std::vector<int64_t>{0});
  cudaGraphExec_t e = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(e, s), cudaSuccess);
  EXPECT_EQ(b.Get(), std::vector<int64_t>{5});
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
}

}  // namespace
