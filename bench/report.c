/* moe-bench: table, JSON and CSV output. */
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe.h"

static void write_files(benchReport *rep, int final);

void bench_report_init(benchReport *rep, const benchOptions *opt) {
  memset(rep, 0, sizeof *rep);
  rep->opt = opt;
  bench_fill_env_common(&rep->env);
}

int bench_report_open_files(benchReport *rep) {
  if (bench_output_open(&rep->json, rep->opt->json_path) != 0) return -1;
  if (bench_output_open(&rep->csv, rep->opt->csv_path) != 0) {
    bench_output_close(&rep->json);
    return -1;
  }
  /* Now that both exist: different spellings of one file (the options check compared strings) */
  const char *paths[3] = {rep->opt->json_path, rep->opt->csv_path, rep->opt->tune_path};
  const char *names[3] = {"--json", "--csv", "--tune"};
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b)
      if (bench_output_same_file(paths[a], paths[b])) {
        fprintf(stderr, "moe-bench: %s %s and %s %s are the same file\n", names[a], paths[a],
                names[b], paths[b]);
        bench_report_free(rep);
        return -1;
      }
  return 0;
}

void bench_report_free(benchReport *rep) {
  bench_output_close(&rep->json);
  bench_output_close(&rep->csv);
  free(rep->rows);
  rep->rows = NULL;
  rep->num_rows = rep->cap_rows = 0;
}

static int gpu_mode(const benchReport *rep) { return strcmp(rep->env.mode, "cuda") == 0; }

void bench_report_print_env(const benchReport *rep) {
  const benchEnv *e = &rep->env;
  int v = moeGetVersion();
  printf("moe-bench  libmoe %d.%d.%d  commit %s  %s  host %s\n", v / 10000, v / 100 % 100, v % 100,
         e->commit, e->date, e->host);
  printf("command: %s\n", e->command);
  if (gpu_mode(rep)) {
    printf("device: %s  driver %s  runtime %s  L2 %.0f MB  memory %.1f GB\n", e->device, e->driver,
           e->runtime, e->l2_bytes / 1e6, e->mem_bytes / 1e9);
    if (e->copy_bw > 0)
      printf("ceilings (measured in this run): d2d copy %.0f GB/s (read+write)  ", e->copy_bw / 1e9);
    else
      printf("ceilings: d2d copy not measured  ");
    if (e->gemm_rate > 0)
      printf("cuBLAS bf16 GEMM %d^3 %.1f TFLOP/s\n", e->gemm_n, e->gemm_rate / 1e12);
    else
      printf("cuBLAS GEMM: not measured\n");
  } else {
    printf("device: cpu, %d threads  (no roofline ceilings on the CPU: %%roof not reported)\n",
           e->threads);
  }
}

void bench_report_begin_preset(const benchReport *rep, const char *preset,
                               const moeLayerConfig_t *cfg, int scale) {
  char extra[160] = "";
  size_t n = 0;
  if (cfg->num_shared_experts)
    n += (size_t)snprintf(extra + n, sizeof extra - n, " shared %dx%lld", cfg->num_shared_experts,
                          (long long)(cfg->shared_intermediate ? cfg->shared_intermediate : cfg->intermediate));
  if (cfg->n_group > 1 && n < sizeof extra)
    n += (size_t)snprintf(extra + n, sizeof extra - n, " groups %d/%d", cfg->n_group, cfg->topk_group);
  if (cfg->routing == moeRoutingTopP && n < sizeof extra)
    n += (size_t)snprintf(extra + n, sizeof extra - n, " top-p %.2f k_max %d", cfg->top_p_threshold, cfg->top_k);
  if (cfg->capacity_factor > 0 && n < sizeof extra)
    n += (size_t)snprintf(extra + n, sizeof extra - n, " capacity %.2f", cfg->capacity_factor);
  if (cfg->num_heads > 1 && n < sizeof extra)
    n += (size_t)snprintf(extra + n, sizeof extra - n, " heads %d", cfg->num_heads);
  printf("\n== %s  H %lld  I %lld  E %d  k %d  %s  %s  scale 1/%d%s\n", preset,
         (long long)cfg->hidden, (long long)cfg->intermediate, cfg->num_experts, cfg->top_k,
         bench_routing_name(cfg->routing), bench_dtype_name(cfg->dtype), scale, extra);
  const char *rate = gpu_mode(rep) ? "TFLOP/s" : "GFLOP/s";
  printf("%7s %11s %11s %8s %8s %6s %6s | %9s %9s %9s %9s %9s | %s\n", "T", "median us", "tokens/s",
         rate, "GB/s", "hit", "%roof", "route", "permute", "experts", "shared", "combine", "check");
}

static void fmt_us(char *buf, size_t n, double us) {
  if (us < 0) snprintf(buf, n, "-");
  else snprintf(buf, n, "%.1f", us);
}

void bench_report_add(benchReport *rep, const benchRow *row) {
  if (rep->num_rows == rep->cap_rows) {
    rep->cap_rows = rep->cap_rows ? 2 * rep->cap_rows : 16;
    rep->rows = realloc(rep->rows, (size_t)rep->cap_rows * sizeof *rep->rows);
    if (!rep->rows) {
      fprintf(stderr, "moe-bench: out of host memory\n");
      exit(1);
    }
  }
  rep->rows[rep->num_rows++] = *row;
  if (row->checked == 1 && !row->pass) rep->failures++;
  /* Files are rewritten after every row, so a run cut short (a time limit) keeps its results. */
  write_files(rep, 0);
  if (rep->opt->quiet) return; /* --quiet: no table on stdout, the files only */

  char st[BENCH_NUM_STAGES][16], roof[16], check[128];
  for (int s = 0; s < BENCH_NUM_STAGES; ++s) fmt_us(st[s], sizeof st[s], row->stage_us[s]);
  if (row->roofline_frac >= 0) snprintf(roof, sizeof roof, "%.1f", 100.0 * row->roofline_frac);
  else snprintf(roof, sizeof roof, "-");
  if (row->checked == 1)
    snprintf(check, sizeof check, "%s rel %.2e (tol %.0e, %d tok)", row->pass ? "PASS" : "FAIL",
             row->rel_err, row->tol, row->check_tokens);
  else if (row->checked == -1)
    snprintf(check, sizeof check, "skipped: %s", row->check_note);
  else
    snprintf(check, sizeof check, "-");
  const double rate = gpu_mode(rep) ? row->flop_rate / 1e12 : row->flop_rate / 1e9;
  printf("%7lld %11.1f %11.0f %8.2f %8.1f %6.1f %6s | %9s %9s %9s %9s %9s | %s\n",
         (long long)row->T, row->median_us, row->tokens_per_s, rate, row->byte_rate / 1e9,
         row->experts_hit, roof, st[0], st[1], st[2], st[3], st[4], check);
  if (row->have_stats) {
    const float *s = row->stat_scalars;
    printf("        stats: counts min %lld mean %.1f max %lld | aux %.4f  z %.4f  entropy %.4f  "
           "maxvio %.3f  experts/token %.3f  dropped %lld\n",
           (long long)row->count_min, row->count_mean, (long long)row->count_max,
           s[moeStatAuxLoss], s[moeStatZLoss], s[moeStatEntropy], s[moeStatMaxViolation],
           s[moeStatExpertsPerToken], (long long)row->dropped_total);
  }
  fflush(stdout);
}

/* ---- files -------------------------------------------------------------------------------- */
static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; ++s) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

/* JSON has no NaN / Inf and no "not measured": those become null. */
static void json_num(FILE *f, double v, int unknown_if_negative) {
  if (v != v || v > 1e300 || v < -1e300 || (unknown_if_negative && v < 0)) fputs("null", f);
  else fprintf(f, "%.6g", v);
}

static int write_json(FILE *f, const void *report) {
  const benchReport *rep = report;
  const benchEnv *e = &rep->env;
  int v = moeGetVersion();
  fprintf(f, "{\n  \"tool\": \"moe-bench\",\n  \"libmoe_version\": \"%d.%d.%d\",\n", v / 10000,
          v / 100 % 100, v % 100);
  fputs("  \"commit\": ", f); json_str(f, e->commit);
  fputs(",\n  \"date\": ", f); json_str(f, e->date);
  fputs(",\n  \"host\": ", f); json_str(f, e->host);
  fputs(",\n  \"command\": ", f); json_str(f, e->command);
  fputs(",\n  \"mode\": ", f); json_str(f, e->mode);
  fputs(",\n  \"device\": ", f); json_str(f, e->device);
  fputs(",\n  \"driver\": ", f); json_str(f, e->driver);
  fputs(",\n  \"runtime\": ", f); json_str(f, e->runtime);
  fprintf(f, ",\n  \"threads\": %d,\n  \"ceilings\": {\"copy_bytes_per_s\": ", e->threads);
  json_num(f, e->copy_bw, 1);
  fputs(", \"gemm_flops_per_s\": ", f); json_num(f, e->gemm_rate, 1);
  fprintf(f, ", \"gemm_n\": %d, \"l2_bytes\": ", e->gemm_n); json_num(f, e->l2_bytes, 1);
  fputs(", \"memory_bytes\": ", f); json_num(f, e->mem_bytes, 1);
  fputs("},\n  \"results\": [", f);
  for (int i = 0; i < rep->num_rows; ++i) {
    const benchRow *r = &rep->rows[i];
    fputs(i ? ",\n    {" : "\n    {", f);
    fputs("\"preset\": ", f); json_str(f, r->preset);
    fputs(", \"backend\": ", f); json_str(f, r->backend);
    fputs(", \"dtype\": ", f); json_str(f, r->dtype);
    fputs(", \"routing\": ", f); json_str(f, r->routing);
    fprintf(f, ", \"scale\": %d, \"T\": %lld, \"H\": %lld, \"I\": %lld, \"shared_I\": %lld, \"E\": %d, "
               "\"K\": %d, \"shared\": %d, \"heads\": %d, \"iters\": %d, \"cuda_graph\": %s, "
               "\"input_buffers\": %d,\n     \"median_us\": ",
            r->scale, (long long)r->T, (long long)r->H, (long long)r->I, (long long)r->Is, r->E,
            r->K, r->S, r->heads, r->iters, r->graph ? "true" : "false", r->input_buffers);
    json_num(f, r->median_us, 1);
    fputs(", \"min_us\": ", f); json_num(f, r->min_us, 1);
    fputs(", \"max_us\": ", f); json_num(f, r->max_us, 1);
    fputs(", \"stage_us\": {", f);
    for (int s = 0; s < BENCH_NUM_STAGES; ++s) {
      fprintf(f, "%s\"%s\": ", s ? ", " : "", bench_stage_names[s]);
      json_num(f, r->stage_us[s], 1);
    }
    fputs("},\n     \"tokens_per_s\": ", f); json_num(f, r->tokens_per_s, 1);
    fputs(", \"flops\": ", f); json_num(f, r->flops, 0);
    fputs(", \"min_bytes\": ", f); json_num(f, r->bytes, 0);
    fputs(", \"selections\": ", f); json_num(f, r->selections, 0);
    fputs(", \"experts_hit\": ", f); json_num(f, r->experts_hit, 0);
    fputs(", \"flops_per_s\": ", f); json_num(f, r->flop_rate, 1);
    fputs(", \"bytes_per_s\": ", f); json_num(f, r->byte_rate, 1);
    fputs(", \"roofline_floor_us\": ", f); json_num(f, r->floor_us, 1);
    fputs(", \"roofline_fraction\": ", f); json_num(f, r->roofline_frac, 1);
    fputs(",\n     \"check\": ", f);
    if (r->checked == 1) {
      fprintf(f, "{\"result\": \"%s\", \"rel_frobenius\": ", r->pass ? "PASS" : "FAIL");
      json_num(f, r->rel_err, 0);
      fprintf(f, ", \"tolerance\": %.1e, \"tokens\": %d}", r->tol, r->check_tokens);
    } else if (r->checked == -1) {
      fputs("{\"result\": \"skipped\", \"note\": ", f);
      json_str(f, r->check_note);
      fputc('}', f);
    } else {
      fputs("null", f);
    }
    if (r->have_stats) {
      const float *s = r->stat_scalars;
      fprintf(f, ",\n     \"stats\": {\"count_min\": %lld, \"count_mean\": %.6g, \"count_max\": %lld, "
                 "\"dropped\": %lld, \"aux_loss\": ",
              (long long)r->count_min, r->count_mean, (long long)r->count_max, (long long)r->dropped_total);
      json_num(f, s[moeStatAuxLoss], 0);
      fputs(", \"z_loss\": ", f); json_num(f, s[moeStatZLoss], 0);
      fputs(", \"entropy\": ", f); json_num(f, s[moeStatEntropy], 0);
      fputs(", \"max_violation\": ", f); json_num(f, s[moeStatMaxViolation], 0);
      fputs(", \"experts_per_token\": ", f); json_num(f, s[moeStatExpertsPerToken], 0);
      fputc('}', f);
    }
    fputc('}', f);
  }
  fputs("\n  ]\n}\n", f);
  return ferror(f) ? -1 : 0;
}

static void csv_num(FILE *f, double v) {
  if (v != v || v < 0) fputs(",", f);
  else fprintf(f, ",%.6g", v);
}

static int write_csv(FILE *f, const void *report) {
  const benchReport *rep = report;
  const benchEnv *e = &rep->env;
  char device[sizeof e->device];
  snprintf(device, sizeof device, "%s", e->device);
  for (char *c = device; *c; ++c)
    if (*c == ',' || *c == '"') *c = ';'; /* keep every field free of separators */
  fputs("commit,device,preset,backend,dtype,routing,scale,T,H,I,E,K,shared,heads,iters,cuda_graph,"
        "median_us,min_us,max_us,route_us,permute_us,experts_us,shared_us,combine_us,tokens_per_s,"
        "flops,min_bytes,experts_hit,flops_per_s,bytes_per_s,roofline_floor_us,roofline_fraction,"
        "check,rel_frobenius\n", f);
  for (int i = 0; i < rep->num_rows; ++i) {
    const benchRow *r = &rep->rows[i];
    fprintf(f, "%s,%s,%s,%s,%s,%s,%d,%lld,%lld,%lld,%d,%d,%d,%d,%d,%d", e->commit, device,
            r->preset, r->backend, r->dtype, r->routing, r->scale, (long long)r->T,
            (long long)r->H, (long long)r->I, r->E, r->K, r->S, r->heads, r->iters, r->graph);
    csv_num(f, r->median_us); csv_num(f, r->min_us); csv_num(f, r->max_us);
    for (int s = 0; s < BENCH_NUM_STAGES; ++s) csv_num(f, r->stage_us[s]);
    csv_num(f, r->tokens_per_s); csv_num(f, r->flops); csv_num(f, r->bytes);
    csv_num(f, r->experts_hit); csv_num(f, r->flop_rate); csv_num(f, r->byte_rate);
    csv_num(f, r->floor_us); csv_num(f, r->roofline_frac);
    fprintf(f, ",%s", r->checked == 1 ? (r->pass ? "PASS" : "FAIL") : r->checked == -1 ? "skipped" : "");
    if (r->checked == 1) csv_num(f, r->rel_err); else fputs(",", f);
    fputc('\n', f);
  }
  return ferror(f) ? -1 : 0;
}

static void write_files(benchReport *rep, int final) {
  bench_output_write(&rep->json, write_json, rep, final);
  bench_output_write(&rep->csv, write_csv, rep, final);
}

int bench_report_finish_files(benchReport *rep) {
  write_files(rep, 1);
  const int bad_json = bench_output_close(&rep->json) != 0;
  const int bad_csv = bench_output_close(&rep->csv) != 0;
  return bad_json || bad_csv ? 1 : 0;
}
