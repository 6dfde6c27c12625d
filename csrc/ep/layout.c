/* Dispatch layout on the host: counting pass, prefix sums, placement pass. */
#include "ep/layout.h"

#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/status.h"

moeStatus_t moe_ep_layout_init(moeEpLayout *L, int P, int32_t E, int32_t K) {
  memset(L, 0, sizeof *L);
  L->P = P;
  L->E = E;
  L->K = K;
  L->E_per = E / P;
  L->send_counts = (int64_t *)calloc((size_t)P * 11, sizeof(int64_t));
  L->expert_counts = (int64_t *)calloc((size_t)E, sizeof(int64_t));
  if (!L->send_counts || !L->expert_counts) {
    moe_ep_layout_free(L);
    return moe_error(moeErrorOutOfMemory, "EP layout: out of host memory");
  }
  L->send_displs = L->send_counts + P;
  L->recv_counts = L->send_counts + 2 * (size_t)P;
  L->recv_displs = L->send_counts + 3 * (size_t)P;
  L->rank_counts = L->send_counts + 4 * (size_t)P;
  L->scratch = L->send_counts + 5 * (size_t)P; /* 2P: stamp + cursor */
  L->exchange = L->send_counts + 7 * (size_t)P; /* 4P */
  return moeSuccess;
}

void moe_ep_layout_free(moeEpLayout *L) {
  free(L->send_counts);
  free(L->expert_counts);
  free(L->send_token);
  free(L->tok_ptr);
  free(L->tok_rows);
  free(L->send_ids);
  free(L->send_weights);
  memset(L, 0, sizeof *L);
}

static moeStatus_t reserve(moeEpLayout *L, int64_t T, int64_t S) {
  if (T + 1 > L->cap_T) {
    free(L->tok_ptr);
    L->tok_ptr = (int64_t *)malloc((size_t)(T + 1) * sizeof(int64_t));
    L->cap_T = L->tok_ptr ? T + 1 : 0;
    if (!L->tok_ptr) return moe_error(moeErrorOutOfMemory, "EP layout: out of host memory");
  }
  if (S > L->cap_S) {
    free(L->send_token);
    free(L->tok_rows);
    free(L->send_ids);
    free(L->send_weights);
    L->send_token = (int64_t *)malloc((size_t)S * sizeof(int64_t));
    L->tok_rows = (int64_t *)malloc((size_t)S * sizeof(int64_t));
    L->send_ids = (int32_t *)malloc((size_t)S * L->K * sizeof(int32_t));
    L->send_weights = (float *)malloc((size_t)S * L->K * sizeof(float));
    L->cap_S = S;
    if (!L->send_token || !L->tok_rows || !L->send_ids || !L->send_weights) {
      L->cap_S = 0;
      return moe_error(moeErrorOutOfMemory, "EP layout: out of host memory for %lld rows",
                       (long long)S);
    }
  }
  return moeSuccess;
}

void moe_ep_layout_clear(moeEpLayout *L) {
  L->T = 0;
  L->S = 0;
  for (int r = 0; r < L->P; ++r) L->send_counts[r] = L->send_displs[r] = L->rank_counts[r] = 0;
  memset(L->expert_counts, 0, (size_t)L->E * sizeof(int64_t));
}

moeStatus_t moe_ep_layout_compute(moeEpLayout *L, int64_t T, const int32_t *ids,
                                  const float *weights) {
  const int P = L->P, K = L->K, Ep = L->E_per;
  int64_t *stamp = L->scratch, *cursor = L->scratch + P;
  moe_ep_layout_clear(L);
  for (int r = 0; r < P; ++r) stamp[r] = -1;
  /* Pass 1: count. A token counts once per destination rank. */
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      int32_t e = ids[t * K + j];
      if (e == -1) continue;
      if (e < 0 || e >= L->E)
        return moe_error(moeErrorInvalidArgument, "EP layout: expert_ids[%lld][%d] = %d is "
                         "outside [-1, %d)", (long long)t, j, e, L->E);
      int r = e / Ep;
      L->expert_counts[e]++;
      L->rank_counts[r]++;
      if (stamp[r] != t) {
        stamp[r] = t;
        L->send_counts[r]++;
      }
    }
  }
  int64_t S = 0;
  for (int r = 0; r < P; ++r) {
    L->send_displs[r] = S;
    S += L->send_counts[r];
  }
  MOE_TRY(reserve(L, T, S));
  L->T = T;
  L->S = S;
  /* Pass 2: place rows rank-major, tokens ascending; per token, its rows in rank order. */
  for (int r = 0; r < P; ++r) {
    stamp[r] = -1;
    cursor[r] = L->send_displs[r];
  }
  /* tok_ptr from the number of distinct ranks of each token */
  L->tok_ptr[0] = 0;
  for (int64_t t = 0; t < T; ++t) {
    int64_t n = 0;
    for (int j = 0; j < K; ++j) {
      int32_t e = ids[t * K + j];
      if (e < 0) continue;
      int r = e / Ep;
      if (stamp[r] != t) {
        stamp[r] = t;
        ++n;
      }
    }
    L->tok_ptr[t + 1] = L->tok_ptr[t] + n;
  }
  for (int r = 0; r < P; ++r) stamp[r] = -1;
  for (int64_t t = 0; t < T; ++t) {
    int64_t fill = L->tok_ptr[t];
    /* ranks ascending so that the source sums partial rows in a fixed rank order */
    for (int r = 0; r < P; ++r) {
      int hit = 0;
      for (int j = 0; j < K && !hit; ++j) hit = ids[t * K + j] >= 0 && ids[t * K + j] / Ep == r;
      if (!hit) continue;
      int64_t row = cursor[r]++;
      L->send_token[row] = t;
      L->tok_rows[fill++] = row;
      for (int j = 0; j < K; ++j) {
        int32_t e = ids[t * K + j];
        int mine = e >= 0 && e / Ep == r;
        L->send_ids[row * K + j] = mine ? e : -1;
        L->send_weights[row * K + j] = mine ? weights[t * K + j] : 0.0f;
      }
    }
  }
  return moeSuccess;
}

void moe_ep_layout_set_recv(moeEpLayout *L, const int64_t *recv_counts) {
  int64_t R = 0;
  for (int r = 0; r < L->P; ++r) {
    L->recv_counts[r] = recv_counts[r];
    L->recv_displs[r] = R;
    R += recv_counts[r];
  }
  L->R = R;
}

void moe_ep_gather_rows_host(void *dst, const void *src, const int64_t *idx, int64_t n,
                             size_t row_bytes) {
  for (int64_t i = 0; i < n; ++i)
    memcpy((char *)dst + (size_t)i * row_bytes, (const char *)src + (size_t)idx[i] * row_bytes,
           row_bytes);
}

void moe_ep_reduce_rows_host(void *y, const void *back, const void *shared, const int64_t *tok_ptr,
                             const int64_t *tok_rows, int64_t T, int64_t H, moeDtype_t dtype) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (int64_t i = tok_ptr[t]; i < tok_ptr[t + 1]; ++i)
        acc += moe_load_f32(back, dtype, (size_t)(tok_rows[i] * H + h));
      if (shared) acc += moe_load_f32(shared, dtype, (size_t)(t * H + h));
      moe_store_f32(y, dtype, (size_t)(t * H + h), acc);
    }
  }
}
