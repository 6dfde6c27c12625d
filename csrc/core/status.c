#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>

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
  va_list args;
  va_start(args, fmt);
  vsnprintf(g_last_error, sizeof g_last_error, fmt, args);
  va_end(args);
  return status;
}

void moe_clear_error(void) { g_last_error[0] = '\0'; }
