/* Status helpers: every failing path records a thread-local message naming the problem. */
#ifndef MOE_CORE_STATUS_H
#define MOE_CORE_STATUS_H

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records "fmt..." as this thread's last error message and returns status, so that a failing
 * path reads `return moe_error(moeErrorInvalidConfig, "top_k = %d must be in [1, %d]", k, E);` */
moeStatus_t moe_error(moeStatus_t status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clears this thread's last error message (called on entry of every public function). */
void moe_clear_error(void);

#ifdef __cplusplus
}
#endif

/* Propagates a failing status from an internal call. */
#define MOE_TRY(expr)                          \
  do {                                         \
    moeStatus_t moe_try_status_ = (expr);      \
    if (moe_try_status_ != moeSuccess) return moe_try_status_; \
  } while (0)

/* Rejects a null pointer argument with a message naming it. */
#define MOE_CHECK_NOT_NULL(ptr)                                                        \
  do {                                                                                 \
    if ((ptr) == NULL)                                                                 \
      return moe_error(moeErrorInvalidArgument, "%s: argument '%s' must not be NULL",  \
                       __func__, #ptr);                                                \
  } while (0)

#endif
