/* The dispatch layout's rules, one token (or one rank) at a time. The host driver (layout.c, the
 * CPU backend) and the device driver (kernels/ep_layout.cu) both call these, so the two paths
 * cannot disagree on where a row goes. Plain C, compiled as C11 and as CUDA C++.
 *
 * The layout of this rank's T tokens over P ranks (experts in contiguous blocks of E_per):
 *   0. zero:  pos[0 .. P*T] = 0, tok_ptr[T] = 0.
 *   1. mark:  per token t, pos[r*T + t] = 1 for every rank r that holds one of its experts (once,
 *             however many of its experts live there); tok_ptr[t] = its number of ranks.
 *   2. scan:  exclusive prefix sums over pos[0 .. P*T] (rank-major) and tok_ptr[0 .. T]. Then
 *             pos[r*T + t] is the send row of (token t, rank r), rank-major and tokens ascending
 *             within a rank; (t, r) is sent iff pos[r*T + t + 1] > pos[r*T + t]; rank r's rows
 *             are [pos[r*T], pos[(r+1)*T]); pos[P*T] is the number of rows sent, S.
 *   3. place: per token, its rows: send_token, its ids and weights (-1 / 0 where the expert lives
 *             elsewhere), and tok_rows (its rows in rank order, read by the combine's sum).
 *   4. summary[r] = pos[r*T] for r in [0, P] (the host's counts and displacements) and
 *      summary[P + 1] = the flat index t*K + j of the first id outside [-1, E), else MOE_EP_NO_BAD_ID.
 */
#ifndef MOE_EP_LAYOUT_RULES_H
#define MOE_EP_LAYOUT_RULES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MOE_EP_RULE static inline __host__ __device__
#else
#define MOE_EP_RULE static inline
#endif

/* "No bad id": what a memset of 0x7F bytes leaves, above every flat index (the device driver
 * initializes the entry so and lowers it with atomicMin). */
#define MOE_EP_NO_BAD_ID INT64_C(0x7F7F7F7F7F7F7F7F)

/* Everything one layout reads and writes; the arrays are backend memory (device memory for the
 * CUDA driver), carved from the EP workspace. */
typedef struct {
  int32_t P, E, E_per, K;
  int64_t T;
  const int32_t *ids;     /* [T, K] routed expert ids, -1 = none */
  const float *weights;   /* [T, K] */
  int64_t *pos;           /* [P*T + 1] marks, then send rows */
  int64_t *tok_ptr;       /* [T + 1] ranks per token, then offsets into tok_rows */
  int64_t *send_token;    /* [S] token of each send row */
  int64_t *tok_rows;      /* [S] each token's send rows, ranks ascending */
  int32_t *send_ids;      /* [S, K] */
  float *send_weights;    /* [S, K] */
  int64_t *summary;       /* [P + 2] see step 4 */
  void *scan_scratch;     /* device driver only: CUB's temporary storage */
  size_t scan_scratch_bytes;
} moeEpLayoutArgs;

/* Step 1 for token t. Returns the slot j of its first id outside [-1, E), else -1. Such ids are
 * skipped, not stopped at: the layout is refused as a whole, but until the host sees that, the
 * later steps must stay inside their arrays, so marks and counts stay consistent. */
MOE_EP_RULE int moe_ep_mark_token(const moeEpLayoutArgs *a, int64_t t) {
  const int32_t *ids = a->ids + t * a->K;
  int bad = -1;
  for (int j = 0; j < a->K; ++j) {
    const int32_t e = ids[j];
    if (e == -1) continue;
    if (e < 0 || e >= a->E) {
      if (bad < 0) bad = j;
      continue;
    }
    a->pos[(int64_t)(e / a->E_per) * a->T + t] = 1;
  }
  int64_t ranks = 0;
  for (int32_t r = 0; r < a->P; ++r) ranks += a->pos[(int64_t)r * a->T + t];
  a->tok_ptr[t] = ranks;
  return bad;
}

/* Step 3 for token t (after the scans). Ids outside [0, E) are skipped, as at step 1: a layout
 * that has one is refused, and its rows are never read. */
MOE_EP_RULE void moe_ep_place_token(const moeEpLayoutArgs *a, int64_t t) {
  const int K = a->K;
  int64_t fill = a->tok_ptr[t];
  for (int32_t r = 0; r < a->P; ++r) {
    const int64_t at = (int64_t)r * a->T + t, row = a->pos[at];
    if (a->pos[at + 1] == row) continue; /* not sent to rank r */
    a->send_token[row] = t;
    a->tok_rows[fill++] = row;
    for (int j = 0; j < K; ++j) {
      a->send_ids[row * K + j] = -1;
      a->send_weights[row * K + j] = 0.0f;
    }
  }
  const int32_t *ids = a->ids + t * K;
  const float *w = a->weights + t * K;
  for (int j = 0; j < K; ++j) {
    const int32_t e = ids[j];
    if (e < 0 || e >= a->E) continue;
    const int64_t row = a->pos[(int64_t)(e / a->E_per) * a->T + t];
    a->send_ids[row * K + j] = e;
    a->send_weights[row * K + j] = w[j];
  }
}

/* Step 4, entry i in [0, P]. */
MOE_EP_RULE void moe_ep_summarize_rank(const moeEpLayoutArgs *a, int32_t i) {
  a->summary[i] = a->pos[(int64_t)i * a->T];
}

#endif
