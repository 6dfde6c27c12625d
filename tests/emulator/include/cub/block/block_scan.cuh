// Emulation build only: shadows cub::BlockScan with a version built on the emulator's block
// barrier. Like CUB's, it does not barrier after the scan: reusing TempStorage needs the
// caller's __syncthreads.
#pragma once

#include "moe_emu/device.h"

namespace cub {

// CUB's algorithm choices; they change registers and speed on a GPU, not results.
enum BlockScanAlgorithm { BLOCK_SCAN_RAKING, BLOCK_SCAN_RAKING_MEMOIZE, BLOCK_SCAN_WARP_SCANS };

template <typename T, int BLOCK_DIM_X, BlockScanAlgorithm ALGORITHM = BLOCK_SCAN_RAKING,
          int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1>
class BlockScan {
 public:
  static constexpr int kThreads = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
  struct TempStorage {
    T vals[kThreads];
  };

  explicit BlockScan(TempStorage &temp) : temp_(temp) {
    if (static_cast<int>(blockDim.x * blockDim.y * blockDim.z) != kThreads)
      moe_emu::fatal("cub::BlockScan<%d threads> used in a block of %u threads", kThreads,
                     blockDim.x * blockDim.y * blockDim.z);
  }

  void ExclusiveSum(T input, T &output, T &block_aggregate) {
    const int me = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    temp_.vals[me] = input;
    __syncthreads();
    T run{};
    for (int i = 0; i < me; ++i) run = run + temp_.vals[i];
    T all = run;
    for (int i = me; i < kThreads; ++i) all = all + temp_.vals[i];
    output = run;
    block_aggregate = all;
  }
  void ExclusiveSum(T input, T &output) {
    T aggregate;
    ExclusiveSum(input, output, aggregate);
  }
  // As CUB's: thread 0 gets initial_value; block_aggregate reduces the inputs alone.
  template <typename ScanOp>
  void ExclusiveScan(T input, T &output, T initial_value, ScanOp scan_op, T &block_aggregate) {
    const int me = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    temp_.vals[me] = input;
    __syncthreads();
    T run = initial_value;
    for (int i = 0; i < me; ++i) run = scan_op(run, temp_.vals[i]);
    T all = temp_.vals[0];
    for (int i = 1; i < kThreads; ++i) all = scan_op(all, temp_.vals[i]);
    output = run;
    block_aggregate = all;
  }
  void InclusiveSum(T input, T &output, T &block_aggregate) {
    T excl;
    ExclusiveSum(input, excl, block_aggregate);
    output = excl + input;
  }
  void InclusiveSum(T input, T &output) {
    T aggregate;
    InclusiveSum(input, output, aggregate);
  }

 private:
  TempStorage &temp_;
};

}  // namespace cub
