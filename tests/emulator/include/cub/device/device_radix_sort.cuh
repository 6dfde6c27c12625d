// Emulation build only: shadows CUB's DeviceRadixSort with a host implementation of the same
// contract (a stable sort of the keys' bits [begin_bit, end_bit), values carried along; a size
// query when d_temp_storage is null; enqueued on the stream, so it can be captured).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "moe_emu/emu.h"

namespace cub {

struct DeviceRadixSort {
  // Temporary storage as CUB sizes it in spirit: alternate key and value buffers plus room for
  // the digit histograms; the emulation scribbles over it, so a caller that lets it overlap
  // live data finds out.
  template <typename KeyT, typename ValueT>
  static size_t TempBytes(int64_t n) {
    return static_cast<size_t>(n) * (sizeof(KeyT) + sizeof(ValueT)) + 4096;
  }

  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void *d_temp_storage, size_t &temp_storage_bytes, const KeyT *d_keys_in,
                               KeyT *d_keys_out, const ValueT *d_values_in, ValueT *d_values_out,
                               NumItemsT num_items, int begin_bit = 0, int end_bit = sizeof(KeyT) * 8,
                               cudaStream_t stream = 0) {
    const int64_t n = static_cast<int64_t>(num_items);
    const size_t need = TempBytes<KeyT, ValueT>(n);
    if (!d_temp_storage) {
      temp_storage_bytes = need;
      return cudaSuccess;
    }
    if (temp_storage_bytes < need || n < 0 || begin_bit < 0 || end_bit > int(sizeof(KeyT) * 8) ||
        begin_bit > end_bit)
      return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    return moe_emu::enqueue_host(stream, [=]() -> cudaError_t {
      if (!moe_emu::is_device_memory(d_temp_storage, need) || !moe_emu::is_device_memory(d_keys_in, n * sizeof(KeyT)) ||
          !moe_emu::is_device_memory(d_keys_out, n * sizeof(KeyT)) ||
          !moe_emu::is_device_memory(d_values_in, n * sizeof(ValueT)) ||
          !moe_emu::is_device_memory(d_values_out, n * sizeof(ValueT)))
        moe_emu::fatal("cub::DeviceRadixSort::SortPairs: a buffer is not inside device memory");
      const int bits = end_bit - begin_bit;
      using U = typename std::make_unsigned<KeyT>::type;
      auto digit = [&](int64_t i) -> U {
        const U k = static_cast<U>(d_keys_in[i]);
        if (bits == 0) return 0;
        const U shifted = static_cast<U>(k >> begin_bit);
        return bits >= int(sizeof(U) * 8) ? shifted : static_cast<U>(shifted & ((U(1) << bits) - 1));
      };
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), int64_t{0});
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return digit(a) < digit(b); });
      std::vector<KeyT> keys(static_cast<size_t>(n));
      std::vector<ValueT> vals(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        keys[size_t(i)] = d_keys_in[order[size_t(i)]];
        vals[size_t(i)] = d_values_in[order[size_t(i)]];
      }
      std::memset(d_temp_storage, 0xA5, need);
      std::memcpy(d_keys_out, keys.data(), keys.size() * sizeof(KeyT));
      std::memcpy(d_values_out, vals.data(), vals.size() * sizeof(ValueT));
      return cudaSuccess;
    });
  }
};

}  // namespace cub
