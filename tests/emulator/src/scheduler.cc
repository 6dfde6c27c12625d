// The emulated SM: every thread of a block is a fiber with its own stack, all on the OS thread
// that launched the grid. A fiber runs until it reaches __syncthreads, a warp collective or its
// end; the scheduler then runs the next ready fiber. Blocks run one after the other.
#include "scheduler.h"

#include "block.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define MOE_EMU_ASAN 1
#endif

#if !defined(__x86_64__)
#error "the emulator's fiber switch is written for x86-64"
#endif

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save, and resumes the fiber whose stack pointer is next.
extern "C" void moe_emu_switch(void **save, void *next);
asm(R"(
  .text
  .p2align 4
  .type moe_emu_switch, @function
moe_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size moe_emu_switch, .-moe_emu_switch
)");

namespace moe_emu {
using namespace detail;

thread_local Builtins t_builtins;

void fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "\n[moe CUDA emulator] fatal: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  std::fflush(stderr);
  std::abort();
}

namespace {

constexpr size_t kStackBytes = 128 * 1024;  // kernels keep tiles "in registers"
constexpr size_t kGuardBytes = 4096;


// Fiber stacks of this OS thread, reused by every block it runs.
struct StackPool {
  unsigned char *base = nullptr;
  size_t count = 0;
  ~StackPool() {
    if (base) munmap(base, count * (kStackBytes + kGuardBytes));
  }
  unsigned char *get(size_t i, size_t need) {
    if (need > count) {
      if (base) munmap(base, count * (kStackBytes + kGuardBytes));
      const size_t bytes = need * (kStackBytes + kGuardBytes);
      void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) fatal("mmap of %zu bytes of fiber stacks failed", bytes);
      base = static_cast<unsigned char *>(p);
      count = need;
      for (size_t k = 0; k < count; ++k)  // a guard page below each stack: overflow faults
        mprotect(base + k * (kStackBytes + kGuardBytes), kGuardBytes, PROT_NONE);
    }
    return base + i * (kStackBytes + kGuardBytes) + kGuardBytes;
  }
};

thread_local BlockRun *t_run = nullptr;
thread_local StackPool t_stacks;

// MOE_EMU_SCHEDULE=reverse runs the ready threads of a block from the last to the first, so a
// read that only a missing barrier orders sees the other outcome than in the default order.
bool reverse_order() {
  static const bool reverse = [] {
    const char *s = std::getenv("MOE_EMU_SCHEDULE");
    return s && std::strcmp(s, "reverse") == 0;
  }();
  return reverse;
}

const char *op_name(int op) {
  switch (op) {
    case kOpSyncWarp: return "__syncwarp";
    case kOpShflIdx: return "__shfl_sync";
    case kOpShflXor: return "__shfl_xor_sync";
    case kOpShflDown: return "__shfl_down_sync";
    case kOpShflUp: return "__shfl_up_sync";
    case kOpBallot: return "__ballot_sync";
    case kOpAny: return "__any_sync";
    case kOpAll: return "__all_sync";
    case kOpLdmatrixX4: return "ldmatrix.x4";
    case kOpMmaBf16: return "mma.m16n8k16.bf16";
    case kOpMmaF16: return "mma.m16n8k16.f16";
  }
  return "?";
}

}  // namespace

BlockRun &detail::run() {
  if (!t_run || !t_run->current) fatal("a device built-in was called outside a kernel");
  return *t_run;
}

void asan_enter_fiber(BlockRun &r, Fiber &f) {
#ifdef MOE_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake, &r.sched_stack_bottom, &r.sched_stack_size);
#else
  (void)r;
  (void)f;
#endif
}

// Back to the scheduler from the current fiber.
void detail::yield_to_scheduler(BlockRun &r, Fiber &f) {
#ifdef MOE_EMU_ASAN
  __sanitizer_start_switch_fiber(f.state == State::kDone ? nullptr : &f.asan_fake, r.sched_stack_bottom,
                                 r.sched_stack_size);
#endif
  moe_emu_switch(&f.sp, r.sched_sp);
  asan_enter_fiber(r, f);
}

namespace {

// A thread must not exit with wgmma work its warpgroup never waited for (the accumulators would
// be lost). Out of line: fiber_main's own frame never returns, so it must stay free of locals
// that AddressSanitizer would leave poisoned on the reused fiber stack.
__attribute__((noinline)) void check_no_wgmma_in_flight(BlockRun &r, const Fiber &f) {
  if (!r.warpgroups.empty() && !r.warpgroups[static_cast<size_t>(f.linear / 128)].pending.empty())
    fatal("kernel %s: thread %d exits with wgmma operations its warpgroup never waited for", r.spec->name, f.linear);
}

void fiber_main() {
  BlockRun &r = *t_run;
  Fiber &f = *r.current;
  asan_enter_fiber(r, f);
  (*r.body)();
  cp_async_wait_group(0);  // copies still in flight land before the block's memory goes
  check_no_wgmma_in_flight(r, f);
  f.state = State::kDone;
  ++r.done;
#ifdef MOE_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, r.sched_stack_bottom, r.sched_stack_size);
#endif
  moe_emu_switch(&f.sp, r.sched_sp);
  fatal("a finished fiber was resumed");
}

void init_fiber(Fiber &f, unsigned char *stack) {
  uintptr_t top = reinterpret_cast<uintptr_t>(stack + kStackBytes) & ~uintptr_t(15);
  auto *w = reinterpret_cast<uint64_t *>(top);
  w[-1] = 0;                                              // fiber_main's return address: none
  w[-2] = reinterpret_cast<uint64_t>(&fiber_main);        // moe_emu_switch's ret target
  for (int i = 3; i <= 8; ++i) w[-i] = 0;                 // rbp rbx r12 r13 r14 r15
  uint32_t csr[2];
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  uint16_t cw;
  asm volatile("fnstcw %0" : "=m"(cw));
  csr[1] = cw;
  std::memcpy(&w[-9], csr, 8);
  f.sp = &w[-9];
}

void resume(BlockRun &r, Fiber &f) {
  r.current = &f;
  t_builtins.thread_idx = f.tid;
#ifdef MOE_EMU_ASAN
  void *fake = nullptr;
  const unsigned char *stack = static_cast<unsigned char *>(f.sp);
  (void)stack;
  unsigned char *base = t_stacks.get(static_cast<size_t>(f.linear), static_cast<size_t>(r.n));
  __sanitizer_start_switch_fiber(&fake, base, kStackBytes);
  moe_emu_switch(&r.sched_sp, f.sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  moe_emu_switch(&r.sched_sp, f.sp);
#endif
  r.current = nullptr;
}

[[noreturn]] void deadlock(BlockRun &r) {
  std::fprintf(stderr, "\n[moe CUDA emulator] deadlock in kernel %s, block (%u,%u,%u) of %d threads: "
                       "%d at __syncthreads, %d finished\n",
               r.spec->name, t_builtins.block_idx.x, t_builtins.block_idx.y, t_builtins.block_idx.z, r.n,
               r.at_barrier, r.done);
  for (size_t w = 0; w < r.warps.size(); ++w)
    if (r.warps[w].arrived)
      std::fprintf(stderr, "  warp %zu: lanes 0x%08x of mask 0x%08x wait in %s\n", w, r.warps[w].arrived,
                   r.warps[w].mask, op_name(r.warps[w].op));
  for (size_t g = 0; g < r.warpgroups.size(); ++g)
    if (r.warpgroups[g].arrived)
      std::fprintf(stderr, "  warpgroup %zu: %d of 128 threads wait in %s\n", g, r.warpgroups[g].arrived,
                   wg_op_name(r.warpgroups[g].op));
  int shown = 0;
  for (const auto &f : r.fibers) {
    if (f.state != State::kAtMbarrier) continue;
    if (shown++ == 8) {
      std::fprintf(stderr, "  ... more threads wait on mbarriers\n");
      break;
    }
    const Mbarrier &m = r.mbarriers[f.wait_bar];
    std::fprintf(stderr,
                 "  thread %d waits on the mbarrier at 0x%x for parity %u: %llu phases completed, %u of %u "
                 "arrivals pending, tx-count %lld\n",
                 f.linear, f.wait_bar, f.wait_parity, static_cast<unsigned long long>(m.phase), m.pending,
                 m.expected, static_cast<long long>(m.tx));
  }
  fatal("a barrier, warp collective or mbarrier phase that some threads of the block never reach");
}

// Computes every participating lane's output of a completed warp collective.
void complete_warp(WarpSync &w, int warp_index) {
  const uint32_t mask = w.mask;
  switch (w.op) {
    case kOpSyncWarp: break;
    case kOpShflIdx:
    case kOpShflXor:
    case kOpShflDown:
    case kOpShflUp:
      for (int lane = 0; lane < 32; ++lane) {
        if (!(mask >> lane & 1u)) continue;
        ShflIn in;
        std::memcpy(&in, w.in[lane], sizeof in);
        const int width = in.width;
        if (width < 1 || width > 32 || (width & (width - 1)))
          fatal("%s with width %d (a power of two up to 32)", op_name(w.op), width);
        const int seg = lane & ~(width - 1), pos = lane & (width - 1);
        int src = lane;
        if (w.op == kOpShflIdx) src = seg + (in.param & (width - 1));
        else if (w.op == kOpShflXor) { const int p = pos ^ in.param; src = (p < width && p >= 0) ? seg + p : lane; }
        else if (w.op == kOpShflDown) src = pos + in.param < width ? lane + in.param : lane;
        else src = pos - in.param >= 0 ? lane - in.param : lane;
        if (!(mask >> src & 1u))
          fatal("%s in warp %d: lane %d reads lane %d, which is not in mask 0x%08x", op_name(w.op),
                warp_index, lane, src, mask);
        ShflIn s;
        std::memcpy(&s, w.in[src], sizeof s);
        std::memcpy(w.out[lane], &s.bits, 8);
      }
      break;
    case kOpBallot:
    case kOpAny:
    case kOpAll: {
      uint32_t bits = 0;
      for (int lane = 0; lane < 32; ++lane) {
        int pred;
        std::memcpy(&pred, w.in[lane], sizeof pred);
        if ((mask >> lane & 1u) && pred) bits |= 1u << lane;
      }
      const unsigned r = w.op == kOpBallot ? bits : w.op == kOpAny ? (bits != 0) : (bits == mask);
      for (int lane = 0; lane < 32; ++lane) std::memcpy(w.out[lane], &r, sizeof r);
      break;
    }
    case kOpLdmatrixX4: {
      // PTX ISA, ldmatrix .m8n8 .x4 .b16: lanes 8*i .. 8*i+7 give the addresses of rows 0..7 of
      // matrix i (16 bytes each); lane l receives in register i the 32-bit word l % 4 of row
      // l / 4 of matrix i (elements 2*(l%4), 2*(l%4)+1, the lower index in the low half).
      if (mask != 0xffffffffu) fatal("ldmatrix with mask 0x%08x: every lane of the warp takes part", mask);
      uint32_t rows[4][8][4];
      for (int lane = 0; lane < 32; ++lane) {
        uint32_t addr;
        std::memcpy(&addr, w.in[lane], 4);
        if (addr % 16) fatal("ldmatrix: lane %d gives row address 0x%x, not 16-byte aligned", lane, addr);
        std::memcpy(rows[lane / 8][lane % 8], shared_ptr(addr, 16), 16);
      }
      for (int lane = 0; lane < 32; ++lane) {
        uint32_t r[4];
        for (int i = 0; i < 4; ++i) r[i] = rows[i][lane / 4][lane % 4];
        std::memcpy(w.out[lane], r, 16);
      }
      break;
    }
    case kOpMmaBf16:
    case kOpMmaF16: {
      // PTX ISA, mma.m16n8k16 .row.col with 16-bit A/B and f32 C/D; g = lane >> 2, t = lane % 4:
      // A (16x16): a0,a1: (g, 2t..2t+1), a2,a3: (g+8, 2t..), a4,a5: (g, 2t+8..), a6,a7: (g+8, 2t+8..),
      // two per 32-bit register in that order, the lower index in the low half;
      // B (16x8, k x n): b0,b1: (k = 2t..2t+1, n = g), b2,b3: (k = 2t+8.., n = g);
      // C, D (16x8): c0,c1: (g, 2t..2t+1), c2,c3: (g+8, 2t..2t+1).
      if (mask != 0xffffffffu) fatal("mma.sync with mask 0x%08x: every lane of the warp takes part", mask);
      const bool bf16 = w.op == kOpMmaBf16;
      auto half_to_f32 = [bf16](uint16_t h) { return operand16_to_f32(h, bf16); };
      auto lo = [](uint32_t v) { return static_cast<uint16_t>(v & 0xffffu); };
      auto hi = [](uint32_t v) { return static_cast<uint16_t>(v >> 16); };
      float A[16][16], B[16][8], C[16][8];
      for (int lane = 0; lane < 32; ++lane) {
        MmaIn in;
        std::memcpy(&in, w.in[lane], sizeof in);
        const int g = lane >> 2, t = lane & 3;
        const int arow[4] = {g, g + 8, g, g + 8}, acol[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int r = 0; r < 4; ++r) {
          A[arow[r]][acol[r]] = half_to_f32(lo(in.a[r]));
          A[arow[r]][acol[r] + 1] = half_to_f32(hi(in.a[r]));
        }
        B[2 * t][g] = half_to_f32(lo(in.b[0]));
        B[2 * t + 1][g] = half_to_f32(hi(in.b[0]));
        B[2 * t + 8][g] = half_to_f32(lo(in.b[1]));
        B[2 * t + 9][g] = half_to_f32(hi(in.b[1]));
        C[g][2 * t] = in.c[0];
        C[g][2 * t + 1] = in.c[1];
        C[g + 8][2 * t] = in.c[2];
        C[g + 8][2 * t + 1] = in.c[3];
      }
      // Products of 16-bit floats are exact in fp32; the sum runs in k order, then adds C.
      float D[16][8];
      for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) {
          float s = 0.f;
          for (int k = 0; k < 16; ++k) s += A[m][k] * B[k][n];
          D[m][n] = C[m][n] + s;
        }
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        const float d[4] = {D[g][2 * t], D[g][2 * t + 1], D[g + 8][2 * t], D[g + 8][2 * t + 1]};
        std::memcpy(w.out[lane], d, 16);
      }
      break;
    }
    default: fatal("unknown warp collective %d", w.op);
  }
}

}  // namespace

void syncthreads() {
  BlockRun &r = run();
  Fiber &f = *r.current;
  f.state = State::kAtBarrier;
  ++r.at_barrier;
  yield_to_scheduler(r, f);
}

void warp_collective(int op, uint32_t mask, const void *in, size_t in_bytes, void *out, size_t out_bytes) {
  BlockRun &r = run();
  Fiber &f = *r.current;
  const int lane = f.linear & 31, warp = f.linear >> 5;
  WarpSync &w = r.warps[static_cast<size_t>(warp)];
  if (!(mask >> lane & 1u))
    fatal("%s in kernel %s: lane %d of warp %d calls it with mask 0x%08x, which leaves it out", op_name(op),
          r.spec->name, lane, warp, mask);
  if (in_bytes > kWarpInBytes || out_bytes > kWarpOutBytes) fatal("warp collective operand too large");
  if (w.arrived == 0) {
    w.op = op;
    w.mask = mask;
  } else if (w.op != op || w.mask != mask) {
    fatal("kernel %s, warp %d: lane %d calls %s (mask 0x%08x) while lanes 0x%08x wait in %s (mask 0x%08x)",
          r.spec->name, warp, lane, op_name(op), mask, w.arrived, op_name(w.op), w.mask);
  }
  if (in_bytes) std::memcpy(w.in[lane], in, in_bytes);
  w.arrived |= 1u << lane;
  if (w.arrived == mask) {  // the last lane in: compute, release the others, go on
    complete_warp(w, warp);
    w.arrived = 0;
    for (int l = 0; l < 32; ++l) {
      if (l == lane || !(mask >> l & 1u)) continue;
      Fiber &o = r.fibers[static_cast<size_t>(warp * 32 + l)];
      if (o.state == State::kAtWarp) o.state = State::kReady;
    }
  } else {
    f.state = State::kAtWarp;
    yield_to_scheduler(r, f);
  }
  if (out_bytes) std::memcpy(out, w.out[lane], out_bytes);
}

void *dynamic_smem() { return run().smem; }

void cp_async_queue(uint32_t dst, const void *src, size_t src_bytes, size_t total_bytes) {
  shared_ptr(dst, total_bytes);  // bounds-checked at issue
  run().current->async_copies.push_back(AsyncCopy{dst, src, src_bytes, total_bytes, -1});
}

void cp_async_commit_group() {
  Fiber &f = *run().current;
  for (auto &c : f.async_copies)
    if (c.group < 0) c.group = f.async_groups;
  ++f.async_groups;
}

void cp_async_wait_group(int newest_pending) {
  Fiber &f = *run().current;
  // Groups numbered below this one must be complete; uncommitted copies are not waited for.
  const int complete_below = f.async_groups - newest_pending;
  size_t kept = 0;
  for (size_t i = 0; i < f.async_copies.size(); ++i) {
    const AsyncCopy c = f.async_copies[i];
    if (c.group >= 0 && c.group < complete_below) {
      auto *d = static_cast<unsigned char *>(shared_ptr(c.dst, c.total_bytes));
      if (c.src_bytes) std::memcpy(d, c.src, c.src_bytes);
      std::memset(d + c.src_bytes, 0, c.total_bytes - c.src_bytes);
    } else {
      f.async_copies[kept++] = c;
    }
  }
  f.async_copies.resize(kept);
}

uint32_t shared_addr(const void *p) {
  BlockRun &r = run();
  const auto *c = static_cast<const unsigned char *>(p);
  if (!r.smem || c < r.smem || c > r.smem + r.smem_bytes)
    fatal("kernel %s: __cvta_generic_to_shared of %p, outside the block's dynamic shared memory "
          "(the emulator maps only that window to 32-bit shared addresses)",
          r.spec->name, p);
  return static_cast<uint32_t>(c - r.smem);
}

void *shared_ptr(uint32_t addr, size_t bytes) {
  BlockRun &r = run();
  if (static_cast<size_t>(addr) + bytes > r.smem_bytes)
    fatal("kernel %s, thread %u: shared access of %zu bytes at 0x%x past the %zu bytes of dynamic shared memory",
          r.spec->name, t_builtins.thread_idx.x, bytes, addr, r.smem_bytes);
  return r.smem + addr;
}


void run_grid(const LaunchSpec &spec, const std::function<void()> &body) {
  BlockRun r;
  r.spec = &spec;
  r.body = &body;
  const dim3 b = spec.block;
  r.n = static_cast<int>(b.x * b.y * b.z);
  r.fibers.resize(static_cast<size_t>(r.n));
  r.warps.resize(static_cast<size_t>((r.n + 31) / 32));
  std::vector<unsigned char> smem_storage;
  // Exactly the launch's bytes (AddressSanitizer sees overruns), 16-byte aligned by malloc.
  unsigned char *smem = spec.smem ? static_cast<unsigned char *>(aligned_alloc(256, (spec.smem + 255) / 256 * 256)) : nullptr;
  r.smem = smem;
  r.smem_bytes = spec.smem;
  BlockRun *saved = t_run;
  const Builtins saved_builtins = t_builtins;
  t_run = &r;
  t_builtins.block_dim = spec.block;
  t_builtins.grid_dim = spec.grid;
  t_stacks.get(0, static_cast<size_t>(r.n));
  for (unsigned bz = 0; bz < spec.grid.z; ++bz)
    for (unsigned by = 0; by < spec.grid.y; ++by)
      for (unsigned bx = 0; bx < spec.grid.x; ++bx) {
        t_builtins.block_idx = uint3{bx, by, bz};
        if (smem) std::memset(smem, 0xA5, spec.smem);  // shared memory starts as garbage
        int i = 0;
        for (unsigned z = 0; z < b.z; ++z)
          for (unsigned y = 0; y < b.y; ++y)
            for (unsigned x = 0; x < b.x; ++x, ++i) {
              Fiber &f = r.fibers[static_cast<size_t>(i)];
              f.state = State::kReady;
              f.tid = uint3{x, y, z};
              f.linear = i;
              f.asan_fake = nullptr;
              f.async_copies.clear();
              f.async_groups = 0;
              init_fiber(f, t_stacks.get(static_cast<size_t>(i), static_cast<size_t>(r.n)));
            }
        for (auto &w : r.warps) w.arrived = 0;
        r.warpgroups.assign(static_cast<size_t>(r.n % 128 == 0 ? r.n / 128 : 0), WarpgroupSync{});
        r.mbarriers.clear();
        r.tma_pending.clear();
        r.at_barrier = r.done = 0;
        while (r.done < r.n) {
          bool ran = false;
          for (int k = 0; k < r.n; ++k) {
            Fiber &f = r.fibers[static_cast<size_t>(reverse_order() ? r.n - 1 - k : k)];
            if (f.state == State::kReady) {
              resume(r, f);
              ran = true;
            }
          }
          if (ran) continue;
          // Nobody can run: a deferred wgmma wait completes, or queued TMA copies land (they may
          // complete a phase someone awaits).
          if (complete_deferred_wgmma_wait(r)) continue;
          if (!r.tma_pending.empty()) {
            flush_tma(r, ~0u);
            continue;
          }
          // Nobody can run: a barrier completes when every thread that has not exited is there.
          if (r.at_barrier > 0 && r.at_barrier + r.done == r.n) {
            for (auto &f : r.fibers)
              if (f.state == State::kAtBarrier) f.state = State::kReady;
            r.at_barrier = 0;
            continue;
          }
          if (r.done < r.n) deadlock(r);
        }
        flush_tma(r, ~0u);  // copies nobody waited for still land (and are bounds-checked)
      }
  free(smem);
  t_run = saved;
  t_builtins = saved_builtins;
}

}  // namespace moe_emu
