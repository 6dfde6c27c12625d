/* moe-bench: output files (output.h). */
#define _POSIX_C_SOURCE 200809L
#include "output.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *shown(const char *path) { return strcmp(path, "-") == 0 ? "stdout" : path; }

static void report_failure(benchOutput *out, int err) {
  if (out->failed) return; /* once: not after every row, nor again at the end */
  out->failed = 1;
  fprintf(stderr, "moe-bench: cannot write %s: %s\n", shown(out->path),
          err ? strerror(err) : "write error");
}

int bench_output_open(benchOutput *out, const char *path) {
  memset(out, 0, sizeof *out);
  out->path = path;
  if (!path) return 0;
  if (strcmp(path, "-") == 0) {
    out->f = stdout;
    return 0;
  }
  out->f = fopen(path, "w");
  if (!out->f) {
    fprintf(stderr, "moe-bench: cannot write %s: %s\n", path, strerror(errno));
    return -1;
  }
  struct stat st;
  out->rewrite = fstat(fileno(out->f), &st) == 0 && S_ISREG(st.st_mode);
  return 0;
}

int bench_output_write(benchOutput *out, benchWriteDoc write_doc, const void *doc, int final) {
  if (!out->f || out->failed) return out->failed ? -1 : 0;
  if (!out->rewrite && !final) return 0;
  if (out->rewrite) rewind(out->f);
  errno = 0;
  int bad = write_doc(out->f, doc) != 0;
  bad = fflush(out->f) != 0 || ferror(out->f) || bad;
  if (!bad && out->rewrite) {
    const off_t end = ftello(out->f); /* a shorter document than the last one: cut the rest */
    bad = end < 0 || ftruncate(fileno(out->f), end) != 0;
  }
  if (bad) report_failure(out, errno);
  return bad ? -1 : 0;
}

int bench_output_close(benchOutput *out) {
  if (!out->f) return out->failed ? -1 : 0;
  errno = 0;
  const int bad = out->f == stdout ? fflush(stdout) != 0 : fclose(out->f) != 0;
  out->f = NULL;
  if (bad) report_failure(out, errno);
  return out->failed ? -1 : 0;
}

int bench_output_write_once(const char *path, benchWriteDoc write_doc, const void *doc) {
  benchOutput out;
  if (bench_output_open(&out, path) != 0) return 2;
  const int bad = bench_output_write(&out, write_doc, doc, 1) != 0;
  return bench_output_close(&out) != 0 || bad ? 1 : 0;
}

int bench_output_probe(const char *path) {
  if (!path || strcmp(path, "-") == 0) return 0;
  struct stat st;
  const int existed = stat(path, &st) == 0;
  FILE *f = fopen(path, "a"); /* "a": an existing file keeps its content */
  if (!f) {
    fprintf(stderr, "moe-bench: cannot write %s: %s\n", path, strerror(errno));
    return -1;
  }
  fclose(f);
  if (!existed) remove(path);
  return 0;
}

int bench_output_same_file(const char *a, const char *b) {
  if (!a || !b || strcmp(a, "-") == 0 || strcmp(b, "-") == 0) return 0;
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int bench_temp_file(char *path, size_t len, const char *stem) {
  const char *dir = getenv("TMPDIR");
  snprintf(path, len, "%s/%s-XXXXXX", dir && *dir ? dir : "/tmp", stem);
  const int fd = mkstemp(path);
  if (fd < 0) {
    fprintf(stderr, "moe-bench: cannot create a temporary file %s: %s\n", path, strerror(errno));
    return -1;
  }
  close(fd);
  return 0;
}

int bench_write_text(FILE *f, const void *text) { return fputs((const char *)text, f) < 0 ? -1 : 0; }
