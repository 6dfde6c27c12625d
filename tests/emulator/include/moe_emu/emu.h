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
