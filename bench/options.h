/* moe-bench: command line. One option table serves every mode (the benchmark, --list,
 * --roofline, --ep), so that an option is spelled, ranged and reported the same way in all. */
#ifndef MOE_BENCH_OPTIONS_H
#define MOE_BENCH_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

#include "bench.h"

/* Every option; benchOptions.given has bit (1 << id) set for each one on the command line. */
typedef enum {
  BENCH_OPT_HELP, BENCH_OPT_VERSION, BENCH_OPT_LIST, BENCH_OPT_ROOFLINE, BENCH_OPT_MARKDOWN,
  BENCH_OPT_PEAK_BW, BENCH_OPT_PEAK_TFLOPS, BENCH_OPT_PRESET, BENCH_OPT_SCALE, BENCH_OPT_TOKENS,
  BENCH_OPT_SWEEP, BENCH_OPT_DTYPE, BENCH_OPT_CHECKPOINT, BENCH_OPT_LAYER, BENCH_OPT_BACKEND,
  BENCH_OPT_ITERS, BENCH_OPT_MAX_TIME, BENCH_OPT_WARMUP, BENCH_OPT_SEED, BENCH_OPT_THREADS,
  BENCH_OPT_NO_STAGES, BENCH_OPT_CHECK, BENCH_OPT_NO_CHECK, BENCH_OPT_CHECK_TOKENS,
  BENCH_OPT_STATS, BENCH_OPT_ROUTING, BENCH_OPT_TOP_P, BENCH_OPT_K_MAX, BENCH_OPT_CAPACITY,
  BENCH_OPT_DROP_POLICY, BENCH_OPT_EXPERT_CHOICE, BENCH_OPT_HEADS, BENCH_OPT_DENSE, BENCH_OPT_EP,
  BENCH_OPT_JSON, BENCH_OPT_CSV, BENCH_OPT_TUNE, BENCH_OPT_QUIET, BENCH_OPT_COUNT
} benchOptionId;

#define BENCH_OPT_BIT(id) ((uint64_t)1 << (id))

void bench_options_defaults(benchOptions *o);
/* Parses argv into o. Messages go to err (NULL: none, for the MPI ranks other than 0).
 * Returns: 0, or 2 after a message for bad usage. */
int bench_parse_options(int argc, char **argv, benchOptions *o, FILE *err);
/* Whether argv holds --ep (as an option, not as the value of another one): the expert-parallel
 * mode initializes MPI before it parses, so that only rank 0 reports bad usage. */
int bench_options_want_ep(int argc, char **argv);
/* --ep mode: rejects the options it does not take and fills its own defaults (preset, tokens,
 * iterations, scale, backend). Returns: 0, or 2 after a message to err (may be NULL). */
int bench_options_finish_ep(benchOptions *o, FILE *err);
/* Run-time checks that need the backend (gpu: the CUDA mode was chosen) and the mode's
 * defaults applied. Returns: 0, or 2 after a message to stderr. */
int bench_options_finish_run(benchOptions *o, int gpu);
void bench_print_help(FILE *f);

#endif
