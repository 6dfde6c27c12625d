/* Internal to kernels/: the tensor-core and SIMT bodies of moe_launch_grouped_gemm. */
#ifndef MOE_KERNELS_GEMM_TC_H
#define MOE_KERNELS_GEMM_TC_H

#include "grouped_gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

int moe_gemm_tc_block_m(void);
cudaError_t moe_gemm_tc_init(void);
int moe_gemm_simt_block_m(void);
/* m_tiles: grid size along M (the worst case over the groups). */
cudaError_t moe_launch_gemm_tc(const moeGemmParams *p, int64_t m_tiles, cudaStream_t stream);
cudaError_t moe_launch_gemm_simt(const moeGemmParams *p, int64_t m_tiles, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
