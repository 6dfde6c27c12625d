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

/* Size-prefixed structs (a size_t size first, set by a MOE_*_INIT macro): the one rule for
 * callers compiled against an older, smaller version of a struct. The caller's size must lie in
 * [min_size, full_size] (min_size: through the first field after size), else InvalidArgument
 * naming the type and its INIT macro.
 * in:  dst already holds the defaults; the caller's bytes are copied over them, so the fields
 *      an older caller lacks keep their defaults; dst->size becomes full_size.
 * out: the library's src is copied into the caller's first size bytes; the caller's size stays.
 * check: only the size test (for an out struct written later). */
moeStatus_t moe_sized_check(const void *caller, size_t min_size, size_t full_size,
                            const char *type);
moeStatus_t moe_sized_in(void *dst, const void *caller, size_t min_size, size_t full_size,
                         const char *type);
moeStatus_t moe_sized_out(void *caller, const void *src, size_t min_size, size_t full_size,
                          const char *type);

/* InvalidArgument when the output [out, out + bytes) shares any byte with the input [in, in +
 * bytes): a layer reads its input while it writes its output, so even a partial overlap (y = x
 * + one row) gives wrong numbers, not only the exact alias. Addresses of one space (host, or
 * CUDA's unified virtual addresses) compare as integers. */
moeStatus_t moe_check_disjoint(const char *fn, const void *in, const void *out, size_t bytes);

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
