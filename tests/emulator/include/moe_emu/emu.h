// The emulator's internal interface between the device built-ins (device.h, compiled into the
// rewritten kernels) and the scheduler (src/scheduler.cc, in libmoe_cuda_emu). Not CUDA API.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>

#define MOE_EMU_API __attribute__((visibility("default")))

namespace moe_emu {

// The built-in variables of the emulated thread running on this OS thread.
struct Builtins {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
MOE_EMU_API extern thread_local Builtins t_builtins;

// Warp collectives: every participating lane deposits its input; the last one to arrive
// computes every lane's output; each lane then gets its own.
enum WarpOp : int {
  kOpSyncWarp = 1,
  kOpShflIdx,
  kOpShflXor,
  kOpShflDown,
  kOpShflUp,
  kOpBallot,
  kOpAny,
  kOpAll,
  kOpLdmatrixX4,
  kOpMmaBf16,
  kOpMmaF16,
};
constexpr size_t kWarpInBytes = 48, kWarpOutBytes = 16;
struct ShflIn {
  uint64_t bits;
  int32_t param;  // source lane, lane mask or delta
  int32_t width;
};
struct MmaIn {
  uint32_t a[4], b[2];
  float c[4];
};

MOE_EMU_API void warp_collective(int op, uint32_t mask, const void *in, size_t in_bytes, void *out,
                                 size_t out_bytes);
MOE_EMU_API void syncthreads();
MOE_EMU_API void *dynamic_smem();
// Emulated 32-bit shared-memory addresses: offsets into the block's dynamic shared memory.
MOE_EMU_API uint32_t shared_addr(const void *p);
MOE_EMU_API void *shared_ptr(uint32_t addr, size_t bytes);
// cp.async as the ISA allows it to happen at the latest: a copy is queued by the issuing
// thread, commit closes a group, and wait_group(n) performs every group but the n newest.
// A kernel that waits for too few groups then reads shared memory the copy has not reached.
MOE_EMU_API void cp_async_queue(uint32_t dst, const void *src, size_t src_bytes, size_t total_bytes);
MOE_EMU_API void cp_async_commit_group();
MOE_EMU_API void cp_async_wait_group(int newest_pending);
// ---- Hopper (sm_90a) -------------------------------------------------------------------------
// mbarrier: the emulator keeps each barrier's state (PTX ISA: expected and pending arrival counts,
// tx-count, phase) beside shared memory, keyed by its address. A phase completes when the
// pending arrivals and the tx-count are both zero. mbar_wait blocks until the phase of the given
// parity has completed (try_wait.parity in a loop); a wait nothing can complete aborts.
MOE_EMU_API void mbar_init(uint32_t bar, uint32_t count);
// arrive (expect_tx_bytes = 0) or arrive.expect_tx: tx-count += bytes, then one arrival.
MOE_EMU_API void mbar_arrive(uint32_t bar, uint32_t expect_tx_bytes);
MOE_EMU_API void mbar_wait(uint32_t bar, uint32_t parity);
// cp.async.bulk.tensor.2d global -> shared through a tensor map made by the emulated
// cuTensorMapEncodeTiled; queued at issue and performed (then complete_tx on bar) when a thread
// waits on bar, or when nothing else can run: as late as the ISA allows.
MOE_EMU_API void tma_load_2d(uint32_t dst, const void *tensor_map, int32_t c0, int32_t c1, uint32_t bar);
// wgmma.mma_async .m64nNk16 .f32 with 16-bit A and B from shared memory (K-major descriptors),
// a warpgroup collective (the 128 threads of warps 4i..4i+3); performed at the wgmma.wait_group
// that covers its commit group. d: this thread's N / 2 accumulator registers.
MOE_EMU_API void wgmma_mma_async(bool bf16, int n, uint64_t desc_a, uint64_t desc_b, float *d, bool scale_d);
MOE_EMU_API void wgmma_commit_group();
MOE_EMU_API void wgmma_wait_group(int newest_pending);

// What the emulated cuTensorMapEncodeTiled (src/runtime.cc) writes into a CUtensorMap.
struct TensorMapRecord {
  uint64_t magic;
  const void *global;
  uint64_t dim[5];
  uint64_t stride[5];  // bytes; stride[0] is the element size
  uint16_t box[5];
  uint8_t elem_stride[5];
  uint8_t rank, elem_bytes, swizzle_bytes, interleave, oob_nan;
};
constexpr uint64_t kTensorMapMagic = 0x70616d5f6f6d656dull;
static_assert(sizeof(TensorMapRecord) <= 128, "a CUtensorMap is 128 bytes");

[[noreturn]] MOE_EMU_API void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// A kernel launch: grid, block, dynamic shared memory, stream; fn identifies the kernel for
// cudaFuncSetAttribute limits (nullptr: unknown, the default limits apply); body runs one
// emulated thread.
struct LaunchSpec {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  const char *name;
  const void *fn;
};
MOE_EMU_API cudaError_t launch(const LaunchSpec &spec, std::function<void()> body);

// Host work in stream order (recorded while the stream captures): the emulated CUB algorithms.
MOE_EMU_API cudaError_t enqueue_host(cudaStream_t stream, std::function<cudaError_t()> work);

// Whether [p, p + bytes) lies inside one live cudaMalloc allocation.
MOE_EMU_API bool is_device_memory(const void *p, size_t bytes);


}  // namespace moe_emu
