/* The CPU backend: the ops table, host memory, scratch planning and the selection-bias update.
 * The stages live one per file: route.c (+ route_select.c), permute.c, experts.c (routed and
 * shared experts, head/merge projections, over ffn.c and gemm.c) and combine.c.
 * Every stage completes before it returns; streams are ignored. */
#include <omp.h>
#include <stdlib.h>

#include "backend/cpu/cpu_internal.h"
#include "core/context.h"

#define HOST_ALIGN ((size_t)256)

int moe_cpu_threads(const moeLayer *layer) {
  if (layer && layer->ctx && layer->ctx->num_threads > 0) return layer->ctx->num_threads;
  const int n = omp_get_max_threads();
  return n > 0 ? n : 1;
}

static moeStatus_t cpu_context_init(moeContext_t ctx) {
  if (ctx->num_threads < 0)
    return moe_error(moeErrorInvalidConfig, "num_threads = %d must be >= 0 (0 = OpenMP default)",
                     ctx->num_threads);
  return moeSuccess; /* thread counts are passed per parallel region (num_threads clauses) */
}

static void cpu_context_fini(moeContext_t ctx) {}

static moeStatus_t cpu_mem_alloc(moeContext_t ctx, size_t bytes, void **ptr) {
  *ptr = NULL;
  if (bytes > SIZE_MAX - HOST_ALIGN)
    return moe_error(moeErrorOutOfMemory, "host allocation of %zu bytes exceeds the address space",
                     bytes);
  const size_t rounded = (bytes ? bytes + HOST_ALIGN - 1 : HOST_ALIGN) / HOST_ALIGN * HOST_ALIGN;
  *ptr = aligned_alloc(HOST_ALIGN, rounded);
  if (!*ptr) return moe_error(moeErrorOutOfMemory, "host allocation of %zu bytes failed", rounded);
  return moeSuccess;
}

static void cpu_mem_free(moeContext_t ctx, void *ptr) {
  free(ptr);
}

static moeStatus_t cpu_upload(moeContext_t ctx, void *dst, const void *src, size_t bytes) {
  if (bytes) memcpy(dst, src, bytes);
  return moeSuccess;
}

static moeStatus_t cpu_memset_zero(moeContext_t ctx, void *dst, size_t bytes, moeStream_t s) {
  if (bytes) memset(dst, 0, bytes);
  return moeSuccess;
}

static moeStatus_t cpu_synchronize(moeContext_t ctx, moeStream_t s) {
  return moeSuccess;
}

/* The largest scratch of any stage for T (sub-)tokens; SIZE_MAX when the plan overflows (the
 * layer reports that as a workspace too large to allocate). */
static size_t cpu_scratch_bytes(const moeLayer *L, int64_t T) {
  if (T < 0) T = 0;
  /* T * K and T * E must fit; beyond 2^40 selections the plan is meaningless on a host */
  if (T > ((int64_t)1 << 40) / (L->K > L->E ? L->K : L->E)) return SIZE_MAX;
  size_t m = moe_cpu_route_scratch(L, T), b;
  if ((b = moe_cpu_permute_scratch(L, T)) > m) m = b;
  if ((b = moe_cpu_experts_scratch(L, T)) > m) m = b;
  if ((b = moe_cpu_shared_scratch(L, T)) > m) m = b;
  if ((b = moe_cpu_project_scratch(L, T)) > m) m = b;
  return m;
}

/* [2c]: b_e += rate * sign(mean(c) - c_e), mean over the E experts (sign(0) = 0). */
static moeStatus_t cpu_update_selection_bias(const moeLayer *L, const int64_t *c, float rate,
                                             moeStream_t s) {
  double sum = 0.0;
  for (int32_t e = 0; e < L->E; ++e) sum += (double)c[e];
  const double mean = sum / (double)L->E;
  for (int32_t e = 0; e < L->E; ++e) {
    const double d = mean - (double)c[e];
    const float sign = d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
    L->selection_bias[e] += rate * sign;
  }
  return moeSuccess;
}

const moeBackendOps moe_cpu_backend_ops = {
    .name = "cpu",
    .context_init = cpu_context_init,
    .context_fini = cpu_context_fini,
    .mem_alloc = cpu_mem_alloc,
    .mem_free = cpu_mem_free,
    .upload = cpu_upload,
    .download = cpu_upload, /* host to host: the same memcpy */
    .memset_zero = cpu_memset_zero,
    .synchronize = cpu_synchronize,
    .scratch_bytes = cpu_scratch_bytes,
    .route = moe_cpu_route,
    .permute = moe_cpu_permute,
    .experts = moe_cpu_experts,
    .shared_experts = moe_cpu_shared_experts,
    .combine = moe_cpu_combine,
    .project = moe_cpu_project,
    .update_selection_bias = cpu_update_selection_bias,
};
