// Emulation build only: shadows CUB's DeviceScan::ExclusiveSum with a host implementation of the
// same contract (in place when d_in == d_out; a size query when d_temp_storage is null; enqueued
// on the stream, so it can be captured).
#pragma once

#include <cstdint>
#include <cstring>

#include "moe_emu/emu.h"

namespace cub {

struct DeviceScan {
  template <typename T>
  static size_t TempBytes(int64_t) {
    return 4096;  // CUB's tile state, in spirit; scribbled over so that overlaps show
  }

  template <typename T, typename NumItemsT>
  static cudaError_t ExclusiveSum(void *d_temp_storage, size_t &temp_storage_bytes, const T *d_in,
                                  T *d_out, NumItemsT num_items, cudaStream_t stream = 0) {
    const int64_t n = static_cast<int64_t>(num_items);
    const size_t need = TempBytes<T>(n);
    if (!d_temp_storage) {
      temp_storage_bytes = need;
      return cudaSuccess;
    }
    if (temp_storage_bytes < need || n < 0) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    return moe_emu::enqueue_host(stream, [=]() -> cudaError_t {
      if (!moe_emu::is_device_memory(d_temp_storage, need) ||
          !moe_emu::is_device_memory(d_in, n * sizeof(T)) ||
          !moe_emu::is_device_memory(d_out, n * sizeof(T)))
        moe_emu::fatal("cub::DeviceScan::ExclusiveSum: a buffer is not inside device memory");
      std::memset(d_temp_storage, 0xA5, need);
      T sum = T(0);
      for (int64_t i = 0; i < n; ++i) {
        const T x = d_in[i];  // read before the write: d_in may be d_out
        d_out[i] = sum;
        sum += x;
      }
      return cudaSuccess;
    });
  }
};

}  // namespace cub
