// The CUDA runtime subset that libmoe, its tests and bench use, on the host: device memory is
// host heap, work on a stream runs at enqueue time in order, a capturing stream records work and
// cudaGraphLaunch replays it. Signatures come from the real CUDA headers. (cuBLAS: cublas.cc.)
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "moe_emu/emu.h"
#include "scheduler.h"

#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

using Op = std::function<cudaError_t()>;

struct CUstream_st {
  std::mutex mu;  // a stream runs one piece of work at a time, even from several host threads
  unsigned flags = 0;
  bool capturing = false, invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  std::vector<Op> captured;
};
struct CUgraph_st {
  std::vector<Op> ops;
};
struct CUgraphExec_st {
  std::vector<Op> ops;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when{};
  bool recorded = false;
};

namespace {

std::atomic<long> &required_kernel_runs() {
  static std::atomic<long> runs{0};
  return runs;
}

std::mutex g_mu;  // allocations, captures, kernel attributes
std::map<uintptr_t, size_t> g_allocs;
std::map<const void *, int> g_max_dynamic_smem;
std::vector<CUstream_st *> g_capturing;
CUstream_st g_legacy_stream;
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

constexpr size_t kDefaultDynamicSmem = 48 * 1024, kOptinSmemPerBlock = 227 * 1024;

// MOE_EMU_TRACE=1 in the environment: every failing call is reported on stderr.
cudaError_t fail_at(cudaError_t e, const char *where) {
  static const bool trace = std::getenv("MOE_EMU_TRACE") != nullptr;
  if (trace) std::fprintf(stderr, "[moe CUDA emulator] %s returns %s\n", where, cudaGetErrorString(e));
  t_last_error = e;
  return e;
}
#define fail(e) fail_at((e), __func__)

CUstream_st *resolve(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &g_legacy_stream;
  return s;
}

// A capture that this call must not happen during (global mode: any thread; thread-local
// mode: the capturing thread). It is invalidated, as CUDA does.
CUstream_st *conflicting_capture() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (CUstream_st *s : g_capturing) {
    if (s->mode == cudaStreamCaptureModeGlobal ||
        (s->mode == cudaStreamCaptureModeThreadLocal && s->capture_thread == std::this_thread::get_id())) {
      s->invalidated = true;
      return s;
    }
  }
  return nullptr;
}

// Bytes of the allocation that holds [p, p + n), or false.
bool is_device_range(const void *p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

cudaError_t enqueue(cudaStream_t stream, Op op) {
  CUstream_st *s = resolve(stream);
  {
    std::unique_lock<std::mutex> lock(g_mu);
    if (s->capturing) {
      s->captured.push_back(std::move(op));
      return cudaSuccess;
    }
    if (s == &g_legacy_stream) {
      lock.unlock();
      // The legacy stream synchronizes with every blocking stream: during a global capture
      // that is an implicit dependency on the capture, which CUDA refuses.
      if (conflicting_capture()) return fail(cudaErrorStreamCaptureImplicit);
    }
  }
  std::lock_guard<std::mutex> lock(s->mu);
  const cudaError_t e = op();
  return e == cudaSuccess ? e : fail(e);
}

cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return cudaErrorInvalidMemcpyDirection;
  if (n == 0) return cudaSuccess;
  if (!dst || !src) return cudaErrorInvalidValue;
  if (dst_dev && !is_device_range(dst, n)) return cudaErrorInvalidValue;
  if (src_dev && !is_device_range(src, n)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

}  // namespace

// ---- kernel launches -------------------------------------------------------------------------
namespace moe_emu {
// MOE_EMU_REQUIRE_KERNEL=<name>: the process fails at exit unless a kernel whose name contains
// <name> ran, so that a test forcing a code path (MOE_GEMM_KERNEL=wgmma) proves it was taken.
const char *required_kernel() {
  static const char *name = [] {
    const char *s = std::getenv("MOE_EMU_REQUIRE_KERNEL");
    if (!s || !*s) return static_cast<const char *>(nullptr);
    std::atexit([] {
      if (required_kernel_runs().load() == 0) {
        std::fprintf(stderr, "[moe CUDA emulator] MOE_EMU_REQUIRE_KERNEL: no kernel named *%s* ran\n",
                     std::getenv("MOE_EMU_REQUIRE_KERNEL"));
        std::fflush(stderr);
        std::_Exit(1);
      }
    });
    return s;
  }();
  return name;
}

cudaError_t launch(const LaunchSpec &spec, std::function<void()> body) {
  const dim3 g = spec.grid, b = spec.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535 || threads == 0 ||
      threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64)
    return fail(cudaErrorInvalidConfiguration);
  size_t limit = kDefaultDynamicSmem;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_max_dynamic_smem.find(spec.fn);
    if (spec.fn && it != g_max_dynamic_smem.end()) limit = static_cast<size_t>(it->second);
  }
  if (spec.smem > limit) return fail(cudaErrorInvalidValue);
  LaunchSpec copy = spec;
  copy.stream = nullptr;
  return enqueue(spec.stream, [copy, body]() {
    const char *req = required_kernel();
    if (req && copy.name && std::strstr(copy.name, req)) ++required_kernel_runs();
    run_grid(copy, body);
    return cudaSuccess;
  });
}

static const bool g_required_kernel_armed = required_kernel() != nullptr;  // at load, not first launch

cudaError_t enqueue_host(cudaStream_t stream, std::function<cudaError_t()> work) {
  return enqueue(stream, std::move(work));
}
bool is_device_memory(const void *p, size_t bytes) { return is_device_range(p, bytes); }
}  // namespace moe_emu

EMU_EXPORT cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > kOptinSmemPerBlock) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_mu);
    g_max_dynamic_smem[func] = value;
  }
  return cudaSuccess;
}


EMU_EXPORT cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(p.sharedMemPerBlockOptin); return cudaSuccess;
    default: return fail(cudaErrorInvalidValue);
  }
}

// ---- the driver's tensor maps, reached through the runtime's entry-point query -----------------
namespace {
// cuTensorMapEncodeTiled: the CUDA driver API's requirements checked (tensor map 64-byte aligned,
// rank 1..5, global address 16-byte aligned, dimensions in [1, 2^32], strides multiples of 16
// below 2^40 and no smaller than the rows they step over, boxes of 1..256 elements whose inner
// extent is a multiple of 16 bytes and, swizzled, no wider than the swizzle span, element strides
// 1..8), then the parameters recorded in the map for the emulated TMA (moe_emu::TensorMapRecord).
// The whole tensor must lie in one device allocation.
CUresult CUDAAPI emu_tensor_map_encode_tiled(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank,
                                             void *global, const cuuint64_t *dim, const cuuint64_t *stride,
                                             const cuuint32_t *box, const cuuint32_t *elem_stride,
                                             CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                             CUtensorMapL2promotion, CUtensorMapFloatOOBfill oob) {
  static const uint8_t kBytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};  // UINT8 .. TFLOAT32_FTZ
  auto bad = [](const char *why) {
    if (std::getenv("MOE_EMU_TRACE")) std::fprintf(stderr, "[moe CUDA emulator] cuTensorMapEncodeTiled: %s\n", why);
    return CUDA_ERROR_INVALID_VALUE;
  };
  if (!map || reinterpret_cast<uintptr_t>(map) % 64) return bad("tensor map not 64-byte aligned");
  if (static_cast<unsigned>(type) >= sizeof kBytes) return bad("data type not emulated");
  if (rank < 1 || rank > 5 || !dim || !box || !elem_stride || (rank > 1 && !stride)) return bad("rank or arrays");
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) return bad("interleave not emulated");
  if (reinterpret_cast<uintptr_t>(global) % 16) return bad("global address not 16-byte aligned");
  moe_emu::TensorMapRecord r{};
  r.magic = moe_emu::kTensorMapMagic;
  r.global = global;
  r.rank = static_cast<uint8_t>(rank);
  r.elem_bytes = kBytes[type];
  r.swizzle_bytes = swizzle == CU_TENSOR_MAP_SWIZZLE_NONE ? 0 : swizzle == CU_TENSOR_MAP_SWIZZLE_32B ? 32
                    : swizzle == CU_TENSOR_MAP_SWIZZLE_64B ? 64 : swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 128 : 255;
  if (r.swizzle_bytes == 255) return bad("swizzle mode not emulated");
  r.oob_nan = oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
  uint64_t extent = r.elem_bytes;  // bytes from global to one past the last element
  for (cuuint32_t i = 0; i < rank; ++i) {
    if (dim[i] < 1 || dim[i] > (uint64_t(1) << 32)) return bad("globalDim out of [1, 2^32]");
    r.dim[i] = dim[i];
    r.stride[i] = i == 0 ? r.elem_bytes : stride[i - 1];
    if (i > 0 && (r.stride[i] % 16 || r.stride[i] >= (uint64_t(1) << 40))) return bad("globalStrides: multiples of 16 below 2^40");
    if (i > 0 && r.stride[i] < r.dim[i - 1] * r.stride[i - 1]) return bad("globalStrides smaller than the dimension below");
    if (box[i] < 1 || box[i] > 256) return bad("boxDim out of [1, 256]");
    if (elem_stride[i] < 1 || elem_stride[i] > 8) return bad("elementStrides out of [1, 8]");
    r.box[i] = static_cast<uint16_t>(box[i]);
    r.elem_stride[i] = static_cast<uint8_t>(elem_stride[i]);
    extent += (dim[i] - 1) * r.stride[i];
  }
  if ((uint64_t(box[0]) * r.elem_bytes) % 16) return bad("boxDim[0] * element size not a multiple of 16 bytes");
  if (r.swizzle_bytes && uint64_t(box[0]) * r.elem_bytes > r.swizzle_bytes) return bad("boxDim[0] wider than the swizzle span");
  if (!is_device_range(global, extent))
    moe_emu::fatal("cuTensorMapEncodeTiled: the tensor [%p, +%llu bytes) is not inside one device allocation", global,
                   static_cast<unsigned long long>(extent));
  std::memset(map, 0, sizeof *map);
  std::memcpy(map, &r, sizeof r);
  return CUDA_SUCCESS;
}
}  // namespace

EMU_EXPORT cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned int version,
                                                        unsigned long long flags,
                                                        cudaDriverEntryPointQueryResult *status) {
  (void)flags;
  if (!symbol || !fn) return fail(cudaErrorInvalidValue);
  *fn = nullptr;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  if (std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0 && version >= 12000) {
    *fn = reinterpret_cast<void *>(&emu_tensor_map_encode_tiled);
    q = cudaDriverEntryPointSuccess;
  }
  if (status) *status = q;
  return cudaSuccess;
}

// ---- errors and devices ----------------------------------------------------------------------
EMU_EXPORT cudaError_t cudaGetLastError(void) {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
EMU_EXPORT cudaError_t cudaPeekAtLastError(void) { return t_last_error; }

EMU_EXPORT const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorIllegalState: return "the operation is not permitted in the current state";
    default: return "unknown error (emulated CUDA runtime)";
  }
}
EMU_EXPORT const char *cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaError"; }

EMU_EXPORT cudaError_t cudaGetDeviceCount(int *count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaGetDevice(int *device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = t_device;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  t_device = device;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device) {
  if (!p) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "NVIDIA H100 (emulated on the CPU by libmoe)");
  p->totalGlobalMem = size_t(80) << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = kOptinSmemPerBlock;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->reservedSharedMemPerBlock = 1024;
  p->regsPerBlock = 65536;
  p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->memPitch = 0x7fffffff;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
  p->totalConstMem = 65536;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxBlocksPerMultiProcessor = 32;
  p->l2CacheSize = 50 * 1024 * 1024;
  p->memoryBusWidth = 5120;
  p->concurrentKernels = 1;
  p->unifiedAddressing = 1;
  p->asyncEngineCount = 2;
  p->managedMemory = 1;
  p->cooperativeLaunch = 1;
  p->clusterLaunch = 1;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaDriverGetVersion(int *v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaRuntimeGetVersion(int *v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaDeviceSynchronize(void) {
  if (conflicting_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;  // all work ran when it was enqueued
}

// ---- memory ----------------------------------------------------------------------------------
EMU_EXPORT cudaError_t cudaMalloc(void **ptr, size_t bytes) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (conflicting_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes == 0) return cudaSuccess;
  void *p = nullptr;
  if (posix_memalign(&p, 256, bytes) != 0 || !p) return fail(cudaErrorMemoryAllocation);
  std::memset(p, 0xFF, bytes);  // device memory starts as garbage, not zeros
  std::lock_guard<std::mutex> lock(g_mu);
  g_allocs[reinterpret_cast<uintptr_t>(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaFree(void *ptr) {
  if (!ptr) return cudaSuccess;
  if (conflicting_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_allocs.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == g_allocs.end()) return fail(cudaErrorInvalidValue);
    g_allocs.erase(it);
  }
  free(ptr);
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                                       cudaStream_t stream) {
  const cudaError_t e = check_copy(dst, src, n, kind);
  if (e != cudaSuccess) return fail(e);
  if (n == 0) return cudaSuccess;
  return enqueue(stream, [dst, src, n]() {
    std::memmove(dst, src, n);
    return cudaSuccess;
  });
}
EMU_EXPORT cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
  if (conflicting_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaMemcpyAsync(dst, src, n, kind, nullptr);
}
EMU_EXPORT cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (!is_device_range(dst, n)) return fail(cudaErrorInvalidValue);
  return enqueue(stream, [dst, value, n]() {
    std::memset(dst, value, n);
    return cudaSuccess;
  });
}
EMU_EXPORT cudaError_t cudaMemset(void *dst, int value, size_t n) {
  if (conflicting_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaMemsetAsync(dst, value, n, nullptr);
}

// ---- streams, events, graphs -----------------------------------------------------------------
EMU_EXPORT cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
  if (!s) return fail(cudaErrorInvalidValue);
  *s = new CUstream_st;
  (*s)->flags = flags;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
EMU_EXPORT cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s || resolve(s) == &g_legacy_stream) return fail(cudaErrorInvalidResourceHandle);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (size_t i = 0; i < g_capturing.size(); ++i)
      if (g_capturing[i] == s) g_capturing.erase(g_capturing.begin() + static_cast<long>(i));
  }
  delete s;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  CUstream_st *s = resolve(stream);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (s->capturing) {
      s->invalidated = true;
      return fail(cudaErrorStreamCaptureUnsupported);
    }
  }
  if (s == &g_legacy_stream && conflicting_capture()) return fail(cudaErrorStreamCaptureImplicit);
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  CUstream_st *s = resolve(stream);
  if (s == &g_legacy_stream) return fail(cudaErrorStreamCaptureUnsupported);
  std::lock_guard<std::mutex> lock(g_mu);
  if (s->capturing) return fail(cudaErrorIllegalState);
  s->capturing = true;
  s->invalidated = false;
  s->mode = mode;
  s->capture_thread = std::this_thread::get_id();
  s->captured.clear();
  g_capturing.push_back(s);
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
  CUstream_st *s = resolve(stream);
  if (!graph) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(g_mu);
  if (!s->capturing) return fail(cudaErrorIllegalState);
  s->capturing = false;
  for (size_t i = 0; i < g_capturing.size(); ++i)
    if (g_capturing[i] == s) g_capturing.erase(g_capturing.begin() + static_cast<long>(i));
  *graph = nullptr;
  if (s->invalidated) {
    s->captured.clear();
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = new CUgraph_st;
  (*graph)->ops.swap(s->captured);
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status) {
  if (!status) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(g_mu);
  CUstream_st *s = resolve(stream);
  *status = s->capturing ? (s->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive)
                         : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
  if (!exec || !graph) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st;
  (*exec)->ops = graph->ops;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph,
                                                     unsigned long long flags) {
  return cudaGraphInstantiate(exec, graph, flags);
}
EMU_EXPORT cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidValue);
  return enqueue(stream, [exec]() {
    for (const Op &op : exec->ops) {
      const cudaError_t e = op();
      if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
  });
}
EMU_EXPORT cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaEventCreate(cudaEvent_t *e) {
  if (!e) return fail(cudaErrorInvalidValue);
  *e = new CUevent_st;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) { return cudaEventCreate(e); }
EMU_EXPORT cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
EMU_EXPORT cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  return enqueue(stream, [e]() {
    e->when = std::chrono::steady_clock::now();
    e->recorded = true;
    return cudaSuccess;
  });
}
EMU_EXPORT cudaError_t cudaEventSynchronize(cudaEvent_t e) { return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle); }
EMU_EXPORT cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms || !a || !b) return fail(cudaErrorInvalidValue);
  if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->when - a->when).count();
  return cudaSuccess;
}
