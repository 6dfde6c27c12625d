/* moe-bench --ep N: the expert-parallel benchmark, launched with mpirun:
 *   mpirun -np N moe-bench --ep N [-p PRESET] [-s S] [-t T] ...  (the options: moe-bench --help)
 * Prints per-rank stage times (route, layout, dispatch, experts, combine), bytes moved,
 * bandwidth in the nccl-tests (algbw, busbw) and DeepEP conventions, and the cost model's
 * projection for 8, 16 and 64 GPUs. */
#ifndef MOE_BENCH_BENCH_EP_H
#define MOE_BENCH_BENCH_EP_H

#ifdef __cplusplus
extern "C" {
#endif

/* argv as given to moe-bench (argv[0] included), parsed with the tool's option table after
 * MPI_Init; an option --ep does not take is an error.
 * Returns: 0 on success, 1 on a failure, 2 on bad usage or when built without MPI. */
int moe_bench_ep_run(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
