/* Internal to kernels/: the Hopper (sm_90a) body of moe_launch_grouped_gemm, wgmma fed by TMA. */
#ifndef MOE_KERNELS_GEMM_WGMMA_H
#define MOE_KERNELS_GEMM_WGMMA_H

#include "grouped_gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

int moe_gemm_wgmma_block_m(void);
/* Once per context: the kernels' shared-memory limit and the driver's cuTensorMapEncodeTiled
 * (through the runtime's entry-point query, so that libmoe does not link libcuda). Failure to
 * find the entry point is not an error: the path is then never eligible. */
cudaError_t moe_gemm_wgmma_init(void);
/* Whether p can run on the wgmma kernel: bf16/f16, K % 8 == 0, 16-byte aligned A and B rows,
 * groups of B a whole number of K-long rows apart, sizes within the tensor map's limits, and the
 * driver entry point found. The caller checks the device (compute capability 9.x). */
int moe_gemm_wgmma_eligible(const moeGemmParams *p);
/* m_tiles: grid size along M (the worst case over the groups), as for the mma.sync kernel. */
cudaError_t moe_launch_gemm_wgmma(const moeGemmParams *p, int64_t m_tiles, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
