/* The dispatch layout's host side: per-rank counts from the summary, and the host driver of
 * layout_rules.h (the CPU backend's path; kernels/ep_layout.cu is the device driver). */
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
  L->send_counts = (int64_t *)calloc((size_t)P * 9 + 2, sizeof(int64_t));
  if (!L->send_counts) return moe_error(moeErrorOutOfMemory, "EP layout: out of host memory");
  L->send_displs = L->send_counts + P;
  L->recv_counts = L->send_counts + 2 * (size_t)P;
  L->recv_displs = L->send_counts + 3 * (size_t)P;
  L->exchange = L->send_counts + 4 * (size_t)P; /* 4P */
  L->summary = L->send_counts + 8 * (size_t)P;  /* P + 2 */
  return moeSuccess;
}

void moe_ep_layout_free(moeEpLayout *L) {
  free(L->send_counts);
  memset(L, 0, sizeof *L);
}

size_t moe_ep_layout_pos_count(const moeEpLayout *L, int64_t T) {
  return (size_t)L->P * (size_t)T + 1;
}

void moe_ep_layout_clear(moeEpLayout *L) {
  L->T = 0;
  L->S = 0;
  for (int r = 0; r < L->P; ++r) L->send_counts[r] = L->send_displs[r] = 0;
}

static void exclusive_scan(int64_t *v, int64_t n) {
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t x = v[i];
    v[i] = sum;
    sum += x;
  }
}

void moe_ep_layout_build_host(const moeEpLayoutArgs *a) {
  const int64_t T = a->T, n_pos = (int64_t)a->P * T + 1;
  memset(a->pos, 0, (size_t)n_pos * sizeof(int64_t));
  a->tok_ptr[T] = 0;
  int64_t bad = MOE_EP_NO_BAD_ID;
  for (int64_t t = 0; t < T; ++t) {
    const int j = moe_ep_mark_token(a, t);
    if (j >= 0 && bad == MOE_EP_NO_BAD_ID) bad = t * a->K + j;
  }
  exclusive_scan(a->pos, n_pos);
  exclusive_scan(a->tok_ptr, T + 1);
  for (int64_t t = 0; t < T; ++t) moe_ep_place_token(a, t);
  for (int32_t i = 0; i <= a->P; ++i) moe_ep_summarize_rank(a, i);
  a->summary[a->P + 1] = bad;
}

moeStatus_t moe_ep_layout_finish(moeEpLayout *L, int64_t T, const int64_t *summary,
                                 int32_t bad_value) {
  const int64_t bad = summary[L->P + 1];
  if (bad != MOE_EP_NO_BAD_ID) {
    moe_ep_layout_clear(L);
    return moe_error(moeErrorInvalidArgument, "EP layout: expert_ids[%lld][%lld] = %d is outside "
                     "[-1, %d)", (long long)(bad / L->K), (long long)(bad % L->K), bad_value, L->E);
  }
  L->T = T;
  L->S = summary[L->P];
  for (int r = 0; r < L->P; ++r) {
    L->send_displs[r] = summary[r];
    L->send_counts[r] = summary[r + 1] - summary[r];
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
