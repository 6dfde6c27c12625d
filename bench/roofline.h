/* moe-bench: the work of one forward (useful FLOPs, minimum bytes) and its roofline floor. */
#ifndef MOE_BENCH_ROOFLINE_H
#define MOE_BENCH_ROOFLINE_H

#include <stdint.h>
#include <stdio.h>

#include "moe/moe.h"

typedef struct {
  double flops;          /* router + routed experts (kept selections) + shared + head/merge */
  double expert_flops;   /* the routed experts alone */
  double bytes;          /* weight_bytes + act_bytes */
  double weight_bytes;   /* router + the routed experts hit + shared experts + head/merge */
  double act_bytes;      /* x read once, y written once */
} benchWork;

/* Work of one forward of T tokens given the kept selections (token, expert pairs) and the
 * number of distinct routed experts they hit (both from the routing output). */
void bench_work(const moeLayerConfig_t *cfg, int64_t T, double selections, double experts_hit,
                benchWork *w);

/* Expected distinct experts hit by T tokens that each pick k of E uniformly at random:
 * E * (1 - (1 - k/E)^T). */
double bench_expected_hit(int32_t E, int32_t k, int64_t T);

/* Roofline floor in microseconds: max(bytes / bw, flops / rate); bw in B/s, rate in FLOP/s.
 * Returns: < 0 when neither ceiling is known. */
double bench_floor_us(double flops, double bytes, double bw, double rate);

/* Prints the floors of every preset at full size (bf16) for a memory bandwidth bw (B/s) and a
 * dense GEMM rate (FLOP/s): bytes of the experts hit at T = 1, 8, 64 and FLOPs at T = 4096.
 * markdown = 1 prints a Markdown table (bench/NOTES.md is made with it). */
void bench_print_roofline_table(FILE *f, double bw, double rate, int markdown);

#endif
