// The Hopper pieces of the emulated SM (tests/emulator/README.md, "Hopper"): mbarrier phases,
// TMA copies through the emulated tensor maps with the 128-byte swizzle, and wgmma as a
// warpgroup collective that reads its operands through shared-memory descriptors. Written from
// the PTX ISA; the scheduler (scheduler.cc) runs the fibers that call these.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "block.h"

namespace moe_emu {
using namespace detail;
namespace detail {

// shared_ptr for the scheduler itself (no current thread): TMA copies land from there.
void *smem_at(BlockRun &r, uint32_t addr, size_t bytes) {
  if (static_cast<size_t>(addr) + bytes > r.smem_bytes)
    fatal("kernel %s: shared access of %zu bytes at 0x%x past the %zu bytes of dynamic shared memory",
          r.spec->name, bytes, addr, r.smem_bytes);
  return r.smem + addr;
}

Mbarrier &mbarrier_at(BlockRun &r, uint32_t bar, const char *what) {
  auto it = r.mbarriers.find(bar);
  if (it == r.mbarriers.end())
    fatal("kernel %s, thread %u: %s on shared address 0x%x, which holds no initialized mbarrier",
          r.spec->name, t_builtins.thread_idx.x, what, bar);
  return it->second;
}

// Completes the current phase when nothing is pending, and wakes the threads waiting on it.
void mbarrier_check(BlockRun &r, uint32_t bar, Mbarrier &m) {
  if (m.pending != 0 || m.tx != 0) return;
  ++m.phase;
  m.pending = m.expected;
  for (auto &f : r.fibers)
    if (f.state == State::kAtMbarrier && f.wait_bar == bar) f.state = State::kReady;
}

void complete_tx(BlockRun &r, uint32_t bar, int64_t bytes) {
  Mbarrier &m = mbarrier_at(r, bar, "complete_tx");
  m.tx -= bytes;
  mbarrier_check(r, bar, m);
}

// The 128-byte swizzle (CU_TENSOR_MAP_SWIZZLE_128B; wgmma layout mode 1): within every 1024-byte
// block of shared memory, the 16-byte chunk index (address bits 4-6) is XORed with the row index
// of 128-byte rows (bits 7-9).
uint32_t swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7u) << 4); }

void perform_tma(BlockRun &r, const TmaCopy &c) {
  const TensorMapRecord &m = c.map;
  const uint32_t es = m.elem_bytes, box0 = m.box[0], box1 = m.box[1], row = box0 * es;
  for (uint32_t y = 0; y < box1; ++y)
    for (uint32_t x = 0; x < box0; ++x) {
      uint32_t a = c.dst + y * row + x * es;
      if (m.swizzle_bytes == 128) a = swizzle128(a);
      void *d = smem_at(r, a, es);
      const int64_t gx = static_cast<int64_t>(c.c0) + x, gy = static_cast<int64_t>(c.c1) + y;
      if (gx >= 0 && gy >= 0 && static_cast<uint64_t>(gx) < m.dim[0] && static_cast<uint64_t>(gy) < m.dim[1])
        std::memcpy(d, static_cast<const unsigned char *>(m.global) + gy * m.stride[1] + gx * es, es);
      else
        std::memset(d, 0, es);  // out of bounds: zeros (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    }
  complete_tx(r, c.bar, static_cast<int64_t>(row) * box1);  // the whole box counts, zeros too
}

// Performs the queued TMA copies that complete on bar (all of them for bar = ~0u), in issue order.
bool flush_tma(BlockRun &r, uint32_t bar) {
  bool any = false;
  std::vector<TmaCopy> keep;
  std::vector<TmaCopy> todo;
  for (const auto &c : r.tma_pending) (bar == ~0u || c.bar == bar ? todo : keep).push_back(c);
  r.tma_pending.swap(keep);
  for (const auto &c : todo) {
    perform_tma(r, c);
    any = true;
  }
  return any;
}

// Shared-memory address of element (row, k) of a K-major 16-bit wgmma operand (PTX ISA,
// "Matrix Descriptor Format" and the canonical K-major layouts): bits 0-13 start address >> 4,
// 16-29 leading dimension byte offset >> 4, 32-45 stride dimension byte offset >> 4, 49-51 base
// offset, 62-63 swizzle (0 none, 1 128B, 2 64B, 3 32B). No swizzle: 8 x 8 core matrices of 8
// rows of 16 bytes, LBO apart along K and SBO apart along M/N. 128B swizzle: 8-row atoms of
// 128-byte rows, SBO apart along M/N, the swizzle applied to the address.
uint32_t operand_addr(const char *kernel, uint64_t desc, int row, int k) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFFu) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFFu) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFFu) << 4;
  const unsigned base_offset = static_cast<unsigned>((desc >> 49) & 7u), mode = static_cast<unsigned>(desc >> 62);
  if (base_offset != 0) fatal("kernel %s: wgmma descriptor with base offset %u (not emulated)", kernel, base_offset);
  if (mode == 0)
    return start + (row / 8) * sbo + (k / 8) * lbo + (row % 8) * 16 + (k % 8) * 2;
  if (mode == 1) {
    const uint32_t in_row = (start & 127u) + static_cast<uint32_t>(k) * 2;
    if (in_row >= 128)
      fatal("kernel %s: wgmma 128B-swizzle operand starting %u bytes into a row crosses it", kernel, start & 127u);
    return swizzle128(start + (row / 8) * sbo + (row % 8) * 128 + k * 2);
  }
  fatal("kernel %s: wgmma descriptor swizzle mode %u (64B / 32B are not emulated)", kernel, mode);
}

void perform_wgmma(BlockRun &r, const WgmmaOp &op) {
  auto load = [&](uint64_t desc, int row, int k) {
    uint16_t h;
    std::memcpy(&h, smem_at(r, operand_addr(r.spec->name, desc, row, k), 2), 2);
    return operand16_to_f32(h, op.bf16);
  };
  std::vector<float> A(64 * 16), B(static_cast<size_t>(op.n) * 16);
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) A[m * 16 + k] = load(op.desc_a, m, k);
  for (int n = 0; n < op.n; ++n)
    for (int k = 0; k < 16; ++k) B[n * 16 + k] = load(op.desc_b, n, k);
  // PTX ISA, wgmma .m64nNk16 D fragment: register i of lane l in warp w of the warpgroup holds
  // row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2.
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, l = t % 32;
    for (int i = 0; i < op.n / 2; ++i) {
      const int row = 16 * w + l / 4 + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * (l % 4) + (i & 1);
      float s = 0.f;  // 16-bit products are exact in fp32; summed in k order
      for (int k = 0; k < 16; ++k) s += A[row * 16 + k] * B[col * 16 + k];
      op.d[t][i] = op.scale_d ? op.d[t][i] + s : s;
    }
  }
}

const char *wg_op_name(int op) {
  return op == kWgMma ? "wgmma.mma_async" : op == kWgCommit ? "wgmma.commit_group" : "wgmma.wait_group";
}

// A rendezvous of the 128 threads of the caller's warpgroup; the last one in runs done(), which
// returns whether the threads go on now (else they stay blocked until the scheduler releases them).
template <typename Done>
void warpgroup_collective(int op, const WgmmaOp &in, float *d, Done done) {
  BlockRun &r = run();
  Fiber &f = *r.current;
  if (r.n % 128 != 0)
    fatal("kernel %s: %s in a block of %d threads (warpgroups are 4 whole warps)", r.spec->name, wg_op_name(op), r.n);
  WarpgroupSync &s = r.warpgroups[static_cast<size_t>(f.linear / 128)];
  const int idx = f.linear % 128;
  if (s.arrived == 0) {
    s.op = op;
    s.in = in;
  } else if (s.op != op || std::memcmp(&s.in.desc_a, &in.desc_a, sizeof in.desc_a) ||
             std::memcmp(&s.in.desc_b, &in.desc_b, sizeof in.desc_b) || s.in.n != in.n ||
             s.in.bf16 != in.bf16 || s.in.scale_d != in.scale_d || s.in.group != in.group) {
    fatal("kernel %s, warpgroup %d: thread %d calls %s with other operands than the %d threads waiting in %s",
          r.spec->name, f.linear / 128, f.linear, wg_op_name(op), s.arrived, wg_op_name(s.op));
  }
  s.in.d[idx] = d;
  if (++s.arrived == 128) {
    s.arrived = 0;
    if (done(r, s)) {
      for (int t = 0; t < 128; ++t) {
        Fiber &o = r.fibers[static_cast<size_t>(f.linear / 128 * 128 + t)];
        if (&o != &f && o.state == State::kAtWarpgroup) o.state = State::kReady;
      }
    } else {
      f.state = State::kAtWarpgroup;
      yield_to_scheduler(r, f);
    }
  } else {
    f.state = State::kAtWarpgroup;
    yield_to_scheduler(r, f);
  }
}

}  // namespace detail

void mbar_init(uint32_t bar, uint32_t count) {
  BlockRun &r = run();
  if (bar % 8) fatal("kernel %s: mbarrier.init at 0x%x, not 8-byte aligned", r.spec->name, bar);
  if (count < 1 || count > (1u << 20) - 1) fatal("kernel %s: mbarrier.init with count %u", r.spec->name, count);
  std::memset(shared_ptr(bar, 8), 0, 8);
  Mbarrier m;
  m.expected = m.pending = count;
  r.mbarriers[bar] = m;
}

void mbar_arrive(uint32_t bar, uint32_t expect_tx_bytes) {
  BlockRun &r = run();
  Mbarrier &m = mbarrier_at(r, bar, "mbarrier.arrive");
  m.tx += expect_tx_bytes;
  if (m.pending == 0) fatal("kernel %s: mbarrier 0x%x: an arrival with no pending arrival left", r.spec->name, bar);
  --m.pending;
  mbarrier_check(r, bar, m);
}

void mbar_wait(uint32_t bar, uint32_t parity) {
  BlockRun &r = run();
  Fiber &f = *r.current;
  for (;;) {
    const Mbarrier &m = mbarrier_at(r, bar, "mbarrier.try_wait.parity");
    if ((m.phase & 1u) != (parity & 1u)) return;  // the phase of that parity has completed
    if (flush_tma(r, bar)) continue;
    f.state = State::kAtMbarrier;
    f.wait_bar = bar;
    f.wait_parity = parity & 1u;
    yield_to_scheduler(r, f);
  }
}

void tma_load_2d(uint32_t dst, const void *tensor_map, int32_t c0, int32_t c1, uint32_t bar) {
  BlockRun &r = run();
  TmaCopy c;
  std::memcpy(&c.map, tensor_map, sizeof c.map);
  const TensorMapRecord &m = c.map;
  if (m.magic != kTensorMapMagic)
    fatal("kernel %s: cp.async.bulk.tensor with a tensor map the emulated cuTensorMapEncodeTiled did not write",
          r.spec->name);
  if (m.rank != 2) fatal("kernel %s: cp.async.bulk.tensor.2d with a rank-%u tensor map", r.spec->name, m.rank);
  if (m.interleave || m.oob_nan || m.elem_stride[0] != 1 || m.elem_stride[1] != 1 ||
      (m.swizzle_bytes != 0 && m.swizzle_bytes != 128))
    fatal("kernel %s: tensor map with interleave, NaN fill, element strides or a 32B/64B swizzle (not emulated)",
          r.spec->name);
  const uint32_t row = m.box[0] * m.elem_bytes;
  if (m.swizzle_bytes && row != m.swizzle_bytes)
    fatal("kernel %s: TMA box rows of %u bytes with the %u-byte swizzle (only whole swizzle rows are emulated)",
          r.spec->name, row, m.swizzle_bytes);
  if (dst % 128) fatal("kernel %s: cp.async.bulk.tensor to shared 0x%x, not 128-byte aligned", r.spec->name, dst);
  shared_ptr(dst, static_cast<size_t>(row) * m.box[1]);  // bounds-checked at issue
  mbarrier_at(r, bar, "cp.async.bulk.tensor complete_tx");
  c.dst = dst;
  c.bar = bar;
  c.c0 = c0;
  c.c1 = c1;
  r.tma_pending.push_back(c);
}

void wgmma_mma_async(bool bf16, int n, uint64_t desc_a, uint64_t desc_b, float *d, bool scale_d) {
  if (n < 8 || n > 256 || n % 8) fatal("wgmma .m64n%dk16: N must be a multiple of 8 in [8, 256]", n);
  WgmmaOp in{};
  in.bf16 = bf16;
  in.scale_d = scale_d;
  in.n = n;
  in.desc_a = desc_a;
  in.desc_b = desc_b;
  in.group = -1;
  warpgroup_collective(kWgMma, in, d, [](BlockRun &, WarpgroupSync &s) {
    s.pending.push_back(s.in);
    return true;
  });
}

void wgmma_commit_group() {
  WgmmaOp in{};
  warpgroup_collective(kWgCommit, in, nullptr, [](BlockRun &, WarpgroupSync &s) {
    for (auto &op : s.pending)
      if (op.group < 0) op.group = s.groups;
    ++s.groups;
    return true;
  });
}

// The wait completes as late as possible: its groups are performed (reading shared memory through
// their descriptors) only when no other thread of the block can run, so that a stage handed back
// to a producer before its wgmma finished is overwritten first, and the result shows it.
void wgmma_wait_group(int newest_pending) {
  WgmmaOp in{};
  in.group = newest_pending;  // every thread must name the same count
  warpgroup_collective(kWgWait, in, nullptr, [newest_pending](BlockRun &, WarpgroupSync &s) {
    const int complete_below = s.groups - newest_pending;
    for (const auto &op : s.pending)
      if (op.group >= 0 && op.group < complete_below) {
        s.deferred_below = complete_below;
        return false;
      }
    return true;  // nothing to wait for
  });
}

namespace detail {
// Performs the deferred wait of one warpgroup and releases its threads; false if none is deferred.
bool complete_deferred_wgmma_wait(BlockRun &r) {
  for (size_t g = 0; g < r.warpgroups.size(); ++g) {
    WarpgroupSync &s = r.warpgroups[g];
    if (s.deferred_below < 0) continue;
    std::vector<WgmmaOp> keep;
    for (const auto &op : s.pending) {
      if (op.group >= 0 && op.group < s.deferred_below) perform_wgmma(r, op);
      else keep.push_back(op);
    }
    s.pending.swap(keep);
    s.deferred_below = -1;
    for (size_t t = 0; t < 128; ++t) {
      Fiber &o = r.fibers[g * 128 + t];
      if (o.state == State::kAtWarpgroup) o.state = State::kReady;
    }
    return true;
  }
  return false;
}
}  // namespace detail

}  // namespace moe_emu
