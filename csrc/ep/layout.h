/* The dispatch layout: from the routed expert ids [T, K] of this rank's tokens, which token
 * rows go to which rank (each token ONCE per destination rank, however many of its experts live
 * there), with which ids and weights, and where each token finds its partial rows when they
 * come back. The per-row arrays are built where the ids are (layout_rules.h: one set of rules,
 * a host driver for the CPU backend, a device driver in kernels/ep_layout.cu); the host keeps
 * only the per-rank counts that size the exchange. Combine reuses the layout. */
#ifndef MOE_EP_LAYOUT_H
#define MOE_EP_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "ep/layout_rules.h"
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
  int64_t *summary;         /* [P + 2] host copy of the layout's summary (layout_rules.h) */
  int64_t *exchange;        /* [4P]: the counts + status exchange of each forward, allocated
                               here so that forward never has to leave that exchange */
} moeEpLayout;

/* Allocates the per-rank arrays. Returns: moeSuccess, OutOfMemory. */
moeStatus_t moe_ep_layout_init(moeEpLayout *L, int P, int32_t E, int32_t K);
void moe_ep_layout_free(moeEpLayout *L);

/* Buffer sizes of one layout over T tokens (rows: T * min(K, P) at most). */
size_t moe_ep_layout_pos_count(const moeEpLayout *L, int64_t T);

/* The host driver: steps 0-4 of layout_rules.h on host memory (the CPU backend). */
void moe_ep_layout_build_host(const moeEpLayoutArgs *a);

/* From a host copy of the summary (step 4) of T tokens: S, send_counts and send_displs.
 * bad_value: the id at the summary's bad index (read by the caller where the ids are), used
 * only for the message. Returns: moeSuccess, InvalidArgument (an id outside [-1, E)). */
moeStatus_t moe_ep_layout_finish(moeEpLayout *L, int64_t T, const int64_t *summary,
                                 int32_t bad_value);

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
