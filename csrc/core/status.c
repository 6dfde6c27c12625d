#include "core/status.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { MOE_ERROR_MESSAGE_BYTES = 1024 };
static _Thread_local char g_last_error[MOE_ERROR_MESSAGE_BYTES];

static const char *const g_status_names[moeStatusCount] = {
    "moeSuccess: no error",
    "moeErrorInvalidArgument: invalid argument",
    "moeErrorInvalidConfig: invalid configuration",
    "moeErrorOutOfMemory: out of memory",
    "moeErrorNotSupported: not supported",
    "moeErrorBackendUnavailable: backend unavailable",
    "moeErrorInvalidState: invalid state",
    "moeErrorCuda: CUDA runtime error",
    "moeErrorCublas: cuBLAS error",
    "moeErrorNccl: NCCL error",
    "moeErrorMpi: MPI error",
    "moeErrorIo: I/O error",
    "moeErrorFormat: malformed file",
    "moeErrorInternal: internal error",
};

const char *moeGetErrorString(moeStatus_t status) {
  if ((int)status < 0 || (int)status >= moeStatusCount) return "moeError?: unknown status value";
  return g_status_names[status];
}

const char *moeGetLastErrorMessage(void) { return g_last_error; }

int moeGetVersion(void) { return MOE_VERSION_CODE; }

moeStatus_t moe_error(moeStatus_t status, const char *fmt, ...) {
  /* Formatted aside first: a caller may pass the last message itself as an argument, to
   * prefix it with its own context, and vsnprintf must not read what it is writing. */
  char message[MOE_ERROR_MESSAGE_BYTES];
  va_list args;
  va_start(args, fmt);
  vsnprintf(message, sizeof message, fmt, args);
  va_end(args);
  memcpy(g_last_error, message, strlen(message) + 1);
  return status;
}

void moe_clear_error(void) { g_last_error[0] = '\0'; }

moeStatus_t moe_sized_check(const void *caller, size_t min_size, size_t full_size,
                            const char *type) {
  size_t size;
  memcpy(&size, caller, sizeof size);
  if (size < min_size || size > full_size)
    return moe_error(moeErrorInvalidArgument,
                     "%s.size = %zu must be in [%zu, %zu]: start from its MOE_*_INIT macro", type,
                     size, min_size, full_size);
  return moeSuccess;
}

moeStatus_t moe_sized_in(void *dst, const void *caller, size_t min_size, size_t full_size,
                         const char *type) {
  MOE_TRY(moe_sized_check(caller, min_size, full_size, type));
  size_t size;
  memcpy(&size, caller, sizeof size);
  memcpy(dst, caller, size);
  memcpy(dst, &full_size, sizeof full_size);
  return moeSuccess;
}

moeStatus_t moe_sized_out(void *caller, const void *src, size_t min_size, size_t full_size,
                          const char *type) {
  MOE_TRY(moe_sized_check(caller, min_size, full_size, type));
  size_t size;
  memcpy(&size, caller, sizeof size);
  memcpy((char *)caller + sizeof size, (const char *)src + sizeof size, size - sizeof size);
  return moeSuccess;
}

moeStatus_t moe_check_disjoint(const char *fn, const void *in, const void *out, size_t bytes) {
  const uintptr_t a = (uintptr_t)in, b = (uintptr_t)out;
  if (bytes > 0 && (a < b ? b - a : a - b) < bytes)
    return moe_error(moeErrorInvalidArgument,
                     "%s: y overlaps x (%zu bytes each, %td bytes apart): y must not share "
                     "memory with x",
                     fn, bytes, (ptrdiff_t)(b - a));
  return moeSuccess;
}
