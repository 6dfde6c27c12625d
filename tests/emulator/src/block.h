// Internal to the emulator: the state of the block being run, shared by the scheduler
// (scheduler.cc: fibers, barriers, warp collectives, cp.async) and the Hopper pieces (hopper.cc:
// mbarrier, TMA, wgmma).
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <vector>

#include "moe_emu/emu.h"

namespace moe_emu {
namespace detail {

enum class State { kReady, kAtBarrier, kAtWarp, kAtWarpgroup, kAtMbarrier, kDone };

struct AsyncCopy {
  uint32_t dst;
  const void *src;
  size_t src_bytes, total_bytes;
  int group;  // -1 until committed
};

struct Fiber {
  std::vector<AsyncCopy> async_copies;  // cp.async issued and not yet performed
  int async_groups = 0;                 // groups committed so far
  void *sp = nullptr;
  State state = State::kReady;
  uint3 tid{};
  int linear = 0;
  void *asan_fake = nullptr;
  uint32_t wait_bar = 0, wait_parity = 0;  // kAtMbarrier
};

// PTX ISA, mbarrier object: expected arrival count, pending arrivals of the current phase,
// tx-count; phase = phases completed so far (the current phase's parity is phase & 1).
struct Mbarrier {
  uint32_t expected = 0, pending = 0;
  int64_t tx = 0;
  uint64_t phase = 0;
};

struct TmaCopy {
  uint32_t dst, bar;
  TensorMapRecord map;
  int32_t c0, c1;
};

struct WgmmaOp {
  bool bf16, scale_d;
  int n;
  uint64_t desc_a, desc_b;
  float *d[128];
  int group;  // -1 until committed
};

enum WarpgroupOp : int { kWgMma = 1, kWgCommit, kWgWait };

struct WarpgroupSync {
  int arrived = 0, op = 0;
  WgmmaOp in{};                  // the first thread's operands; the others must match
  std::vector<WgmmaOp> pending;  // issued, not yet performed
  int groups = 0;                // commit groups so far
  int deferred_below = -1;       // a wait_group every thread reached: groups below it are
                                 // performed once nothing else in the block can run
};

struct WarpSync {
  uint32_t arrived = 0, mask = 0;
  int op = 0;
  const char *first_op_name = nullptr;
  unsigned char in[32][kWarpInBytes];
  unsigned char out[32][kWarpOutBytes];
};

struct BlockRun {
  const LaunchSpec *spec = nullptr;
  const std::function<void()> *body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<WarpSync> warps;
  std::vector<WarpgroupSync> warpgroups;
  std::map<uint32_t, Mbarrier> mbarriers;
  std::vector<TmaCopy> tma_pending;
  int n = 0, at_barrier = 0, done = 0;
  Fiber *current = nullptr;
  void *sched_sp = nullptr;
  unsigned char *smem = nullptr;
  size_t smem_bytes = 0;
  const void *sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
};

// The block running on this OS thread (aborts outside a kernel), and the switch from the current
// fiber back to the scheduler (scheduler.cc).
BlockRun &run();
void yield_to_scheduler(BlockRun &r, Fiber &f);

// hopper.cc, for the scheduler: the name of a warpgroup operation, and the asynchronous work it
// completes when no thread can run (a deferred wgmma wait of one warpgroup; the queued TMA copies
// that complete on bar, all of them for bar = ~0u). Each returns whether it did anything.
const char *wg_op_name(int op);
bool complete_deferred_wgmma_wait(BlockRun &r);
bool flush_tma(BlockRun &r, uint32_t bar);

// A 16-bit tensor-core operand (the bits of a bf16 or an fp16) as float: mma.sync (scheduler.cc)
// and wgmma (hopper.cc) read their operands the same way.
inline float operand16_to_f32(uint16_t h, bool bf16) {
  if (bf16) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half_raw raw;
  raw.x = h;
  return __half2float(__half(raw));
}

}  // namespace detail
}  // namespace moe_emu
