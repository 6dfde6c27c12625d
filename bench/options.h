/* moe-bench: command line. */
#ifndef MOE_BENCH_OPTIONS_H
#define MOE_BENCH_OPTIONS_H

#include <stdio.h>

#include "bench.h"

void bench_options_defaults(benchOptions *o);
/* Returns: 0, or 2 after printing a message for bad usage. */
int bench_parse_options(int argc, char **argv, benchOptions *o);
void bench_print_help(FILE *f);

#endif
