/* The README's example, built and run by ctest so that it never drifts from the API. */
#include <moe/moe.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call) do { moeStatus_t s_ = (call); if (s_ != moeSuccess) { \
  fprintf(stderr, "%s: %s\n", moeGetErrorString(s_), moeGetLastErrorMessage()); return 1; } } while (0)

int main(void) {
  moeContext_t ctx;
  moeContextConfig_t cc = MOE_CONTEXT_CONFIG_INIT;
  cc.backend = moeBackendCpu;               /* host pointers below; moeBackendCuda takes device ones */
  CHECK(moeContextCreate(&ctx, &cc));

  moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;  /* Mixtral-style routing, SwiGLU experts */
  cfg.hidden = 64; cfg.intermediate = 128; cfg.num_experts = 8; cfg.top_k = 2;
  cfg.dtype = moeFloat32;
  moeLayer_t layer;
  CHECK(moeLayerCreate(&layer, ctx, &cfg));

  const int64_t H = 64, I = 128, E = 8, T = 4;
  float *router = malloc(sizeof(float) * E * H), *gate_up = malloc(sizeof(float) * E * 2 * I * H);
  float *down = malloc(sizeof(float) * E * H * I), *x = malloc(sizeof(float) * T * H);
  float *y = malloc(sizeof(float) * T * H);
  for (int64_t i = 0; i < E * H; ++i) router[i] = (float)((i * 37) % 17 - 8) / 64.0f;
  for (int64_t i = 0; i < E * 2 * I * H; ++i) gate_up[i] = (float)((i * 13) % 11 - 5) / 64.0f;
  for (int64_t i = 0; i < E * H * I; ++i) down[i] = (float)((i * 7) % 13 - 6) / 64.0f;
  for (int64_t i = 0; i < T * H; ++i) x[i] = (float)((i * 5) % 9 - 4) / 4.0f;
  CHECK(moeLayerSetRouterWeights(layer, router, NULL, moeFloat32));           /* [E, H] */
  CHECK(moeLayerSetExpertWeightsStacked(layer, gate_up, down, moeFloat32));   /* [E,2I,H], [E,H,I] */

  moeRouterStats_t stats = MOE_ROUTER_STATS_INIT;
  int64_t counts[8];
  float scalars[moeStatScalarCount];
  stats.expert_counts = counts; stats.scalars = scalars;
  CHECK(moeLayerForward(layer, T, x, y, &stats, NULL, 0, NULL));   /* NULL workspace: layer-owned */
  printf("y[0][0..3] = %.4f %.4f %.4f %.4f, aux loss %.4f, expert 0 got %lld selections\n",
         y[0], y[1], y[2], y[3], scalars[moeStatAuxLoss], (long long)counts[0]);

  moeLayerDestroy(layer);
  moeContextDestroy(ctx);
  free(router); free(gate_up); free(down); free(x); free(y);
  return 0;
}
