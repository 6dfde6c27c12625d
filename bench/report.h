/* moe-bench: results as a human table (stdout), JSON (--json) and CSV (--csv). */
#ifndef MOE_BENCH_REPORT_H
#define MOE_BENCH_REPORT_H

#include "bench.h"
#include "output.h"

typedef struct benchReport {
  benchEnv env;
  const benchOptions *opt;
  benchRow *rows;
  int num_rows, cap_rows;
  int failures;            /* rows whose --check failed */
  benchOutput json, csv;   /* --json, --csv */
} benchReport;

void bench_report_init(benchReport *rep, const benchOptions *opt);
/* Opens --json and --csv, before anything is measured. Returns 0, or -1 after a message. */
int bench_report_open_files(benchReport *rep);
/* Closes them (after any last write). */
void bench_report_free(benchReport *rep);
/* Prints the run's header: device, driver, commit, measured ceilings. */
void bench_report_print_env(const benchReport *rep);
/* Prints a preset's banner (shape, routing, scale) and the table header. */
void bench_report_begin_preset(const benchReport *rep, const char *preset,
                               const moeLayerConfig_t *cfg, int scale);
/* Stores a row and prints it (and its --stats / --check lines) unless --quiet; rewrites the
 * regular files among --json / --csv. */
void bench_report_add(benchReport *rep, const benchRow *row);
/* Writes --json / --csv for the last time (stdout and other streams: the only time) and closes
 * them. Returns: 0, or 1 when a file could not be written (said once, when it happened). */
int bench_report_finish_files(benchReport *rep);

#endif
