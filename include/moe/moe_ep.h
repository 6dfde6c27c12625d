/*
 * libmoe expert parallelism (EP): one MoE layer whose routed experts are spread over the ranks
 * of a communicator, in contiguous blocks: rank r holds experts [r * E/P, (r + 1) * E/P) of
 * E routed experts on P ranks (E must be divisible by P). Router and shared experts are
 * replicated on every rank.
 *
 * One forward on each rank, with that rank's own T_local tokens:
 *   route (local) -> layout (which token goes to which rank, each token ONCE per rank)
 *   -> counts exchange (alltoall) -> dispatch (token rows + their expert ids and weights, alltoallv)
 *   -> permute + experts + per-token combine over the rank's local experts
 *   -> combine exchange (partial rows back, alltoallv)
 *   -> sum of the partial rows per token in rank order (deterministic) + shared experts.
 *
 * Communicators: MPI (CPU backend: MPI_Alltoallv; CUDA backend: NCCL bootstrapped over MPI),
 * an existing NCCL communicator, or a loopback communicator that runs P virtual ranks in one
 * process (one thread per virtual rank) for tests.
 *
 * Conventions are those of moe.h: status returns with a thread-local message, Create/Destroy
 * pairs with Destroy(NULL) a no-op, config structs that start with a size field set by the
 * MOE_EP_*_INIT macros. Every EP call that communicates is COLLECTIVE: all ranks of the
 * communicator must call it, in the same order. A failure on any rank is agreed on by all
 * ranks, so that every rank returns an error (the failing rank its own status and message,
 * the others the same status and a message naming the failing rank) and none hangs.
 *
 * Every build has these functions: without MPI, moeEpCommCreateMpi and moeEpGetLocalDevice
 * return moeErrorNotSupported (the loopback communicator and the cost model still work); without
 * NCCL, so does moeEpCommCreateNccl (and moeEpCommCreateMpi on a CUDA context).
 */
#ifndef MOE_MOE_EP_H
#define MOE_MOE_EP_H

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Communicator
 * ------------------------------------------------------------------------------------------- */
typedef struct moeEpComm_s *moeEpComm_t;

/* Creates a communicator over an MPI communicator. COLLECTIVE over mpi_comm.
 * The MPI communicator is duplicated (MPI_Comm_dup), so library traffic never matches the
 * application's messages; the caller may free its own afterwards.
 * On a CUDA context the data path is NCCL, bootstrapped over MPI (rank 0 calls
 * ncclGetUniqueId, MPI_Bcast, ncclCommInitRank on the context's device; see
 * moeEpGetLocalDevice to choose that device).
 * [out] comm      the new communicator; NULL on failure.
 * [in]  ctx       the context whose backend computes; must outlive the communicator.
 * [in]  mpi_comm  pointer to an MPI_Comm (e.g. &MPI_COMM_WORLD's handle in a variable);
 *                 MPI must be initialized (MPI_Init or MPI_Init_thread) and not finalized.
 * Returns: moeSuccess, moeErrorInvalidArgument, moeErrorInvalidState (MPI not initialized),
 *          moeErrorMpi, moeErrorNccl, moeErrorNotSupported (built without MPI; CUDA context in
 *          a build without NCCL), moeErrorOutOfMemory. */
MOE_API moeStatus_t moeEpCommCreateMpi(moeEpComm_t *comm, moeContext_t ctx, const void *mpi_comm);

/* Creates a communicator over an existing NCCL communicator that the caller owns (serving
 * stacks keep theirs). Not collective by itself (it queries rank and size only); the NCCL
 * communicator must outlive the moeEpComm_t and is never destroyed by the library.
 * [in] nccl_comm  an ncclComm_t, passed as void* so this header needs no NCCL headers.
 * [in] ctx        a CUDA context on the NCCL communicator's device.
 * Returns: moeSuccess, moeErrorInvalidArgument, moeErrorNccl, moeErrorNotSupported (no NCCL
 *          in this build, or a CPU context). */
MOE_API moeStatus_t moeEpCommCreateNccl(moeEpComm_t *comm, moeContext_t ctx, void *nccl_comm);

/* Creates num_ranks communicators that talk to each other inside this process: virtual rank r
 * is comms[r]. Each virtual rank must be driven by its own thread (a collective call returns
 * only when every virtual rank has entered it). Works with CPU and CUDA contexts (on CUDA the
 * exchange is device-to-device copies and synchronizes the host).
 * [out] comms      array of num_ranks handles; all NULL on failure.
 * [in]  ctx        shared by every virtual rank; must outlive the communicators.
 * [in]  num_ranks  1 <= num_ranks <= 4096.
 * Returns: moeSuccess, moeErrorInvalidArgument, moeErrorOutOfMemory. */
MOE_API moeStatus_t moeEpCommCreateLoopback(moeEpComm_t *comms, moeContext_t ctx, int num_ranks);

/* [out] rank, size: this rank and the number of ranks. Returns: moeSuccess, InvalidArgument. */
MOE_API moeStatus_t moeEpCommGetRank(moeEpComm_t comm, int *rank);
MOE_API moeStatus_t moeEpCommGetSize(moeEpComm_t comm, int *size);

/* Destroys a communicator. Every EP layer created on it must be destroyed first. Collective
 * for MPI and MPI-bootstrapped NCCL communicators (MPI_Comm_free / ncclCommDestroy); NULL is a
 * no-op. Returns: moeSuccess, moeErrorMpi, moeErrorNccl. */
MOE_API moeStatus_t moeEpCommDestroy(moeEpComm_t comm);

/* Aborts a communicator after a failure, without talking to the other ranks, and frees it
 * (the handle is invalid afterwards). NCCL: ncclCommAbort, which also releases operations in
 * flight. Loopback: every virtual rank blocked in (or later entering) a collective on it
 * returns moeErrorInvalidState. MPI: the duplicated communicator is left to MPI_Finalize
 * (MPI cannot cancel a collective; an application that must release blocked ranks calls
 * MPI_Abort itself). Never calls abort() or exit(). NULL is a no-op.
 * Returns: moeSuccess, moeErrorNccl. */
MOE_API moeStatus_t moeEpCommAbort(moeEpComm_t comm);

/* The device a rank should use: its node-local rank (MPI_Comm_split_type SHARED) modulo the
 * number of visible CUDA devices; 0 without GPUs. COLLECTIVE over mpi_comm.
 * Returns: moeSuccess, moeErrorInvalidArgument, moeErrorMpi, moeErrorNotSupported. */
MOE_API moeStatus_t moeEpGetLocalDevice(const void *mpi_comm, int *device);

/* ---------------------------------------------------------------------------------------------
 * EP layer
 * ------------------------------------------------------------------------------------------- */
typedef struct moeEpLayer_s *moeEpLayer_t;

typedef struct {
  size_t size;             /* sizeof(moeEpLayerConfig_t); set by MOE_EP_LAYER_CONFIG_INIT */
  int32_t collect_timings; /* 1: synchronize the stream after every stage and record host
                              times (moeEpLayerGetTimings); for benchmarks. Default 0. */
} moeEpLayerConfig_t;

/* Partial rows travel back in the layer's dtype (as DeepEP's combine does): for bf16/f16 the
 * sum over ranks differs from the single-process combine by one rounding per rank. */
#define MOE_EP_LAYER_CONFIG_INIT { sizeof(moeEpLayerConfig_t), 0 }

/* Creates this rank's part of an EP layer. COLLECTIVE over comm.
 * Every rank must pass the same layer config (checked: a hash of every field is exchanged).
 * The rank's local layer holds the router (all E experts), the shared experts and only the
 * routed experts [rank * E/P, (rank + 1) * E/P); set its weights with the moe.h setters on
 * moeEpLayerGetLocalLayer (expert ids stay global; an expert outside the range is rejected).
 * [out] layer      the new EP layer; NULL on failure (on every rank when any rank failed).
 * [in]  comm       must outlive the layer.
 * [in]  config     the whole layer's configuration (num_experts = E of the whole layer).
 * [in]  ep_config  NULL for defaults.
 * Returns: moeSuccess; moeErrorInvalidConfig (E not divisible by P, naming both; configs
 *          that differ across ranks, naming the ranks; any moeLayerConfigValidate failure);
 *          moeErrorNotSupported (num_heads > 1); OutOfMemory; Mpi; Nccl; or the status of a
 *          failure on another rank. */
MOE_API moeStatus_t moeEpLayerCreate(moeEpLayer_t *layer, moeEpComm_t comm,
                                     const moeLayerConfig_t *config,
                                     const moeEpLayerConfig_t *ep_config);

/* Destroys an EP layer and its local layer. Not collective. NULL is a no-op. Returns: moeSuccess. */
MOE_API moeStatus_t moeEpLayerDestroy(moeEpLayer_t layer);

/* [out] local  the rank's layer (owned by the EP layer; do not destroy it), for the weight
 *              setters. Returns: moeSuccess, InvalidArgument. */
MOE_API moeStatus_t moeEpLayerGetLocalLayer(moeEpLayer_t layer, moeLayer_t *local);

/* [out] expert_begin, num_local: the routed experts this rank holds (either may be NULL).
 * Returns: moeSuccess, InvalidArgument. */
MOE_API moeStatus_t moeEpLayerGetExpertRange(moeEpLayer_t layer, int32_t *expert_begin,
                                             int32_t *num_local);

/* Bytes of workspace a forward needs when EVERY rank passes at most max_tokens_per_rank
 * tokens (a rank may receive up to P * max_tokens_per_rank tokens).
 * Returns: moeSuccess, InvalidArgument (negative, overflow). */
MOE_API moeStatus_t moeEpLayerGetWorkspaceSize(moeEpLayer_t layer, int64_t max_tokens_per_rank,
                                               size_t *bytes);

/* The whole EP layer on this rank's tokens. COLLECTIVE over the layer's communicator.
 * [in]  num_tokens  T_local >= 0; 0 is allowed (the rank still serves its experts).
 * [in]  x           [T_local, H] layer dtype, backend memory.
 * [out] y           [T_local, H] layer dtype; must not overlap x (InvalidArgument).
 * [out] stats       optional router statistics of this rank's tokens (rank-local).
 * [in]  workspace   >= moeEpLayerGetWorkspaceSize(max over ranks of T_local) bytes of backend
 *                   memory, 256-byte aligned; NULL: the EP layer allocates and keeps its own.
 * [in]  stream      CUDA stream (NULL = the context's). Unlike moe.h stages this call
 *                   SYNCHRONIZES the host (the layout is computed on the host from the routed
 *                   ids) and is not capturable in a CUDA graph.
 * Returns: moeSuccess on every rank, or an error on every rank: the failing rank its own
 *          status and message, the others that status with a message naming the failing rank:
 *          InvalidArgument (also: workspace too small or unaligned), InvalidState (a weight not
 *          set), Mpi, Nccl, Cuda, OutOfMemory. */
MOE_API moeStatus_t moeEpLayerForward(moeEpLayer_t layer, int64_t num_tokens, const void *x,
                                      void *y, const moeRouterStats_t *stats, void *workspace,
                                      size_t workspace_bytes, moeStream_t stream);

/* As moeEpLayerForward, with routing done by the caller (a serving stack that owns routing):
 * [in] expert_ids [T_local, K] int32 global ids or -1, weights [T_local, K] fp32, backend
 * memory, K = moeLayerGetRouteWidth. An id outside [-1, E) is refused on every backend
 * (InvalidArgument naming it: this call synchronizes anyway, unlike the moe.h stages).
 * Returns: as moeEpLayerForward. */
MOE_API moeStatus_t moeEpLayerForwardRouted(moeEpLayer_t layer, int64_t num_tokens,
                                            const void *x, const int32_t *expert_ids,
                                            const float *weights, void *y, void *workspace,
                                            size_t workspace_bytes, moeStream_t stream);

/* What the last forward on this rank did. Times in seconds (host clock; stages are separated
 * by stream synchronizations only when collect_timings is set, else they are 0).
 * Bytes count token rows and their metadata, self-sends included, counts exchange excluded. */
typedef struct {
  size_t size;              /* sizeof(moeEpTimings_t); set by MOE_EP_TIMINGS_INIT */
  double route_s, layout_s, dispatch_s, experts_s, combine_s, total_s;
  int64_t tokens_sent;      /* token rows this rank sent in dispatch (a token once per rank) */
  int64_t tokens_received;  /* token rows this rank received in dispatch */
  int64_t tokens_self;      /* of those, rows this rank sent to itself */
  int64_t dispatch_bytes_sent, dispatch_bytes_received;
  int64_t combine_bytes_sent, combine_bytes_received;
  int64_t messages;         /* point-to-point messages this rank sent (non-empty, peers != self) */
} moeEpTimings_t;

#define MOE_EP_TIMINGS_INIT { sizeof(moeEpTimings_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/* [out] timings of the last forward on this rank. Returns: moeSuccess, InvalidArgument. */
MOE_API moeStatus_t moeEpLayerGetTimings(moeEpLayer_t layer, moeEpTimings_t *timings);

/* ---------------------------------------------------------------------------------------------
 * Cost model of dispatch + combine (no communication; pure arithmetic)
 *   time = max over link classes (bytes per rank / bandwidth + latency * messages),
 * for uniform routing: a token reaches D = P (1 - C(E - E/P, k) / C(E, k)) distinct ranks on
 * average; the share (G - 1)/P of them goes over NVLink (same node, G GPUs per node), (P - G)/P
 * over InfiniBand, 1/P stays on the rank. Dispatch moves H * elem + 8k bytes per token row,
 * combine H * elem back.
 * ------------------------------------------------------------------------------------------- */
typedef struct {
  size_t size;               /* sizeof(moeEpCostParams_t); set by MOE_EP_COST_PARAMS_INIT */
  int32_t gpus_per_node;     /* G; default 8 */
  double nvlink_bw;          /* B/s per GPU per direction; default 450e9 (H100 NVLink4) */
  double ib_bw;              /* B/s per GPU per direction; default 50e9 (one 400 Gb/s NIC) */
  double nvlink_latency;     /* s per message; default 2e-6 */
  double ib_latency;         /* s per message; default 5e-6 */
} moeEpCostParams_t;

#define MOE_EP_COST_PARAMS_INIT { sizeof(moeEpCostParams_t), 8, 450e9, 50e9, 2e-6, 5e-6 }

typedef struct {
  size_t size;               /* sizeof(moeEpCost_t); set by MOE_EP_COST_INIT */
  double ranks_per_token;    /* D */
  double dispatch_bytes_nvlink, dispatch_bytes_ib;  /* per rank, sent */
  double combine_bytes_nvlink, combine_bytes_ib;
  int64_t messages_nvlink, messages_ib;             /* per rank per exchange */
  double dispatch_s, combine_s, total_s;
} moeEpCost_t;

#define MOE_EP_COST_INIT { sizeof(moeEpCost_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/* [in]  params  NULL for defaults.  [in] num_ranks P >= 1, tokens_per_rank >= 0, the layer's
 *               hidden, num_experts (divisible by P), top_k (1..E), dtype.
 * [out] cost    (cost->size set by MOE_EP_COST_INIT).
 * Returns: moeSuccess, InvalidArgument. Not collective; needs no MPI. */
MOE_API moeStatus_t moeEpCostModel(const moeEpCostParams_t *params, int32_t num_ranks,
                                   int64_t tokens_per_rank, int64_t hidden, int32_t num_experts,
                                   int32_t top_k, moeDtype_t dtype, moeEpCost_t *cost);

#ifdef __cplusplus
}
#endif
#endif /* MOE_MOE_EP_H */
