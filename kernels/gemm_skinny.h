/* Internal to kernels/: the skinny (memory-bound) body of moe_launch_grouped_gemm, for groups of
 * at most MOE_GEMM_SKINNY_ROWS rows. */
#ifndef MOE_KERNELS_GEMM_SKINNY_H
#define MOE_KERNELS_GEMM_SKINNY_H

#include "grouped_gemm.h"

#ifdef __cplusplus
namespace moe_kernels {
constexpr int kSkinnyRows = MOE_GEMM_SKINNY_ROWS;
}
extern "C" {
#endif

cudaError_t moe_gemm_skinny_init(void);
/* list NULL: one group, rows [0, p->M) with p->M <= MOE_GEMM_SKINNY_ROWS; else list = [count,
 * ids of the groups of 1..MOE_GEMM_SKINNY_ROWS rows] from grouped_gemm.cu's schedule kernel, and
 * slots >= count (blocks past the count exit). */
cudaError_t moe_launch_gemm_skinny(const moeGemmParams *p, const int32_t *list, int64_t slots,
                                   cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
