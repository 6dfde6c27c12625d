// Pieces shared by the tensor-core and SIMT grouped GEMM kernels: tile scheduling over device
// group offsets, row gather tables, the fused epilogue.
#pragma once

#include <math.h>

#include "grouped_gemm.h"
#include "moe_kernels_common.cuh"

namespace moe_kernels {

enum : int { kActSwiGLU = 0, kActGELU = 1, kActReLU = 2, kActSquaredReLU = 3, kActSwiGLUClamped = 4 };

// The m-tile this block computes: group g, rows [m0, m_end). False when the block is one of the
// spare tiles of the worst-case grid (it then exits). group_offsets is the schedule kernel's
// sanitized copy (moe_launch_grouped_gemm repoints it), so [m0, m_end) lies inside [0, M).
__device__ __forceinline__ bool find_tile(const moeGemmParams &p, int BM, int &g, int64_t &m0,
                                          int64_t &m_end) {
  const int b = blockIdx.x;
  if (!p.group_offsets) {
    g = 0;
    m0 = static_cast<int64_t>(b) * BM;
    m_end = p.M;
    return m0 < m_end;
  }
  const int G = p.num_groups;
  const int32_t *tiles = static_cast<const int32_t *>(p.schedule_scratch);
  if (b >= tiles[G]) return false;
  int lo = 0, hi = G - 1;  // largest g with tiles[g] <= b
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tiles[mid] <= b) lo = mid;
    else hi = mid - 1;
  }
  g = lo;
  m0 = p.group_offsets[g] + static_cast<int64_t>(b - tiles[g]) * BM;
  m_end = p.group_offsets[g + 1];
  return m0 < m_end;
}

// Fills the block's row table: source row of A (-1 past the group's end, or for a gather entry
// outside [0, gather_limit): caller data, read as an absent row, never past A or row_scale) and
// the row scale.
__device__ __forceinline__ void fill_rows(const moeGemmParams &p, int BM, int64_t m0,
                                          int64_t m_end, int64_t *arow, float *ascale) {
  for (int i = threadIdx.x; i < BM; i += blockDim.x) {
    const int64_t r = m0 + i;
    int64_t src = -1;
    float sc = 1.f;
    if (r < m_end) {
      const int64_t pair = p.gather ? p.gather[r] : r;
      if (!p.gather || static_cast<uint64_t>(pair) < static_cast<uint64_t>(p.gather_limit)) {
        src = p.gather ? pair / p.gather_div : r;
        if (p.row_scale) sc = p.row_scale[pair];
      }
    }
    arow[i] = src;
    ascale[i] = sc;
  }
}

__device__ __forceinline__ float act_single(float v, int act) {
  switch (act) {
    case kActGELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case kActReLU: return fmaxf(v, 0.f);
    case kActSquaredReLU: { const float r = fmaxf(v, 0.f); return r * r; }
    default: return v;
  }
}

__device__ __forceinline__ float act_gated(float g, float u, int act, float alpha, float limit) {
  if (act == kActSwiGLUClamped) {
    g = fminf(g, limit);
    u = fmaxf(fminf(u, limit), -limit);
    return (u + 1.0f) * g * (1.0f / (1.0f + expf(-alpha * g)));
  }
  return g / (1.0f + expf(-g)) * u;  // silu(g) * u
}

// Stores one output element: + accum_in + add, as fp32 or the storage dtype.
template <typename TS>
__device__ __forceinline__ void store_out(const moeGemmParams &p, int64_t row, int64_t col, float v) {
  const int64_t i = row * p.ldc + col;
  if (p.accum_in) v += p.accum_in[i];
  if (p.add) v += to_f32(static_cast<const TS *>(p.add)[i]);
  if (p.c_f32) static_cast<float *>(p.C)[i] = v;
  else static_cast<TS *>(p.C)[i] = from_f32<TS>(v);
}

// Two neighbouring columns (col, col + 1) of one row, as one 4-byte store when both exist and
// the address allows (16-bit storage); else element by element.
template <typename TS>
__device__ __forceinline__ void store_out2(const moeGemmParams &p, int64_t row, int64_t col,
                                           int64_t ncols, float v0, float v1) {
  const int64_t i = row * p.ldc + col;
  TS *c = static_cast<TS *>(p.C) + i;
  if (sizeof(TS) == 2 && !p.c_f32 && col + 1 < ncols && (reinterpret_cast<uintptr_t>(c) & 3u) == 0) {
    if (p.accum_in) {
      v0 += p.accum_in[i];
      v1 += p.accum_in[i + 1];
    }
    if (p.add) {
      v0 += to_f32(static_cast<const TS *>(p.add)[i]);
      v1 += to_f32(static_cast<const TS *>(p.add)[i + 1]);
    }
    alignas(4) TS two[2] = {from_f32<TS>(v0), from_f32<TS>(v1)};
    *reinterpret_cast<uint32_t *>(c) = *reinterpret_cast<const uint32_t *>(two);
  } else {
    store_out<TS>(p, row, col, v0);
    if (col + 1 < ncols) store_out<TS>(p, row, col + 1, v1);
  }
}

// The fused epilogue of the tiled kernels, for two neighbouring output columns (col, col + 1) of
// one row, from fp32 sums. Gated: gate[b] and up[b] are the sums of B rows col + b and
// Nout + col + b; v = act(gate * sc + bias_gate, up * sc + bias_up). Plain: v = act(sum * sc +
// bias). Then + accum_in / add and the store (store_out2).
template <typename TS>
__device__ __forceinline__ void epilogue_gated2(const moeGemmParams &p, const float *bias,
                                                int64_t row, int64_t col, int64_t Nout, float sc,
                                                const float (&gate)[2], const float (&up)[2]) {
  float o[2];
#pragma unroll
  for (int b = 0; b < 2; ++b) {
    float vg = gate[b] * sc, vu = up[b] * sc;
    if (bias && col + b < Nout) {
      vg += bias[col + b];
      vu += bias[Nout + col + b];
    }
    o[b] = act_gated(vg, vu, p.act, p.alpha, p.limit);
  }
  store_out2<TS>(p, row, col, Nout, o[0], o[1]);
}

template <typename TS>
__device__ __forceinline__ void epilogue_plain2(const moeGemmParams &p, const float *bias,
                                                int64_t row, int64_t col, float sc,
                                                const float (&sum)[2]) {
  float o[2];
#pragma unroll
  for (int b = 0; b < 2; ++b) {
    float v = sum[b] * sc;
    if (bias && col + b < p.N) v += bias[col + b];
    o[b] = act_single(v, p.act);
  }
  store_out2<TS>(p, row, col, p.N, o[0], o[1]);
}

}  // namespace moe_kernels
