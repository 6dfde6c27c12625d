// Expert-parallel dispatch layout on the device: the rules of csrc/ep/layout_rules.h, one
// thread per token for mark and place, CUB's exclusive sums between them. Deterministic:
// every output position comes from the scans; the only atomic is an atomicMin on an index.
#include <cuda_runtime.h>

#include "cub_device.cuh"

#include "ep_layout.h"

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

// Steps 0 (the summary's bad index) and 1.
__global__ void layout_mark_kernel(moeEpLayoutArgs a) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t == 0) a.tok_ptr[a.T] = 0;
  if (t >= a.T) return;
  const int j = moe_ep_mark_token(&a, t);
  if (j >= 0)
    atomicMin(reinterpret_cast<unsigned long long *>(a.summary + a.P + 1),
              static_cast<unsigned long long>(t * a.K + j));
}

// Steps 3 and 4: thread i places token i and writes summary entry i.
__global__ void layout_place_kernel(moeEpLayoutArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.T) moe_ep_place_token(&a, i);
  if (i <= a.P) moe_ep_summarize_rank(&a, static_cast<int32_t>(i));
}

size_t scan_bytes(int64_t n) {
  size_t bytes = 0;
  if (cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<int64_t *>(nullptr),
                                    static_cast<int64_t *>(nullptr), n) !=
      cudaSuccess)
    return 0;
  return bytes;
}

}  // namespace

extern "C" size_t moe_ep_layout_scan_bytes_cuda(int32_t P, int64_t T) {
  const size_t a = scan_bytes(static_cast<int64_t>(P) * T + 1), b = scan_bytes(T + 1);
  return a > b ? a : b;
}

extern "C" int moe_ep_layout_build_cuda(const moeEpLayoutArgs *a, void *stream) {
  if (a->T <= 0) return static_cast<int>(cudaErrorInvalidValue);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t n_pos = static_cast<int64_t>(a->P) * a->T + 1;
  cudaError_t e = cudaMemsetAsync(a->pos, 0, static_cast<size_t>(n_pos) * sizeof(int64_t), s);
  if (e == cudaSuccess) e = cudaMemsetAsync(a->summary + a->P + 1, 0x7F, sizeof(int64_t), s);
  if (e != cudaSuccess) return static_cast<int>(e);
  layout_mark_kernel<<<blocks_for(a->T), kThreads, 0, s>>>(*a);
  if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
  size_t bytes = a->scan_scratch_bytes;
  e = cub::DeviceScan::ExclusiveSum(a->scan_scratch, bytes, a->pos, a->pos, n_pos, s);
  if (e == cudaSuccess) {
    bytes = a->scan_scratch_bytes;
    e = cub::DeviceScan::ExclusiveSum(a->scan_scratch, bytes, a->tok_ptr, a->tok_ptr,
                                      a->T + 1, s);
  }
  if (e != cudaSuccess) return static_cast<int>(e);
  const int64_t threads = a->T > a->P + 1 ? a->T : a->P + 1;
  layout_place_kernel<<<blocks_for(threads), kThreads, 0, s>>>(*a);
  return static_cast<int>(cudaGetLastError());
}
