// Capacity, expert choice, router statistics, selection-bias update. Sorting is CUB's radix
// sort, which is stable: equal keys keep their input order, which is what makes the drop and
// pick orders deterministic and equal to the host reference's.
#include "route_post.h"

#include "cub_device.cuh"

#include "moe_kernels_common.cuh"

using namespace moe_kernels;

namespace {

constexpr size_t kAlign = 256;
__host__ __device__ inline size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

int bits_for(int64_t v) {  // bits to hold 0..v
  int b = 1;
  while ((static_cast<int64_t>(1) << b) <= v) ++b;
  return b;
}

// ---- capacity --------------------------------------------------------------------------------
// Items in priority order. Position: q = j * T + t (every first choice before every second),
// key = expert. Probs: q = t * K + j, key = expert : descending weight. Sentinel expert E for
// empty slots.
__global__ void capacity_keys_kernel(const int32_t *__restrict__ ids, const float *__restrict__ w,
                                     int64_t T, int K, int E, int policy,
                                     uint64_t *__restrict__ keys, int64_t *__restrict__ vals) {
  const int64_t N = T * K;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < N;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t pair;
    if (policy == 0) {
      const int64_t j = q / T, t = q - j * T;
      pair = t * K + j;
    } else {
      pair = q;
    }
    const int32_t id = ids[pair];
    const uint64_t e = (id >= 0 && id < E) ? static_cast<uint64_t>(id) : static_cast<uint64_t>(E);
    const uint32_t lo = policy == 0 ? 0u : ~score_key(w[pair]);  // ascending = descending weight
    keys[q] = (e << 32) | lo;
    vals[q] = pair;
  }
}

__global__ void segment_starts_kernel(const uint64_t *__restrict__ keys, int64_t N,
                                      int64_t *__restrict__ starts) {
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < N;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t e = keys[s] >> 32;
    if (s == 0 || (keys[s - 1] >> 32) != e) starts[e] = s;
  }
}

__global__ void capacity_drop_kernel(const uint64_t *__restrict__ keys,
                                     const int64_t *__restrict__ vals, int64_t N, int E,
                                     int64_t C, const int64_t *__restrict__ starts,
                                     int32_t *__restrict__ ids, float *__restrict__ w,
                                     int64_t *__restrict__ dropped) {
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < N;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = static_cast<int64_t>(keys[s] >> 32);
    if (e >= E) continue;
    if (s - starts[e] >= C) {
      const int64_t pair = vals[s];
      ids[pair] = -1;
      w[pair] = 0.f;
      if (dropped)
        atomicAdd(reinterpret_cast<unsigned long long *>(dropped + e), 1ull);
    }
  }
}

unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > 65535LL * 16) b = 65535LL * 16;  // grid-stride loops cover the rest
  if (b < 1) b = 1;
  return static_cast<unsigned>(b);
}

cudaError_t sort_u64_i64(void *temp, size_t &temp_bytes, const uint64_t *kin, uint64_t *kout,
                         const int64_t *vin, int64_t *vout, int64_t n, int begin_bit,
                         int end_bit, cudaStream_t stream) {
  return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, kin, kout, vin, vout, n, begin_bit,
                                         end_bit, stream);
}

struct CapacityLayout {
  size_t keys_in, keys_out, vals_in, vals_out, starts, temp, temp_bytes, total;
};

cudaError_t capacity_layout(int64_t T, int32_t K, int32_t E, int policy, CapacityLayout *L) {
  const int64_t N = T * K;
  size_t temp = 0;
  const int begin = policy == 0 ? 32 : 0, end = 32 + bits_for(E);
  cudaError_t err = sort_u64_i64(nullptr, temp, nullptr, nullptr, nullptr, nullptr, N, begin, end, 0);
  if (err != cudaSuccess) return err;
  size_t off = 0;
  L->keys_in = off; off += align_up(N * sizeof(uint64_t));
  L->keys_out = off; off += align_up(N * sizeof(uint64_t));
  L->vals_in = off; off += align_up(N * sizeof(int64_t));
  L->vals_out = off; off += align_up(N * sizeof(int64_t));
  L->starts = off; off += align_up((E + 1) * sizeof(int64_t));
  L->temp = off; off += align_up(temp);
  L->temp_bytes = temp;
  L->total = off;
  return cudaSuccess;
}

// ---- expert choice ---------------------------------------------------------------------------
// Item i = t * E + e, key = e : descending p(t, e), value t. Stable: ties keep the lower token.
__global__ void ec_keys_kernel(const float *__restrict__ z, const float *__restrict__ tmax,
                               const double *__restrict__ tsum, int64_t T, int E,
                               uint64_t *__restrict__ keys, int64_t *__restrict__ vals) {
  const int64_t N = T * E;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / E, e = i - t * E;
    const float pv = softmax_prob(z[i], tmax[t], tsum[t]);  // as route_select_kernel computes it
    keys[i] = (static_cast<uint64_t>(e) << 32) | ~score_key(pv);
    vals[i] = t;
  }
}

// Sorted: expert e's T candidates sit at [e * T, (e + 1) * T), best first. Every (t, e) appears
// exactly once, so every slot of the output is written.
__global__ void ec_pick_kernel(const int64_t *__restrict__ vals, const float *__restrict__ z,
                               const float *__restrict__ tmax, const double *__restrict__ tsum,
                               int64_t T, int E, int64_t C, float scale,
                               int32_t *__restrict__ ids, float *__restrict__ w) {
  const int64_t N = T * E;
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < N;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = s / T, r = s - e * T, t = vals[s], i = t * E + e;
    if (r < C) {
      ids[i] = static_cast<int32_t>(e);
      w[i] = softmax_prob(z[i], tmax[t], tsum[t]) * scale;
    } else {
      ids[i] = -1;
      w[i] = 0.f;
    }
  }
}

// ---- statistics ------------------------------------------------------------------------------
__global__ void counts_kernel(const int32_t *__restrict__ ids, int64_t N, int E,
                              int64_t *__restrict__ counts) {
  extern __shared__ unsigned int hist[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t id = ids[i];
    if (id >= 0 && id < E) atomicAdd(&hist[id], 1u);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    if (hist[e]) atomicAdd(reinterpret_cast<unsigned long long *>(counts + e),
                           static_cast<unsigned long long>(hist[e]));
}

// P_e = mean_t softmax(z_t)_e in two fixed-order steps, so that large T fills the GPU whatever E:
// block (x, c) = 32 experts x 8 token phases over token chunk c, partial[c][e] = its 8 phases
// in order; then out[e] = the chunks in order / T. The chunking depends on T only.
int64_t prob_chunk_tokens(int64_t T) {
  const int64_t by_size = (T + 1023) / 1024;  // >= 1024 tokens a chunk
  const int64_t chunks = by_size < MOE_PROB_MEAN_CHUNKS ? by_size : MOE_PROB_MEAN_CHUNKS;
  return (T + chunks - 1) / chunks;
}

__global__ void __launch_bounds__(256)
prob_partial_kernel(const float *__restrict__ z, const float *__restrict__ tmax,
                    const double *__restrict__ tsum, int64_t T, int E, int64_t chunk,
                    double *__restrict__ partial) {
  __shared__ double part[8][32];
  const int lane = threadIdx.x & 31, ph = threadIdx.x >> 5;
  const int e = blockIdx.x * 32 + lane;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t t1 = t0 + chunk < T ? t0 + chunk : T;
  double acc = 0.0;
  if (e < E)
    for (int64_t t = t0 + ph; t < t1; t += 8) acc += static_cast<double>(softmax_prob(z[t * E + e], tmax[t], tsum[t]));
  part[ph][lane] = acc;
  __syncthreads();
  if (ph == 0 && e < E) {
    double s = 0.0;
    for (int i = 0; i < 8; ++i) s += part[i][lane];
    partial[blockIdx.y * static_cast<int64_t>(E) + e] = s;
  }
}

__global__ void prob_finish_kernel(const double *__restrict__ partial, int chunks, int64_t T,
                                   int E, float *__restrict__ out) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  double s = 0.0;
  for (int c = 0; c < chunks; ++c) s += partial[static_cast<int64_t>(c) * E + e];
  out[e] = static_cast<float>(s / static_cast<double>(T));
}

__device__ double block_sum_double(double v, double *sh) {  // 1024 threads, fixed tree
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int o = 512; o > 0; o >>= 1) {
    if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(1024)
scalars_kernel(moeStatsParams p) {
  __shared__ double sh[1024];
  const int tid = threadIdx.x;
  double a = 0.0, b = 0.0;
  for (int64_t t = tid; t < p.T; t += 1024) {
    if (p.tok_lse) a += static_cast<double>(p.tok_lse[t]) * static_cast<double>(p.tok_lse[t]);
    if (p.tok_ent) b += p.tok_ent[t];
  }
  const double lse2 = block_sum_double(a, sh);
  const double ent = block_sum_double(b, sh);
  double fp = 0.0, csum = 0.0, dsum = 0.0, cmax = 0.0;
  for (int e = tid; e < p.E; e += 1024) {
    const double c = static_cast<double>(p.counts[e]);
    fp += c * static_cast<double>(p.prob_mean[e]);  // divided by D below
    csum += c;
    cmax = c > cmax ? c : cmax;
    if (p.dropped) dsum += static_cast<double>(p.dropped[e]);
  }
  fp = block_sum_double(fp, sh);
  csum = block_sum_double(csum, sh);
  dsum = block_sum_double(dsum, sh);
  sh[tid] = cmax;
  __syncthreads();
  for (int o = 512; o > 0; o >>= 1) {
    if (tid < o) sh[tid] = sh[tid] > sh[tid + o] ? sh[tid] : sh[tid + o];
    __syncthreads();
  }
  cmax = sh[0];
  if (tid == 0) {
    const double T = static_cast<double>(p.T), E = static_cast<double>(p.E);
    const double mean_c = csum / E;
    const double D = p.variable_k ? csum : T * static_cast<double>(p.top_k);
    p.scalars[0] = static_cast<float>(D > 0.0 ? E * (fp / D) : 0.0);             // aux loss
    p.scalars[1] = static_cast<float>(lse2 / T);                                 // z-loss
    p.scalars[2] = static_cast<float>(ent / T);                                  // entropy
    p.scalars[3] = static_cast<float>(mean_c > 0.0 ? (cmax - mean_c) / mean_c : 0.0);
    p.scalars[4] = static_cast<float>(csum / T);                                 // experts/token
    p.scalars[5] = static_cast<float>(dsum);                                     // dropped
  }
}

__global__ void copy_counts_kernel(const int64_t *__restrict__ src, int64_t *__restrict__ dst, int E) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x)
    dst[e] = src ? src[e] : 0;
}

__global__ void __launch_bounds__(1024)
update_bias_kernel(float *__restrict__ bias, const int64_t *__restrict__ counts, int E, float rate) {
  __shared__ long long sh[1024];
  long long s = 0;
  for (int e = threadIdx.x; e < E; e += 1024) s += counts[e];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int o = 512; o > 0; o >>= 1) {
    if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  const long long total = sh[0];
  // sign(mean - c_e) = sign(total - E * c_e), exact in integers.
  for (int e = threadIdx.x; e < E; e += 1024) {
    const long long d = total - static_cast<long long>(E) * counts[e];
    if (d > 0) bias[e] = bias[e] + rate;
    else if (d < 0) bias[e] = bias[e] - rate;
  }
}

}  // namespace

extern "C" cudaError_t moe_capacity_scratch_bytes(int64_t T, int32_t K, int32_t E, size_t *bytes) {
  CapacityLayout a, b;
  cudaError_t err = capacity_layout(T, K, E, 0, &a);
  if (err == cudaSuccess) err = capacity_layout(T, K, E, 1, &b);
  if (err != cudaSuccess) return err;
  *bytes = a.total > b.total ? a.total : b.total;
  return cudaSuccess;
}

extern "C" cudaError_t moe_launch_capacity(const moeCapacityParams *p, cudaStream_t stream) {
  const int64_t N = p->T * p->K;
  if (N <= 0) return cudaSuccess;
  CapacityLayout L;
  cudaError_t err = capacity_layout(p->T, p->K, p->E, p->policy, &L);
  if (err != cudaSuccess) return err;
  if (L.total > p->scratch_bytes) return cudaErrorInvalidValue;
  char *base = static_cast<char *>(p->scratch);
  uint64_t *kin = reinterpret_cast<uint64_t *>(base + L.keys_in);
  uint64_t *kout = reinterpret_cast<uint64_t *>(base + L.keys_out);
  int64_t *vin = reinterpret_cast<int64_t *>(base + L.vals_in);
  int64_t *vout = reinterpret_cast<int64_t *>(base + L.vals_out);
  int64_t *starts = reinterpret_cast<int64_t *>(base + L.starts);
  const unsigned g = grid_for(N, 256);
  capacity_keys_kernel<<<g, 256, 0, stream>>>(p->ids, p->weights, p->T, p->K, p->E, p->policy, kin, vin);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  size_t temp = L.temp_bytes;
  err = sort_u64_i64(base + L.temp, temp, kin, kout, vin, vout, N, p->policy == 0 ? 32 : 0,
                     32 + bits_for(p->E), stream);
  if (err != cudaSuccess) return err;
  segment_starts_kernel<<<g, 256, 0, stream>>>(kout, N, starts);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  capacity_drop_kernel<<<g, 256, 0, stream>>>(kout, vout, N, p->E, p->capacity, starts, p->ids,
                                              p->weights, p->dropped);
  return cudaGetLastError();
}

static cudaError_t ec_layout(int64_t T, int32_t E, CapacityLayout *L) {
  const int64_t N = T * E;
  size_t temp = 0;
  cudaError_t err = sort_u64_i64(nullptr, temp, nullptr, nullptr, nullptr, nullptr, N, 0,
                                 32 + bits_for(E - 1), 0);
  if (err != cudaSuccess) return err;
  size_t off = 0;
  L->keys_in = off; off += align_up(N * sizeof(uint64_t));
  L->keys_out = off; off += align_up(N * sizeof(uint64_t));
  L->vals_in = off; off += align_up(N * sizeof(int64_t));
  L->vals_out = off; off += align_up(N * sizeof(int64_t));
  L->starts = off;
  L->temp = off; off += align_up(temp);
  L->temp_bytes = temp;
  L->total = off;
  return cudaSuccess;
}

extern "C" cudaError_t moe_expert_choice_scratch_bytes(int64_t T, int32_t E, size_t *bytes) {
  CapacityLayout L;
  cudaError_t err = ec_layout(T, E, &L);
  if (err == cudaSuccess) *bytes = L.total;
  return err;
}

extern "C" cudaError_t moe_launch_expert_choice_pick(const moeExpertChoiceParams *p,
                                                     cudaStream_t stream) {
  const int64_t N = p->T * p->E;
  if (N <= 0) return cudaSuccess;
  CapacityLayout L;
  cudaError_t err = ec_layout(p->T, p->E, &L);
  if (err != cudaSuccess) return err;
  if (L.total > p->scratch_bytes) return cudaErrorInvalidValue;
  char *base = static_cast<char *>(p->scratch);
  uint64_t *kin = reinterpret_cast<uint64_t *>(base + L.keys_in);
  uint64_t *kout = reinterpret_cast<uint64_t *>(base + L.keys_out);
  int64_t *vin = reinterpret_cast<int64_t *>(base + L.vals_in);
  int64_t *vout = reinterpret_cast<int64_t *>(base + L.vals_out);
  const unsigned g = grid_for(N, 256);
  ec_keys_kernel<<<g, 256, 0, stream>>>(p->z, p->tok_max, p->tok_sum, p->T, p->E, kin, vin);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  size_t temp = L.temp_bytes;
  err = sort_u64_i64(base + L.temp, temp, kin, kout, vin, vout, N, 0, 32 + bits_for(p->E - 1), stream);
  if (err != cudaSuccess) return err;
  ec_pick_kernel<<<g, 256, 0, stream>>>(vout, p->z, p->tok_max, p->tok_sum, p->T, p->E,
                                        p->capacity, p->scale, p->ids, p->weights);
  return cudaGetLastError();
}

extern "C" cudaError_t moe_launch_router_stats(const moeStatsParams *p, cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(p->counts, 0, static_cast<size_t>(p->E) * sizeof(int64_t), stream);
  if (err != cudaSuccess) return err;
  const int64_t N = p->T * p->K;
  if (N > 0) {
    unsigned g = grid_for(N, 256);
    if (g > 1024) g = 1024;
    counts_kernel<<<g, 256, static_cast<size_t>(p->E) * sizeof(unsigned int), stream>>>(
        p->ids, N, p->E, p->counts);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  if (p->prob_mean && p->T > 0) {
    if (!p->prob_partial) return cudaErrorInvalidValue;
    const int64_t chunk = prob_chunk_tokens(p->T);
    const int chunks = static_cast<int>((p->T + chunk - 1) / chunk);
    prob_partial_kernel<<<dim3((p->E + 31) / 32, chunks), 256, 0, stream>>>(
        p->z, p->tok_max, p->tok_sum, p->T, p->E, chunk, p->prob_partial);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    prob_finish_kernel<<<(p->E + 255) / 256, 256, 0, stream>>>(p->prob_partial, chunks, p->T, p->E,
                                                               p->prob_mean);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  if (p->scalars && p->T > 0) {
    scalars_kernel<<<1, 1024, 0, stream>>>(*p);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  if (p->dropped_out) {
    copy_counts_kernel<<<(p->E + 255) / 256, 256, 0, stream>>>(p->dropped, p->dropped_out, p->E);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  return cudaSuccess;
}

extern "C" cudaError_t moe_launch_update_selection_bias(float *bias, const int64_t *counts,
                                                        int32_t E, float rate,
                                                        cudaStream_t stream) {
  if (E <= 0) return cudaSuccess;
  update_bias_kernel<<<1, 1024, 0, stream>>>(bias, counts, E, rate);
  return cudaGetLastError();
}
