/* Cost model of dispatch + combine under uniform routing (see moe_ep.h for the formula). */
#include <math.h>
#include <stddef.h>

#include "core/dtype.h"
#include "core/status.h"
#include "moe/moe_ep.h"

/* P(a token misses a given rank) = C(E - E/P, k) / C(E, k) = prod_{i<k} (E - E/P - i) / (E - i) */
static double miss_probability(int32_t E, int32_t P, int32_t k) {
  double q = 1.0;
  const int32_t Ep = E / P;
  for (int32_t i = 0; i < k; ++i) {
    if (E - Ep - i <= 0) return 0.0;
    q *= (double)(E - Ep - i) / (double)(E - i);
  }
  return q;
}

moeStatus_t moeEpCostModel(const moeEpCostParams_t *params, int32_t P, int64_t T, int64_t H,
                           int32_t E, int32_t k, moeDtype_t dtype, moeEpCost_t *cost) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(cost);
  moeEpCostParams_t prm = MOE_EP_COST_PARAMS_INIT;
  if (params)
    MOE_TRY(moe_sized_in(&prm, params, offsetof(moeEpCostParams_t, nvlink_bw),
                         sizeof(moeEpCostParams_t), "moeEpCostParams_t"));
  /* checked now, written at the end: nothing is written on a failure */
  MOE_TRY(moe_sized_check(cost, offsetof(moeEpCost_t, dispatch_bytes_nvlink),
                          sizeof(moeEpCost_t), "moeEpCost_t"));
  if (P < 1 || T < 0 || H < 1 || E < 1 || E % P != 0 || k < 1 || k > E || !moe_dtype_valid(dtype) ||
      prm.gpus_per_node < 1 || !(prm.nvlink_bw > 0) || !(prm.ib_bw > 0))
    return moe_error(moeErrorInvalidArgument, "moeEpCostModel: need P >= 1, T >= 0, H >= 1, "
                     "E %% P == 0, 1 <= k <= E, bandwidths > 0 (got P=%d T=%lld H=%lld E=%d k=%d)",
                     P, (long long)T, (long long)H, E, k);
  const double es = (double)moe_dtype_size(dtype);
  const int32_t G = prm.gpus_per_node < P ? prm.gpus_per_node : P;
  const double D = P * (1.0 - miss_probability(E, P, k));
  const double share_nvl = (double)(G - 1) / P, share_ib = (double)(P - G) / P;
  const double rows = (double)T * D; /* rows leaving this rank, self included */
  const double disp_row = (double)H * es + 8.0 * k, comb_row = (double)H * es;
  moeEpCost_t c = MOE_EP_COST_INIT;
  c.ranks_per_token = D;
  c.dispatch_bytes_nvlink = rows * share_nvl * disp_row;
  c.dispatch_bytes_ib = rows * share_ib * disp_row;
  c.combine_bytes_nvlink = rows * share_nvl * comb_row;
  c.combine_bytes_ib = rows * share_ib * comb_row;
  c.messages_nvlink = G - 1;
  c.messages_ib = P - G;
  /* Each exchange: the counts alltoall (latency only) + the rows. Link classes run in parallel. */
  const double lat_nvl = prm.nvlink_latency * (double)c.messages_nvlink;
  const double lat_ib = prm.ib_latency * (double)c.messages_ib;
  double d_nvl = c.dispatch_bytes_nvlink / prm.nvlink_bw + 2.0 * lat_nvl;
  double d_ib = c.dispatch_bytes_ib / prm.ib_bw + 2.0 * lat_ib;
  double c_nvl = c.combine_bytes_nvlink / prm.nvlink_bw + lat_nvl;
  double c_ib = c.combine_bytes_ib / prm.ib_bw + lat_ib;
  c.dispatch_s = fmax(d_nvl, d_ib);
  c.combine_s = fmax(c_nvl, c_ib);
  c.total_s = c.dispatch_s + c.combine_s;
  return moe_sized_out(cost, &c, offsetof(moeEpCost_t, dispatch_bytes_nvlink),
                       sizeof(moeEpCost_t), "moeEpCost_t");
}
