/* The dispatch layout's device driver: steps 0-4 of csrc/ep/layout_rules.h on the stream, from
 * device-resident expert ids (the ids never travel to the host; the host reads back only the
 * P + 2 entries of the summary). */
#ifndef MOE_KERNELS_EP_LAYOUT_H
#define MOE_KERNELS_EP_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "ep/layout_rules.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of CUB temporary storage for the scans of a layout over T tokens and P ranks (0 when
 * the query fails, which the launch then reports). */
size_t moe_ep_layout_scan_bytes_cuda(int32_t P, int64_t T);

/* Enqueues the whole layout (T > 0). Returns: a cudaError_t as int. */
int moe_ep_layout_build_cuda(const moeEpLayoutArgs *a, void *stream);

#ifdef __cplusplus
}
#endif
#endif
