/* The EP layer: a local moeLayer holding this rank's experts, the communicator, the layout,
 * the library-owned workspace and the last forward's timings. */
#ifndef MOE_EP_EP_LAYER_H
#define MOE_EP_EP_LAYER_H

#include "ep/comm.h"
#include "ep/layout.h"
#include "layer/layer.h"
#include "layer/layer_internal.h" /* moe_layer_create_local */
#include "moe/moe_ep.h"

#ifdef __cplusplus
extern "C" {
#endif

struct moeEpLayer_s {
  moeEpComm_t comm;
  moeLayer_t local;
  moeEpLayerConfig_t ep_cfg;
  int P, rank;
  int32_t E, E_per, K, S;   /* S: shared experts */
  int64_t H;
  size_t es;                /* element size of the layer dtype */
  moeEpLayout layout;
  void *own_ws[2];          /* library-owned workspace: before / after the counts exchange */
  size_t own_ws_bytes[2];
  moeEpTimings_t timings;
};

/* Workspace plan of one forward: phase A depends on T (this rank's tokens), phase B on R
 * (tokens received). Offsets are from the start of each phase's region. */
typedef struct {
  size_t ids, weights, shared_out, send_x, send_ids, send_w, send_token, tok_ptr, tok_rows,
      pos, summary, scan, scan_bytes, back, stage_a, bytes_a;
  size_t recv_x, recv_ids, recv_w, offsets, sorted_pairs, pair_rows, expert_out, partial,
      stage_b, bytes_b;
} moeEpWsPlan;

/* EP calls launch kernels and allocate on the current device, which is per host thread (loopback
 * ranks are threads sharing one context): enter makes it the context's and returns the caller's
 * (-1 when nothing changed), leave gives it back, as every backend op does. */
int moe_ep_enter_device(moeContext_t ctx);
void moe_ep_leave_device(int previous);

moeStatus_t moe_ep_plan_a(const struct moeEpLayer_s *L, int64_t T, moeEpWsPlan *p);
moeStatus_t moe_ep_plan_b(const struct moeEpLayer_s *L, int64_t R, moeEpWsPlan *p);

#ifdef __cplusplus
}
#endif
#endif
