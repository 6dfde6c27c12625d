/* Permute stage of the CPU backend: a stable counting sort of the T * K (token, slot) pairs by
 * local expert. An id outside [-1, E) is refused. Pairs whose id is -1 or belongs to another
 * rank's experts (expert parallelism: outside [expert_begin, expert_begin + E_local)) get no row
 * (pair_rows = -1). Within an expert the rows keep increasing pair order t * K + j. Serial: it
 * is O(T * K) integer work that moves less memory than any other stage, and serial makes
 * stability trivially true. */
#include "backend/cpu/cpu_internal.h"

size_t moe_cpu_permute_scratch(const moeLayer *layer, int64_t T) {
  return 0;
}

moeStatus_t moe_cpu_permute(const moeLayer *L, const moePermuteArgs *a, moeScratch scratch,
                            moeStream_t stream) {
  const int64_t TK = a->T * L->K;
  const int32_t El = L->E_local, e0 = L->expert_begin;
  const int32_t *ids = a->expert_ids;
  int64_t *off = a->expert_offsets;
  /* ids are global expert ids or -1; anything else is the caller's mistake, not "no expert" */
  for (int64_t p = 0; p < TK; ++p)
    if (ids[p] < -1 || ids[p] >= L->E)
      return moe_error(moeErrorInvalidArgument,
                       "permute: expert_ids[%lld] = %d outside [-1, E = %d)", (long long)p,
                       (int)ids[p], (int)L->E);
  for (int32_t e = 0; e <= El; ++e) off[e] = 0;
  if (TK <= 0) return moeSuccess;
  /* counts of local expert e land in off[e + 1] */
  for (int64_t p = 0; p < TK; ++p) {
    const int64_t le = (int64_t)ids[p] - e0;
    if (ids[p] >= 0 && le >= 0 && le < El) off[le + 1]++;
  }
  /* shifted exclusive scan: off[e + 1] = first row of e; the fill below advances it to the
   * first row of e + 1, leaving off as the offsets */
  int64_t run = 0;
  for (int32_t e = 0; e < El; ++e) {
    const int64_t c = off[e + 1];
    off[e + 1] = run;
    run += c;
  }
  for (int64_t p = 0; p < TK; ++p) {
    const int64_t le = (int64_t)ids[p] - e0;
    if (ids[p] >= 0 && le >= 0 && le < El) {
      const int64_t r = off[le + 1]++;
      a->sorted_pairs[r] = p;
      a->pair_rows[p] = r;
    } else {
      a->pair_rows[p] = -1;
    }
  }
  return moeSuccess;
}
