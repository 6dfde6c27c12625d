/* moe-bench: command line entry, layer configuration from presets and overrides, dispatch to
 * the CPU or the CUDA mode. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_ep.h"
#include "options.h"
#include "output.h"
#include "report.h"
#include "roofline.h"

int bench_auto_cpu_scale(const benchPreset *p, moeDtype_t dtype) {
  /* Routed + shared expert weights of about 32 MB: a forward of a few hundred tokens then
   * takes milliseconds to a few hundred of them on one core. */
  const double target = 32e6;
  double bytes = 3.0 * (double)p->hidden * (double)p->intermediate * p->num_experts +
                 3.0 * (double)p->hidden * (double)p->shared_intermediate * p->num_shared;
  bytes *= (double)bench_dtype_size(dtype);
  int scale = (int)ceil(sqrt(bytes / target));
  return scale < 1 ? 1 : scale;
}

int bench_make_config(const benchPreset *p, const benchOptions *opt, int scale,
                      moeLayerConfig_t *cfg, char *err, size_t err_len) {
  bench_preset_config(p, scale, opt->dtype, cfg);
  const size_t at = (size_t)snprintf(err, err_len, "%s: ", p->name);
  if (at < err_len) err += at, err_len -= at;
  /* opt->routing is the family of --routing, --top-p, --expert-choice or --dense alike
   * (options.c), so each family has one path here whichever way it was asked for. */
  if (opt->routing >= 0) {
    cfg->routing = (moeRouting_t)opt->routing;
    if (cfg->routing != moeRoutingSigmoidGroupTopK && cfg->routing != moeRoutingSoftmaxGroupTopK)
      cfg->n_group = cfg->topk_group = 1;
    if (cfg->routing == moeRoutingSigmoidTop1InputScale) cfg->top_k = 1;
    if (cfg->routing == moeRoutingTopP) {
      if (opt->top_p > 0) cfg->top_p_threshold = opt->top_p; /* else the library's default */
      if (opt->k_max > cfg->num_experts) {
        snprintf(err, err_len, "--k-max %d exceeds the %d experts", opt->k_max, cfg->num_experts);
        return -1;
      }
      const int k_max = opt->k_max > 0 ? opt->k_max : 2 * cfg->top_k;
      cfg->top_k = k_max < cfg->num_experts ? k_max : cfg->num_experts;
    }
    if (cfg->routing == moeRoutingExpertChoice)
      cfg->capacity_factor = opt->expert_choice > 0     ? opt->expert_choice
                             : opt->capacity_factor > 0 ? opt->capacity_factor
                                                        : 1.0f;
  }
  if (opt->capacity_factor > 0) cfg->capacity_factor = opt->capacity_factor;
  if (opt->drop_policy >= 0) cfg->drop_policy = (moeDropPolicy_t)opt->drop_policy;
  /* A flag that would change nothing is a mistake in the command line, not a no-op. */
  if (opt->k_max > 0 && cfg->routing != moeRoutingTopP) {
    snprintf(err, err_len, "--k-max applies to top-p routing only (--top-p or --routing top-p)");
    return -1;
  }
  const int token_choice = cfg->routing != moeRoutingExpertChoice && cfg->routing != moeRoutingDense;
  if (opt->drop_policy >= 0 && !(token_choice && cfg->capacity_factor > 0)) {
    snprintf(err, err_len, "--drop-policy applies only with --capacity-factor and token-choice "
                           "routing");
    return -1;
  }
  if (opt->heads > 0) {
    if (cfg->hidden % opt->heads != 0) {
      snprintf(err, err_len, "--heads %d does not divide H = %lld (at scale 1/%d)", opt->heads,
               (long long)cfg->hidden, scale);
      return -1;
    }
    cfg->num_heads = opt->heads;
  }
  moeStatus_t st = moeLayerConfigValidate(cfg);
  if (st != moeSuccess) {
    snprintf(err, err_len, "invalid layer configuration: %s", moeGetLastErrorMessage());
    return -1;
  }
  return 0;
}

static int write_presets_json(FILE *f, const void *unused) {
  (void)unused;
  bench_preset_write_json(f);
  return ferror(f) ? -1 : 0;
}

/* --list: the table, the names (--quiet) or JSON (--json FILE, "-" = stdout). */
static int list_presets(const benchOptions *opt) {
  if (opt->json_path) return bench_output_write_once(opt->json_path, write_presets_json, NULL);
  if (opt->quiet) { /* names only, one per line, for scripts */
    for (int i = 0; i < bench_preset_count(); ++i) printf("%s\n", bench_preset_at(i)->name);
    return 0;
  }
  bench_preset_print_table();
  return 0;
}

int main(int argc, char **argv) {
  /* --ep N: MPI starts before the options are parsed, so that only rank 0 reports bad usage;
   * the options and their table are the same (options.c). */
  if (bench_options_want_ep(argc, argv)) return moe_bench_ep_run(argc, argv);

  benchOptions opt;
  bench_options_defaults(&opt);
  int rc = bench_parse_options(argc, argv, &opt, stderr);
  if (rc) return rc;
  if (opt.help) {
    bench_print_help(stdout);
    return 0;
  }
  if (opt.version) {
    int v = moeGetVersion();
    printf("moe-bench (libmoe %d.%d.%d)\n", v / 10000, v / 100 % 100, v % 100);
    return 0;
  }
  if (opt.list) return list_presets(&opt);
  if (opt.roofline) {
    printf("Roofline floors at full size, bf16, expected distinct experts hit under uniform "
           "routing;\nceilings: %.0f GB/s, %.0f TFLOP/s\n\n", opt.peak_bw / 1e9, opt.peak_flops / 1e12);
    bench_print_roofline_table(stdout, opt.peak_bw, opt.peak_flops, opt.markdown);
    return 0;
  }
  if (opt.num_presets == 0 && !opt.checkpoint) opt.presets[opt.num_presets++] = "mixtral-8x7b";

  /* The backend: auto = CUDA when this build has it and a GPU is visible. */
  int gpu = 0;
  if (opt.backend == moeBackendCuda) {
    if (!bench_gpu_available()) {
#ifdef MOE_WITH_CUDA
      fprintf(stderr, "moe-bench: --backend cuda: no CUDA device is visible\n");
#else
      fprintf(stderr, "moe-bench: --backend cuda: this build has no CUDA backend "
                      "(configure with -DMOE_WITH_CUDA=ON)\n");
#endif
      return 1;
    }
    gpu = 1;
  } else if (opt.backend == moeBackendAuto) {
    gpu = bench_gpu_available();
  }
  if ((rc = bench_options_finish_run(&opt, gpu)) != 0) return rc;

  /* Validate every configuration and output file before any work, so that a bad combination
   * or path fails at once, not after the whole run. */
  for (int i = 0; i < bench_source_count(&opt); ++i) {
    benchSource src;
    char err[320];
    if (bench_source_open(&opt, i, gpu, &src, err, sizeof err) != 0) {
      fprintf(stderr, "moe-bench: %s\n", err);
      return 2;
    }
    bench_source_close(&src);
  }
  if (bench_output_probe(opt.tune_path) != 0) return 2; /* written at the end only */
  benchReport rep;
  bench_report_init(&rep, &opt);
  if (bench_report_open_files(&rep) != 0) return 2;

  size_t used = 0;
  for (int i = 0; i < argc && used < sizeof rep.env.command; ++i)
    used += (size_t)snprintf(rep.env.command + used, sizeof rep.env.command - used, "%s%s",
                             i ? " " : "", argv[i]);
  rc = gpu ? bench_run_gpu(&opt, &rep) : bench_run_cpu(&opt, &rep);
  if (bench_report_finish_files(&rep)) rc = rc ? rc : 1;
  if (opt.check && !opt.quiet) {
    int checked = 0;
    for (int i = 0; i < rep.num_rows; ++i) checked += rep.rows[i].checked == 1;
    printf("\ncheck: %d of %d runs compared with the naive reference, %d failed\n", checked,
           rep.num_rows, rep.failures);
  }
  bench_report_free(&rep);
  return rc;
}
