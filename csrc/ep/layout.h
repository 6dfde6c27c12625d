/* The dispatch layout: from the routed expert ids [T, K] of this rank's tokens, which token
 * rows go to which rank (each token ONCE per destination rank, however many of its experts live
 * there), with which ids and weights, and where each token finds its partial rows when they
 * come back. Computed on the host, the same for every backend; combine reuses it. */
#ifndef MOE_EP_LAYOUT_H
#define MOE_EP_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int P;                    /* ranks */
  int32_t E, E_per, K;      /* experts, experts per rank (contiguous blocks), route width */
  int64_t T;                /* this rank's tokens */
  int64_t S;                /* rows this rank sends (sum of send_counts) */
  int64_t R;                /* rows this rank receives (sum of recv_counts) */
  int64_t *send_counts, *send_displs; /* [P] rows per destination rank, prefix sums */
  int64_t *recv_counts, *recv_displs; /* [P] rows per source rank, prefix sums */
  int64_t *send_token;      /* [S] token of each sent row: rank-major, tokens ascending */
  int64_t *tok_ptr;         /* [T + 1] token t's partial rows are tok_rows[tok_ptr[t]..] */
  int64_t *tok_rows;        /* [S] rows of the send (= combine-back) order, ranks ascending */
  int32_t *send_ids;        /* [S, K] global ids of the destination's experts, else -1 */
  float *send_weights;      /* [S, K] their weights, 0 where the id is -1 */
  int64_t *expert_counts;   /* [E] selections per expert of this rank's tokens */
  int64_t *rank_counts;     /* [P] selections per destination rank (before the per-rank dedup) */
  /* capacities of the arrays above (host memory owned by the layout) */
  int64_t cap_T, cap_S;
  int64_t *scratch;         /* [2P]: stamp + cursor of the placement passes */
  int64_t *exchange;        /* [4P]: the counts + status exchange of each forward, allocated
                               here so that forward never has to leave that exchange */
} moeEpLayout;

/* Allocates the per-rank arrays. Returns: moeSuccess, OutOfMemory. */
moeStatus_t moe_ep_layout_init(moeEpLayout *L, int P, int32_t E, int32_t K);
void moe_ep_layout_free(moeEpLayout *L);

/* Fills every send-side field from host ids [T, K] (-1 = none) and weights [T, K].
 * Returns: moeSuccess, InvalidArgument (an id outside [-1, E)), OutOfMemory. */
moeStatus_t moe_ep_layout_compute(moeEpLayout *L, int64_t T, const int32_t *ids,
                                  const float *weights);

/* An empty send side (T = 0, or a failed rank that still takes part in the exchange). */
void moe_ep_layout_clear(moeEpLayout *L);

/* After the counts exchange: recv_counts[r] rows come from rank r; fills recv_displs and R. */
void moe_ep_layout_set_recv(moeEpLayout *L, const int64_t *recv_counts);

/* Host pack/unpack (the CPU path; kernels/ep_pack.cu is the GPU path of the same layout).
 * gather: dst row i = src row idx[i], rows of row_bytes. */
void moe_ep_gather_rows_host(void *dst, const void *src, const int64_t *idx, int64_t n,
                             size_t row_bytes);
/* y[t] = sum over i in [tok_ptr[t], tok_ptr[t+1]) of back[tok_rows[i]] (fp32, in that order)
 * + shared[t] when shared != NULL; y, back, shared [., H] of dtype. */
void moe_ep_reduce_rows_host(void *y, const void *back, const void *shared, const int64_t *tok_ptr,
                             const int64_t *tok_rows, int64_t T, int64_t H, moeDtype_t dtype);

#ifdef __cplusplus
}
#endif
#endif
