/* Context: resolves the backend (auto -> CUDA when a GPU is usable, else CPU) and owns the
 * backend's handles. */
#include "core/context.h"

#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/status.h"

moeStatus_t moeGetCudaDeviceCount(int *count) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(count);
#ifdef MOE_WITH_CUDA
  *count = moe_cuda_device_count();
#else
  *count = 0;
#endif
  return moeSuccess;
}

static moeStatus_t resolve_backend(moeBackend_t requested, moeBackend_t *resolved,
                                   const moeBackendOps **ops) {
  int gpus = 0;
  moeGetCudaDeviceCount(&gpus);
  switch (requested) {
    case moeBackendAuto:
    case moeBackendCuda:
#ifdef MOE_WITH_CUDA
      if (gpus > 0) {
        *resolved = moeBackendCuda;
        *ops = &moe_cuda_backend_ops;
        return moeSuccess;
      }
      if (requested == moeBackendCuda)
        return moe_error(moeErrorBackendUnavailable,
                         "backend = moeBackendCuda but no CUDA device is usable "
                         "(cudaGetDeviceCount found none or failed)");
#else
      if (requested == moeBackendCuda)
        return moe_error(moeErrorBackendUnavailable,
                         "backend = moeBackendCuda but libmoe was built with MOE_WITH_CUDA=OFF");
#endif
      *resolved = moeBackendCpu;
      *ops = &moe_cpu_backend_ops;
      return moeSuccess;
    case moeBackendCpu:
      *resolved = moeBackendCpu;
      *ops = &moe_cpu_backend_ops;
      return moeSuccess;
  }
  return moe_error(moeErrorInvalidConfig,
                   "config.backend = %d is not a moeBackend_t (valid: 0 auto, 1 cpu, 2 cuda)",
                   (int)requested);
}

moeStatus_t moeContextCreate(moeContext_t *ctx, const moeContextConfig_t *config) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(ctx);
  *ctx = NULL;
  moeContextConfig_t cfg = MOE_CONTEXT_CONFIG_INIT;
  if (config) {
    if (config->size < sizeof(size_t) || config->size > sizeof(moeContextConfig_t))
      return moe_error(moeErrorInvalidConfig,
                       "moeContextConfig_t.size = %zu must be in [%zu, %zu]: initialize it "
                       "with MOE_CONTEXT_CONFIG_INIT",
                       config->size, sizeof(size_t), sizeof(moeContextConfig_t));
    memcpy(&cfg, config, config->size); /* fields an older caller lacks keep their defaults */
    cfg.size = sizeof cfg;
  }
  if (cfg.num_threads < 0)
    return moe_error(moeErrorInvalidConfig, "config.num_threads = %d must be >= 0 (0 = default)",
                     cfg.num_threads);
  if ((cfg.allocator.alloc == NULL) != (cfg.allocator.free == NULL))
    return moe_error(moeErrorInvalidConfig,
                     "config.allocator: alloc and free must both be set or both be NULL");
  if (cfg.device < -1)
    return moe_error(moeErrorInvalidConfig, "config.device = %d must be >= -1 (-1 = current)",
                     cfg.device);

  struct moeContext_s *c = calloc(1, sizeof *c);
  if (!c) return moe_error(moeErrorOutOfMemory, "moeContextCreate: out of host memory");
  moeStatus_t st = resolve_backend(cfg.backend, &c->backend, &c->ops);
  if (st != moeSuccess) {
    free(c);
    return st;
  }
  c->device = c->backend == moeBackendCuda ? cfg.device : -1;
  c->stream = cfg.stream;
  c->allocator = cfg.allocator;
  c->num_threads = cfg.num_threads;
  /* A table named by the environment is the user's explicit request: a bad one fails here. */
  const char *table = getenv("MOE_TUNING_FILE");
  if (table && *table && (st = moe_tuning_load(table, &c->tuning)) != moeSuccess) {
    free(c);
    return moe_error(st, "moeContextCreate: MOE_TUNING_FILE: %s", moeGetLastErrorMessage());
  }
  /* MOE_GEMM_KERNEL=skinny|tiled|wgmma forces one GEMM kernel choice (tests, benchmarks). */
  c->gemm_kernel = MOE_GEMM_KERNEL_AUTO;
  const char *forced = getenv("MOE_GEMM_KERNEL");
  if (forced && *forced && !moe_tuning_parse_kernel(forced, &c->gemm_kernel)) {
    moe_tuning_free(&c->tuning);
    free(c);
    return moe_error(moeErrorInvalidArgument,
                     "moeContextCreate: MOE_GEMM_KERNEL = \"%s\" must be skinny, tiled or wgmma", forced);
  }
  if (c->ops->context_init && (st = c->ops->context_init(c)) != moeSuccess) {
    moe_tuning_free(&c->tuning);
    free(c);
    return st;
  }
  *ctx = c;
  return moeSuccess;
}

moeStatus_t moeContextDestroy(moeContext_t ctx) {
  moe_clear_error();
  if (!ctx) return moeSuccess;
  if (ctx->ops->context_fini) ctx->ops->context_fini(ctx);
  moe_tuning_free(&ctx->tuning);
  free(ctx);
  return moeSuccess;
}

moeStatus_t moeContextLoadTuning(moeContext_t ctx, const char *path) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(ctx);
  if (!path) {
    moe_tuning_free(&ctx->tuning);
    return moeSuccess;
  }
  return moe_tuning_load(path, &ctx->tuning);
}

moeStatus_t moeContextGetBackend(moeContext_t ctx, moeBackend_t *backend) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(ctx);
  MOE_CHECK_NOT_NULL(backend);
  *backend = ctx->backend;
  return moeSuccess;
}

moeStatus_t moeContextSynchronize(moeContext_t ctx) {
  moe_clear_error();
  MOE_CHECK_NOT_NULL(ctx);
  return ctx->ops->synchronize(ctx, ctx->stream);
}

moeStatus_t moe_backend_alloc(moeContext_t ctx, size_t bytes, void **ptr) {
  *ptr = NULL;
  if (bytes == 0) return moeSuccess;
  if (ctx->allocator.alloc) {
    *ptr = ctx->allocator.alloc(ctx->allocator.user, bytes, ctx->backend == moeBackendCuda);
    if (!*ptr)
      return moe_error(moeErrorOutOfMemory, "user allocator returned NULL for %zu bytes", bytes);
    return moeSuccess;
  }
  return ctx->ops->mem_alloc(ctx, bytes, ptr);
}

void moe_backend_free(moeContext_t ctx, void *ptr) {
  if (!ptr) return;
  if (ctx->allocator.free)
    ctx->allocator.free(ctx->allocator.user, ptr, ctx->backend == moeBackendCuda);
  else
    ctx->ops->mem_free(ctx, ptr);
}
