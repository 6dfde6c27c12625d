/* moe-bench: the files it writes (--json, --csv, --tune, --list --json). Each is opened, or at
 * least checked, before anything is measured, so that a bad path fails at once instead of after
 * the whole run; "-" is stdout for all of them. */
#ifndef MOE_BENCH_OUTPUT_H
#define MOE_BENCH_OUTPUT_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
  const char *path;  /* as given; "-" = stdout */
  FILE *f;           /* open from before the first measurement to the end of the run */
  int rewrite;       /* a regular file: rewritten after every row (a run cut short keeps its
                        rows); stdout, pipes and devices get the document once, at the end */
  int failed;        /* a write failed: reported once, not tried again */
} benchOutput;

/* Writes a whole document to f; returns 0 or -1. */
typedef int (*benchWriteDoc)(FILE *f, const void *doc);

/* Opens path for writing (truncating it). Returns 0, or -1 after "cannot write PATH: why" on
 * stderr. A NULL path leaves out closed and returns 0. */
int bench_output_open(benchOutput *out, const char *path);
/* Writes the document: a regular file from its start (then cut to that length) at every call,
 * a stream only when final. Returns 0, or -1 once the output has failed (reported once). */
int bench_output_write(benchOutput *out, benchWriteDoc write_doc, const void *doc, int final);
/* Closes (stdout: flushes). Returns 0, or -1 when the output failed now or before. */
int bench_output_close(benchOutput *out);
/* One document to path. Returns 0; 2 when path cannot be created; 1 when the write failed. */
int bench_output_write_once(const char *path, benchWriteDoc write_doc, const void *doc);
/* Checks that path can be created or written, without truncating it or leaving a new file
 * behind (for a file written only at the end). Returns 0, or -1 after the message. */
int bench_output_probe(const char *path);
/* 1 when both paths name one existing file (./out and out, a link): options given different
 * spellings of one file would overwrite each other. "-" and NULL are never the same file. */
int bench_output_same_file(const char *a, const char *b);
/* Creates an empty temporary file (in TMPDIR, else /tmp) named after stem and writes its path.
 * Returns 0, or -1 after a message. */
int bench_temp_file(char *path, size_t len, const char *stem);
/* benchWriteDoc for a NUL-terminated string. */
int bench_write_text(FILE *f, const void *text);

#endif
