// Permute: key = local expert (E_local for "not here"), value = pair index t * K + j, sorted
// stably, so that within an expert the rows keep increasing pair order whatever the scheduling:
// deterministic by construction, no atomics. Up to kRankSortMax pairs (decode) one block ranks
// them directly in one launch; beyond, CUB's stable radix sort and two small kernels.
#include "permute.h"

#include "cub_device.cuh"

namespace {

constexpr size_t kAlign = 256;
inline size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

int bits_for(int64_t v) {
  int b = 1;
  while ((static_cast<int64_t>(1) << b) <= v) ++b;
  return b;
}

unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > 65535LL * 16) b = 65535LL * 16;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b);
}

__global__ void permute_keys_kernel(const int32_t *__restrict__ ids, int64_t N, int begin,
                                    int E_local, uint32_t *__restrict__ keys,
                                    int64_t *__restrict__ vals) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t id = ids[i];
    // id - begin computed in 64 bits: no overflow for any int32 id.
    const int64_t local = static_cast<int64_t>(id) - begin;
    keys[i] = (id >= 0 && local >= 0 && local < E_local) ? static_cast<uint32_t>(local)
                                                         : static_cast<uint32_t>(E_local);
    vals[i] = i;
  }
}

// offsets[e] = first sorted position whose key >= e (lower bound), for e = 0..E_local.
__global__ void permute_offsets_kernel(const uint32_t *__restrict__ keys, int64_t N, int E_local,
                                       int64_t *__restrict__ offsets) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e > E_local) return;
  int64_t lo = 0, hi = N;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < static_cast<uint32_t>(e)) lo = mid + 1;
    else hi = mid;
  }
  offsets[e] = lo;
}

// Every pair appears exactly once in the sorted order: rows past the local experts map to -1.
__global__ void permute_inverse_kernel(const uint32_t *__restrict__ keys,
                                       const int64_t *__restrict__ sorted, int64_t N, int E_local,
                                       int64_t *__restrict__ pair_rows) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < N;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x)
    pair_rows[sorted[r]] = keys[r] < static_cast<uint32_t>(E_local) ? r : -1;
}

// Small N in one block: the composite key (local expert, pair) is unique, so a pair's sorted
// position is the number of pairs whose composite key is smaller; offsets[e] is the number of
// pairs with a local expert below e. O(N^2 / threads) compares, no scan, one launch.
constexpr int kRankSortMax = 1024, kRankThreads = 1024;

__global__ void __launch_bounds__(kRankThreads)
permute_rank_kernel(const int32_t *__restrict__ ids, int N, int begin, int E_local,
                    int64_t *__restrict__ offsets, int64_t *__restrict__ sorted,
                    int64_t *__restrict__ pair_rows) {
  __shared__ uint32_t expert_of[kRankSortMax];
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    const int32_t id = ids[i];
    const int64_t local = static_cast<int64_t>(id) - begin;
    expert_of[i] = (id >= 0 && local >= 0 && local < E_local) ? static_cast<uint32_t>(local)
                                                              : static_cast<uint32_t>(E_local);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    const uint32_t e = expert_of[i];
    int pos = 0;
    for (int j = 0; j < N; ++j) {
      const uint32_t f = expert_of[j];
      pos += (f < e) || (f == e && j < i);
    }
    sorted[pos] = i;
    pair_rows[i] = e < static_cast<uint32_t>(E_local) ? pos : -1;
  }
  for (int e = threadIdx.x; e <= E_local; e += blockDim.x) {
    int below = 0;
    for (int j = 0; j < N; ++j) below += expert_of[j] < static_cast<uint32_t>(e);
    offsets[e] = below;
  }
}

struct Layout {
  size_t keys_in, keys_out, vals_in, temp, temp_bytes, total;
};

cudaError_t layout(int64_t N, int32_t E_local, Layout *L) {
  if (N <= kRankSortMax) {  // the rank kernel needs no scratch
    *L = Layout{0, 0, 0, 0, 0, 0};
    return cudaSuccess;
  }
  size_t temp = 0;
  cudaError_t err = cub::DeviceRadixSort::SortPairs(
      nullptr, temp, static_cast<const uint32_t *>(nullptr), static_cast<uint32_t *>(nullptr),
      static_cast<const int64_t *>(nullptr), static_cast<int64_t *>(nullptr), N, 0,
      bits_for(E_local), static_cast<cudaStream_t>(0));
  if (err != cudaSuccess) return err;
  size_t off = 0;
  L->keys_in = off; off += align_up(N * sizeof(uint32_t));
  L->keys_out = off; off += align_up(N * sizeof(uint32_t));
  L->vals_in = off; off += align_up(N * sizeof(int64_t));
  L->temp = off; off += align_up(temp);
  L->temp_bytes = temp;
  L->total = off;
  return cudaSuccess;
}

}  // namespace

extern "C" cudaError_t moe_permute_scratch_bytes(int64_t T, int32_t K, int32_t E_local, size_t *bytes) {
  Layout L;
  cudaError_t err = layout(T * K, E_local, &L);
  if (err == cudaSuccess) *bytes = L.total;
  return err;
}

extern "C" cudaError_t moe_launch_permute(const moePermuteParams *p, cudaStream_t stream) {
  const int64_t N = p->T * p->K;
  cudaError_t err;
  if (N <= 0) {  // no rows: every expert's range is empty
    err = cudaMemsetAsync(p->expert_offsets, 0, (p->E_local + 1) * sizeof(int64_t), stream);
    return err;
  }
  Layout L;
  if ((err = layout(N, p->E_local, &L)) != cudaSuccess) return err;
  if (L.total > p->scratch_bytes) return cudaErrorInvalidValue;
  if (N <= kRankSortMax) {
    permute_rank_kernel<<<1, kRankThreads, 0, stream>>>(p->expert_ids, static_cast<int>(N),
                                                         p->expert_begin, p->E_local,
                                                         p->expert_offsets, p->sorted_pairs,
                                                         p->pair_rows);
    return cudaGetLastError();
  }
  char *base = static_cast<char *>(p->scratch);
  uint32_t *kin = reinterpret_cast<uint32_t *>(base + L.keys_in);
  uint32_t *kout = reinterpret_cast<uint32_t *>(base + L.keys_out);
  int64_t *vin = reinterpret_cast<int64_t *>(base + L.vals_in);
  const unsigned g = grid_for(N, 256);
  permute_keys_kernel<<<g, 256, 0, stream>>>(p->expert_ids, N, p->expert_begin, p->E_local, kin, vin);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  size_t temp = L.temp_bytes;
  err = cub::DeviceRadixSort::SortPairs(base + L.temp, temp, kin, kout, vin, p->sorted_pairs, N, 0,
                                        bits_for(p->E_local), stream);
  if (err != cudaSuccess) return err;
  permute_offsets_kernel<<<(p->E_local + 1 + 255) / 256, 256, 0, stream>>>(kout, N, p->E_local,
                                                                          p->expert_offsets);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  permute_inverse_kernel<<<g, 256, 0, stream>>>(kout, p->sorted_pairs, N, p->E_local, p->pair_rows);
  return cudaGetLastError();
}
