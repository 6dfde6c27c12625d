// Router logits and per-token selection (docs/ROUTING.md sections 1-3, 6; expert choice's
// per-token pass). Every reduction has a fixed order, so results are bitwise reproducible.
#include "routing.h"

#include <math.h>

#include "moe_kernels_common.cuh"

using namespace moe_kernels;

namespace {

// moeRouting_t values (moe.h), repeated here so that this file needs no C API header.
enum : int {
  kTopKSoftmax = 0, kSoftmaxTopK = 1, kSigmoidGroupTopK = 2, kSoftmaxGroupTopK = 3,
  kSigmoidTop1InputScale = 4, kTopP = 5, kExpertChoice = 6, kDense = 7
};

constexpr int kRT = 32;  // tokens per router block
constexpr int kRE = 32;  // experts per router block
constexpr int kRH = 32;  // hidden chunk staged in shared memory

// z[t, e] = dot(x[t], w[e]) (+ b[e]) in the CPU backend's canonical order (csrc/backend/cpu/
// gemm.c): lane l = k mod 8 accumulates the multiple-of-8 prefix in increasing k, the lanes are
// added ((0+1)+(2+3))+((4+5)+(6+7)), then the tail in increasing k; every multiply and add is
// rounded separately (no FMA). So the logits, and therefore the selections, match the CPU's
// bit for bit.
// Work split: a thread owns ONE lane l of a 4-token x 8-expert sub-tile (32 accumulators), the 8
// lanes of a logit are 8 consecutive threads (folded by xor shuffles 1, 2, 4, which add exactly
// the pairs above). Shared tiles are stored lane-major, [row][l * 4 + j] for k = 8 j + l, so one
// float4 read gives a lane its next 4 steps: 12 float4 reads per 256 flops, where one thread per
// 8 lanes of 4 experts needed 10 per 64 and made the kernel shared-memory bound.
template <typename TX>
__global__ void __launch_bounds__(256)
router_logits_kernel(const TX *__restrict__ x, const float *__restrict__ wr,
                     const float *__restrict__ bias, float *__restrict__ z, int64_t T, int E,
                     int64_t Hr) {
  __shared__ __align__(16) float xs[kRT][kRH];
  __shared__ __align__(16) float ws[kRE][kRH];
  const int tid = threadIdx.x;
  const int l = tid & 7, g = tid >> 3;  // lane, sub-tile
  const int tb = (g >> 2) * 4, eb = (g & 3) * 8;  // the sub-tile's first token / expert
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kRT;
  const int e0 = blockIdx.y * kRE;
  const int64_t n8 = Hr & ~static_cast<int64_t>(7);
  float acc[4][8];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;
  for (int64_t h0 = 0; h0 < n8; h0 += kRH) {
    // Stage 32 x 32 of x and of w; k = h0 + c goes to column (c % 8) * 4 + c / 8. Past the
    // multiple-of-8 prefix nothing is read (those steps are skipped below, not added as zeros).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int idx = tid + 256 * i, r = idx >> 5, c = idx & 31;
      const int col = (c & 7) * 4 + (c >> 3);
      const int64_t t = t0 + r, h = h0 + c;
      xs[r][col] = (t < T && h < n8) ? to_f32(x[t * Hr + h]) : 0.f;
      const int e = e0 + r;
      ws[r][col] = (e < E && h < n8) ? wr[static_cast<int64_t>(e) * Hr + h] : 0.f;
    }
    __syncthreads();
    const int64_t left = (n8 - h0) / 8;
    const int steps = static_cast<int>(left < 4 ? left : 4);  // the same for every lane
    float xv[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
      *reinterpret_cast<float4 *>(xv[i]) = *reinterpret_cast<const float4 *>(&xs[tb + i][l * 4]);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float wv[4];
      *reinterpret_cast<float4 *>(wv) = *reinterpret_cast<const float4 *>(&ws[eb + j][l * 4]);
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        if (s >= steps) break;
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(xv[i][s], wv[s]));
      }
    }
    __syncthreads();
  }
  // Fold the 8 lanes (lane 0 ends with ((0+1)+(2+3))+((4+5)+(6+7))), then lane 0 adds the tail.
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float v = acc[i][j];
      v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 1));
      v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 2));
      v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
      acc[i][j] = v;
    }
  if (l != 0) return;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = t0 + tb + i;
    if (t >= T) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int e = e0 + eb + j;
      if (e >= E) continue;
      float v = acc[i][j];
      for (int64_t k = n8; k < Hr; ++k)
        v = __fadd_rn(v, __fmul_rn(to_f32(x[t * Hr + k]), wr[static_cast<int64_t>(e) * Hr + k]));
      z[t * E + e] = bias ? __fadd_rn(v, bias[e]) : v;
    }
  }
}

// Decode-sized batches: one thread per (token, expert, lane) chain of the same canonical dot, so
// that T * E * 8 threads share the work instead of T * E / 4 (bitwise the same logits). The 8
// lanes of one logit are 8 consecutive threads; the fold ((0+1)+(2+3))+((4+5)+(6+7)) is three
// xor shuffles, which add exactly those pairs.
template <typename TX>
__global__ void __launch_bounds__(256)
router_logits_chain_kernel(const TX *__restrict__ x, const float *__restrict__ wr,
                           const float *__restrict__ bias, float *__restrict__ z, int64_t T,
                           int E, int64_t Hr) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = static_cast<int>(idx & 7);
  const int64_t pair = idx >> 3;  // t * E + e
  const bool live = pair < T * E;
  const int64_t t = live ? pair / E : 0, e = live ? pair - t * E : 0;
  const TX *xr = x + t * Hr;
  const float *w = wr + e * Hr;
  const int64_t n8 = Hr & ~static_cast<int64_t>(7);
  float acc = 0.f;
  if (live)
    for (int64_t k = l; k < n8; k += 8) acc = __fadd_rn(acc, __fmul_rn(to_f32(xr[k]), w[k]));
  acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 1));
  acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 2));
  acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, 4));
  if (!live || l != 0) return;
  for (int64_t k = n8; k < Hr; ++k) acc = __fadd_rn(acc, __fmul_rn(to_f32(xr[k]), w[k]));
  z[pair] = bias ? __fadd_rn(acc, bias[e]) : acc;
}

template <typename TX>
void launch_logits(const TX *x, const float *wr, const float *bias, float *z, int64_t T, int E,
                   int64_t Hr, cudaStream_t stream) {
  if (T * E <= 16384) {  // up to 131072 chains: a decode step fills the GPU this way
    const int64_t threads = T * E * 8;
    router_logits_chain_kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(
        x, wr, bias, z, T, E, Hr);
  } else {
    const dim3 grid(static_cast<unsigned>((T + kRT - 1) / kRT), static_cast<unsigned>((E + kRE - 1) / kRE));
    router_logits_kernel<<<grid, 256, 0, stream>>>(x, wr, bias, z, T, E, Hr);
  }
}

__device__ __forceinline__ uint64_t lane_best(const uint32_t *key, int E, int lane) {
  uint64_t best = 0;
  for (int e = lane; e < E; e += 32) {
    const uint32_t k = key[e];
    if (k) {
      const uint64_t c = pack_cand(k, static_cast<uint32_t>(e));
      best = c > best ? c : best;
    }
  }
  return best;
}

// One warp per token. Per-warp shared memory: val[E] (the score weights come from), key[E]
// (selection keys, 0 = excluded or taken), gkey[n_group] (group keys, 0 = kept).
__global__ void __launch_bounds__(256)
route_select_kernel(moeSelectParams p, int stats_only) {
  extern __shared__ uint32_t smem_u[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (t >= p.T) return;  // the whole warp leaves together; no block barriers below
  const int E = p.E, K = p.K, fam = p.family;
  const float *zr = p.z + t * E;

  const size_t stride = 2 * static_cast<size_t>(E) + static_cast<size_t>(p.n_group);
  float *val = reinterpret_cast<float *>(smem_u + warp * stride);
  uint32_t *key = smem_u + warp * stride + E;
  uint32_t *gkey = key + E;

  // Softmax of the logits as the CPU computes it: max, then expf_ref(z - max) summed in double
  // in expert order (one lane; the warp only fills the terms), p = term / sum rounded once.
  float m = -INFINITY;
  for (int e = lane; e < E; e += 32) m = fmaxf(m, zr[e]);
  m = warp_max(m);
  for (int e = lane; e < E; e += 32) val[e] = expf_ref(zr[e] - m);
  __syncwarp();
  double s = 0.0;
  if (lane == 0)
    for (int e = 0; e < E; ++e) s = __dadd_rn(s, static_cast<double>(val[e]));
  s = __shfl_sync(0xffffffffu, s, 0);
  if (lane == 0) {
    p.tok_max[t] = m;
    p.tok_sum[t] = s;
  }
  if (p.tok_lse || p.tok_ent) {
    float ent = 0.f;
    for (int e = lane; e < E; e += 32) {
      const float pe = static_cast<float>(static_cast<double>(val[e]) / s);
      if (pe > 0.f) ent -= pe * logf_ref(pe);
    }
    ent = warp_sum(ent);
    if (lane == 0) {
      if (p.tok_lse) p.tok_lse[t] = m + static_cast<float>(log(s));
      if (p.tok_ent) p.tok_ent[t] = ent;
    }
  }
  __syncwarp();  // every lane is done with val[] before it is overwritten
  if (stats_only) return;

  int32_t *ids = p.ids + t * K;
  float *w = p.weights + t * K;
  if (fam == kDense) {  // every expert, slot j = expert j (as the CPU backend lays it out)
    for (int j = lane; j < K; j += 32) {
      ids[j] = j < E ? j : -1;
      w[j] = j < E ? softmax_prob(zr[j], m, s) * p.scale : 0.f;
    }
    return;
  }

  for (int e = lane; e < E; e += 32) {
    const float zv = zr[e];
    float v;
    uint32_t k;
    if (fam == kTopKSoftmax || fam == kSigmoidTop1InputScale) {
      v = zv;
      k = score_key(zv);
    } else if (fam == kSigmoidGroupTopK) {
      v = sigmoidf_ref(zv);
      k = score_key(v + (p.selection_bias ? p.selection_bias[e] : 0.f));
    } else {
      v = softmax_prob(zv, m, s);
      k = score_key(v);
    }
    val[e] = v;
    key[e] = k;
  }
  __syncwarp();

  // Group limit (2a: group score = sum of the top-2 selection scores; 2b: the max).
  if ((fam == kSigmoidGroupTopK || fam == kSoftmaxGroupTopK) && p.n_group > 1) {
    const int G = p.n_group, gs = E / G;
    for (int g = lane; g < G; g += 32) {
      uint64_t b1 = 0, b2 = 0;
      for (int i = 0; i < gs; ++i) {
        const int e = g * gs + i;
        const uint64_t c = pack_cand(key[e], static_cast<uint32_t>(e));
        if (c > b1) { b2 = b1; b1 = c; } else if (c > b2) { b2 = c; }
      }
      float sc = key_score(cand_key(b1));
      if (fam == kSigmoidGroupTopK && gs > 1) sc = sc + key_score(cand_key(b2));
      gkey[g] = score_key(sc);
    }
    __syncwarp();
    for (int r = 0; r < p.topk_group; ++r) {
      uint64_t best = 0;
      for (int g = lane; g < G; g += 32) {
        const uint32_t k = gkey[g];
        if (k) {
          const uint64_t c = pack_cand(k, static_cast<uint32_t>(g));
          best = c > best ? c : best;
        }
      }
      best = warp_max_u64(best);
      if (cand_key(best) == 0) break;
      __syncwarp();
      if (lane == 0) gkey[cand_idx(best)] = 0;
      __syncwarp();
    }
    for (int e = lane; e < E; e += 32)
      if (gkey[e / gs] != 0) key[e] = 0;
    __syncwarp();
  }

  // Top-K by repeated warp argmax; each lane caches the best of the experts it owns (e % 32).
  uint64_t mine = lane_best(key, E, lane);
  int nsel = 0;
  float v0 = 0.f, acc = 0.f;
  for (int j = 0; j < K; ++j) {
    const uint64_t best = warp_max_u64(mine);
    if (cand_key(best) == 0) break;  // fewer candidates than slots (cannot happen when valid)
    const uint32_t ew = cand_idx(best);
    const float v = val[ew];
    if (static_cast<int>(ew & 31u) == lane) {
      key[ew] = 0;
      mine = lane_best(key, E, lane);
    }
    if (j == 0) v0 = v;
    acc += (fam == kTopKSoftmax) ? expf_ref(v - v0) : v;  // slot order, the same on every lane
    if (lane == 0) {
      ids[j] = static_cast<int32_t>(ew);
      w[j] = v;
    }
    nsel = j + 1;
    if (fam == kTopP && p.top_p < 1.0f && acc > p.top_p) break;
  }
  __syncwarp();  // lane 0's raw values are visible to the warp

  bool divide = false;
  float denom = 1.f;
  if (fam == kTopKSoftmax) {
    divide = true;
    denom = acc;
  } else if (fam == kSoftmaxTopK && p.norm_topk_prob) {
    divide = true;
    denom = acc;
  } else if ((fam == kSigmoidGroupTopK || fam == kSoftmaxGroupTopK) && p.norm_topk_prob) {
    divide = true;
    denom = acc + 1e-20f;
  }
  for (int j = lane; j < K; j += 32) {
    if (j < nsel) {
      const float v = w[j];
      float x;
      if (fam == kTopKSoftmax) x = expf_ref(v - v0) / denom;
      else if (fam == kSigmoidTop1InputScale) x = sigmoidf_ref(v);
      else x = divide ? v / denom : v;
      w[j] = x * p.scale;
    } else {
      ids[j] = -1;
      w[j] = 0.f;
    }
  }
}

cudaError_t launch_select(const moeSelectParams *p, int stats_only, cudaStream_t stream) {
  if (p->T <= 0) return cudaSuccess;
  const size_t warp_bytes = (2 * static_cast<size_t>(p->E) + static_cast<size_t>(p->n_group)) * 4;
  int wpb = static_cast<int>((48u * 1024u) / warp_bytes);
  if (wpb > 8) wpb = 8;
  if (wpb < 1) return cudaErrorInvalidValue;  // E > 4096: outside the layer's valid range
  const size_t smem = warp_bytes * wpb;
  const int64_t blocks = (p->T + wpb - 1) / wpb;
  route_select_kernel<<<static_cast<unsigned>(blocks), 32 * wpb, smem, stream>>>(*p, stats_only);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t moe_launch_router_logits(const void *x, int dtype, const float *wr,
                                                const float *bias, float *z, int64_t T,
                                                int32_t E, int64_t Hr, cudaStream_t stream) {
  if (T <= 0) return cudaSuccess;
  switch (dtype) {
    case kBF16:
      launch_logits(static_cast<const __nv_bfloat16 *>(x), wr, bias, z, T, E, Hr, stream);
      break;
    case kF16:
      launch_logits(static_cast<const __half *>(x), wr, bias, z, T, E, Hr, stream);
      break;
    default:
      launch_logits(static_cast<const float *>(x), wr, bias, z, T, E, Hr, stream);
      break;
  }
  return cudaGetLastError();
}

extern "C" cudaError_t moe_launch_route_select(const moeSelectParams *p, cudaStream_t stream) {
  return launch_select(p, 0, stream);
}

extern "C" cudaError_t moe_launch_route_softmax_stats(const moeSelectParams *p,
                                                      cudaStream_t stream) {
  return launch_select(p, 1, stream);
}
