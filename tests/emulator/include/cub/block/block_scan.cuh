// Emulation build only: shadows cub::BlockScan with a version built on the emulator's block
// barrier. Like CUB's, it does not barrier after the scan: reusing TempStorage needs the
// caller's __syncthreads.
#pragma once

#include "moe_emu/device.h"

namespace cub {

template <typename T, int BLOCK_DIM_X, int ALGORITHM = 0, int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1>
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
