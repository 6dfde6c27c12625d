/* moe-bench: command line parsing and --help. */
#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "presets.h"

void bench_print_help(FILE *f) {
  fputs(
      "Usage: moe-bench [OPTIONS]\n"
      "\n"
      "Benchmarks one sparse Mixture-of-Experts layer of libmoe on the CPU or CUDA backend, with\n"
      "the shapes of published models (--list), and optionally checks the output against the naive\n"
      "double-precision reference. Weights are random (seeded), uploaded through the public API.\n"
      "\n"
      "Without options: on a machine with a GPU, the full token sweep of mixtral-8x7b at full size;\n"
      "on a CPU-only machine, mixtral-8x7b scaled down to run in seconds, with --check.\n"
      "\n"
      "Model and shape:\n"
      "  -p, --preset NAME       a preset of --list (repeatable; 'all' = every preset)\n"
      "                          [mixtral-8x7b]\n"
      "  -l, --list              print the presets (docs/ROUTING.md section 9) and exit;\n"
      "                          with --quiet, their names only; with --json FILE, as JSON\n"
      "                          (full-size widths; FILE '-' = stdout)\n"
      "  -s, --scale N           divide H, I and the shared width by N (rounded to multiples of\n"
      "                          8; E and k kept) [GPU: 1; CPU: automatic, ~32 MB of experts]\n"
      "  -t, --tokens T[,T...]   token counts T to run [GPU: the sweep; CPU: 1,32,128]\n"
      "      --sweep             T = 1,8,32,64,128,256,1024,4096,16384 (GPU) or\n"
      "                          1,8,32,64,128,256 (CPU)\n"
      "  -d, --dtype TYPE        f32 | f16 | bf16 storage of weights and activations [bf16]\n"
      "\n"
      "      --checkpoint DIR    a real layer instead of a preset: MoE layer --layer of a\n"
      "                          Hugging Face checkpoint directory (config.json +\n"
      "                          safetensors; include/moe/moe_io.h); its own dtype unless\n"
      "                          --dtype; --check reads its weights in fp32 (all experts)\n"
      "      --layer N           the layer of --checkpoint [0]\n"
      "\n"
      "Execution:\n"
      "  -b, --backend NAME      auto | cpu | cuda; auto = cuda when a GPU is visible [auto]\n"
      "  -n, --iters N           timed iterations, median reported [automatic: --max-time of\n"
      "                          replays per T, 10..200 on a GPU, 3..100 on the CPU]\n"
      "      --max-time S        seconds of timed iterations per T that set the automatic\n"
      "                          --iters [GPU: 2; CPU: 1]\n"
      "  -w, --warmup N          untimed iterations first [GPU: 10; CPU: 1]\n"
      "      --seed N            seed of weights and tokens [1234]\n"
      "      --threads N         CPU backend threads, 0 = OpenMP's default [0]\n"
      "      --no-stages         do not time the stages (route, permute, experts, shared,\n"
      "                          combine) one by one [timed]\n"
      "\n"
      "Checking and statistics:\n"
      "  -c, --check             compare y with the naive double reference; prints the relative\n"
      "                          Frobenius error and PASS/FAIL (tolerance: f32 1e-5, f16/bf16\n"
      "                          1e-2); exit status 1 on FAIL [on for CPU, off for GPU]\n"
      "      --no-check          do not\n"
      "      --check-tokens N    tokens compared when T is larger (evenly spaced) [64]\n"
      "      --stats             print router statistics per T: selections per expert\n"
      "                          (min/mean/max), aux loss, z-loss, entropy, MaxVio,\n"
      "                          experts/token, dropped selections\n"
      "\n"
      "Routing research modes (docs/ROUTING.md sections 3-6; override the preset's routing):\n"
      "      --routing FAMILY    topk-softmax | softmax-topk | sigmoid-group-topk |\n"
      "                          softmax-group-topk | sigmoid-top1-input-scale | top-p |\n"
      "                          expert-choice | dense [the preset's]\n"
      "      --top-p THRESH      top-p dynamic routing with threshold in (0, 1]\n"
      "      --k-max N           cap of experts per token for top-p [min(E, 2k)]\n"
      "      --capacity-factor F token-choice capacity per expert C = ceil(T*k/E * F), F > 0\n"
      "                          [dropless]\n"
      "      --drop-policy P     position | probs: which selections an expert keeps [position]\n"
      "      --expert-choice C   expert-choice routing: each expert takes its floor(T*C/E) best\n"
      "                          tokens (uses the whole batch: not causal)\n"
      "      --heads h           multi-head MoE with h sub-tokens per token (h divides H) [1]\n"
      "      --dense             dense gating: every expert on every token\n"
      "\n"
      "Expert parallelism (MPI; NCCL with --backend cuda), a mode of its own:\n"
      "      --ep N              the expert-parallel benchmark over N ranks, launched as\n"
      "                          mpirun -np N moe-bench --ep N [--preset P] [--scale S]\n"
      "                          [--tokens T per rank] [--dtype bf16|f32] [--iters I]\n"
      "                          [--warmup W] [--backend cpu|cuda] [--seed S]; no other\n"
      "                          option applies. Prints per-rank stage times, bytes moved and\n"
      "                          bandwidths, and a cost-model projection to 8, 16, 64 GPUs\n"
      "\n"
      "Output:\n"
      "      --json FILE         write every result and the environment as JSON\n"
      "      --csv FILE          write one CSV row per (preset, T)\n"
      "      --tune FILE         GPU: time each T with every expert-GEMM kernel choice (rows\n"
      "                          'preset/tiled', 'preset/skinny') and write the fastest per\n"
      "                          shape to FILE, a table for moeContextLoadTuning or\n"
      "                          MOE_TUNING_FILE (format: csrc/core/tuning.h)\n"
      "  -q, --quiet             no table on stdout (use with --json / --csv)\n"
      "      --roofline          print the roofline floors of every preset at full size (bf16)\n"
      "                          for --peak-bw / --peak-tflops, and exit\n"
      "      --peak-bw GB/s      memory bandwidth for --roofline [3350, H100 SXM datasheet]\n"
      "      --peak-tflops T     dense bf16 rate for --roofline [989, H100 SXM datasheet]\n"
      "      --markdown          --roofline as a Markdown table\n"
      "  -h, --help              this help;  -V, --version  the version and exit\n"
      "\n"
      "Columns: median us per forward; tokens/s; GFLOP/s (CPU) or TFLOP/s (GPU) of useful FLOPs\n"
      "(2*3*H*I per kept selection for gated experts, shared experts, router 2*H*E); GB/s of the\n"
      "minimum bytes (weights of the distinct experts hit + router + shared + x and y); hit =\n"
      "distinct experts hit; %roof = roofline floor max(bytes/copy_bw, flops/gemm_rate) over the\n"
      "measured time, with both ceilings measured in the same run (GPU only); stage medians in us.\n"
      "\n"
      "Exit status: 0 success, 1 a --check failed or a library call failed, 2 bad usage.\n"
      "\n"
      "Examples:\n"
      "  moe-bench                                     default run (see above)\n"
      "  moe-bench --list\n"
      "  moe-bench -p qwen3-30b-a3b -t 1,64 --check   two token counts, checked\n"
      "  moe-bench -p deepseek-v3 --scale 8 --stats   scaled-down DeepSeek-V3 with router stats\n"
      "  moe-bench -p all --sweep --json out.json     every preset, every T (GPU: full size)\n"
      "  moe-bench -p olmoe-1b-7b --top-p 0.4 --k-max 16 --stats\n"
      "  moe-bench -p mixtral-8x7b --capacity-factor 1.25 --drop-policy probs --stats\n"
      "  moe-bench --checkpoint ~/models/OLMoE-1B-7B-0924 --layer 3 -t 1,64 --check\n"
      "  moe-bench --roofline --markdown\n"
      "  mpirun -np 4 moe-bench --ep 4 --preset deepseek-v3 --scale 16 --tokens 64\n",
      f);
}

static int usage_error(const char *fmt, const char *a, const char *b) {
  fputs("moe-bench: ", stderr);
  fprintf(stderr, fmt, a, b);
  fputs("\nTry 'moe-bench --help'.\n", stderr);
  return 2;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
  int64_t v;
  if (parse_i64(s, lo, hi, &v)) return -1;
  *out = (int)v;
  return 0;
}

static int parse_float(const char *s, double lo, double hi, int lo_open, float *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < lo || (lo_open && v == lo) || v > hi) return -1;
  *out = (float)v;
  return 0;
}

void bench_options_defaults(benchOptions *o) {
  memset(o, 0, sizeof *o);
  o->dtype = moeBFloat16;
  o->backend = moeBackendAuto;
  o->seed = 1234;
  o->check = -1;
  o->check_tokens = 64;
  o->stages = 1;
  o->routing = -1;
  o->top_p = -1.0f;
  o->capacity_factor = -1.0f;
  o->drop_policy = -1;
  o->expert_choice = -1.0f;
  o->peak_bw = 3.35e12;
  o->peak_flops = 989e12;
}

/* Options that take a value; the rest are flags. */
static const char *const kWithValue[] = {
    "--preset", "-p", "--scale", "-s", "--tokens", "-t", "--dtype", "-d", "--backend", "-b",
    "--iters", "-n", "--warmup", "-w", "--seed", "--threads", "--check-tokens", "--json", "--csv",
    "--tune",
    "--routing", "--top-p", "--k-max", "--capacity-factor", "--drop-policy", "--expert-choice",
    "--heads", "--peak-bw", "--peak-tflops", "--max-time", "--checkpoint", "--layer", NULL};

static int takes_value(const char *name) {
  for (int i = 0; kWithValue[i]; ++i)
    if (strcmp(name, kWithValue[i]) == 0) return 1;
  return 0;
}

int bench_parse_options(int argc, char **argv, benchOptions *o) {
  for (int i = 1; i < argc; ++i) {
    char name[48];
    const char *arg = argv[i], *val = NULL;
    const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
    if (eq) {
      size_t n = (size_t)(eq - arg) < sizeof name - 1 ? (size_t)(eq - arg) : sizeof name - 1;
      memcpy(name, arg, n);
      name[n] = '\0';
      val = eq + 1;
    } else {
      snprintf(name, sizeof name, "%s", arg);
    }
    if (takes_value(name)) {
      if (!val) {
        if (i + 1 >= argc) return usage_error("option '%s' needs a value%s", name, "");
        val = argv[++i];
      }
    } else if (val) {
      return usage_error("option '%s' takes no value%s", name, "");
    }
#define IS(a) (strcmp(name, a) == 0)
#define BAD(what) return usage_error("invalid value '%s' for %s", val, what)
    if (IS("-h") || IS("--help")) o->help = 1;
    else if (IS("-V") || IS("--version")) o->version = 1;
    else if (IS("-l") || IS("--list")) o->list = 1;
    else if (IS("--roofline")) o->roofline = 1;
    else if (IS("--markdown")) o->markdown = 1;
    else if (IS("--sweep")) o->sweep = 1;
    else if (IS("-c") || IS("--check")) o->check = 1;
    else if (IS("--no-check")) o->check = 0;
    else if (IS("--no-stages")) o->stages = 0;
    else if (IS("--stats")) o->stats = 1;
    else if (IS("--dense")) o->dense = 1;
    else if (IS("-q") || IS("--quiet")) o->quiet = 1;
    else if (IS("-p") || IS("--preset")) {
      if (strcasecmp(val, "all") == 0) {
        for (int k = 0; k < bench_preset_count() && o->num_presets < 64; ++k)
          o->presets[o->num_presets++] = bench_preset_at(k)->name;
      } else {
        const benchPreset *p = bench_preset_find(val);
        if (!p) return usage_error("unknown preset '%s'%s (see --list)", val, "");
        if (o->num_presets >= 64) return usage_error("too many presets%s%s", "", "");
        o->presets[o->num_presets++] = p->name;
      }
    } else if (IS("-s") || IS("--scale")) {
      if (parse_int(val, 1, 4096, &o->scale)) BAD("--scale (an integer >= 1)");
    } else if (IS("-t") || IS("--tokens")) {
      char buf[512];
      if (strlen(val) >= sizeof buf) /* snprintf would cut the last number short, silently */
        return usage_error("--tokens %.40s...: the list is longer than %s characters", val, "511");
      snprintf(buf, sizeof buf, "%s", val);
      o->num_tokens = 0;
      for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (o->num_tokens >= BENCH_MAX_TOKENS) return usage_error("at most 32 token counts%s%s", "", "");
        if (parse_i64(tok, 1, (int64_t)1 << 24, &o->tokens[o->num_tokens]))
          return usage_error("invalid token count '%s' in --tokens %s (integers in [1, 16777216], "
                             "comma-separated)", tok, val);
        o->num_tokens++;
      }
      if (o->num_tokens == 0) BAD("--tokens");
    } else if (IS("-d") || IS("--dtype")) {
      if (!strcasecmp(val, "f32") || !strcasecmp(val, "fp32") || !strcasecmp(val, "float32")) o->dtype = moeFloat32;
      else if (!strcasecmp(val, "f16") || !strcasecmp(val, "fp16") || !strcasecmp(val, "float16")) o->dtype = moeFloat16;
      else if (!strcasecmp(val, "bf16") || !strcasecmp(val, "bfloat16")) o->dtype = moeBFloat16;
      else BAD("--dtype (f32, f16 or bf16)");
      o->dtype_set = 1;
    } else if (IS("-b") || IS("--backend")) {
      if (!strcasecmp(val, "auto")) o->backend = moeBackendAuto;
      else if (!strcasecmp(val, "cpu")) o->backend = moeBackendCpu;
      else if (!strcasecmp(val, "cuda") || !strcasecmp(val, "gpu")) o->backend = moeBackendCuda;
      else BAD("--backend (auto, cpu or cuda)");
    } else if (IS("-n") || IS("--iters")) {
      if (parse_int(val, 1, 1000000, &o->iters)) BAD("--iters (an integer >= 1)");
    } else if (IS("-w") || IS("--warmup")) {
      if (parse_int(val, 0, 1000000, &o->warmup)) BAD("--warmup (an integer >= 0)");
      o->warmup_set = 1;
    } else if (IS("--checkpoint")) {
      o->checkpoint = val;
    } else if (IS("--layer")) {
      if (parse_int(val, 0, 1 << 20, &o->ckpt_layer)) BAD("--layer (a layer index >= 0)");
    } else if (IS("--max-time")) {
      float v;
      if (parse_float(val, 0.0, 3600.0, 1, &v)) BAD("--max-time (seconds > 0)");
      o->max_time = v;
    } else if (IS("--seed")) {
      int64_t v;
      if (parse_i64(val, 0, INT64_MAX, &v)) BAD("--seed (an integer >= 0)");
      o->seed = (uint64_t)v;
    } else if (IS("--threads")) {
      if (parse_int(val, 0, 4096, &o->threads)) BAD("--threads (an integer >= 0)");
    } else if (IS("--check-tokens")) {
      if (parse_int(val, 1, 1 << 20, &o->check_tokens)) BAD("--check-tokens (an integer >= 1)");
    } else if (IS("--json")) o->json_path = val;
    else if (IS("--tune")) o->tune_path = val;
    else if (IS("--csv")) o->csv_path = val;
    else if (IS("--routing")) {
      o->routing = bench_routing_parse(val);
      if (o->routing < 0) BAD("--routing (see --help for the families)");
    } else if (IS("--top-p")) {
      if (parse_float(val, 0.0, 1.0, 1, &o->top_p)) BAD("--top-p (a threshold in (0, 1])");
    } else if (IS("--k-max")) {
      if (parse_int(val, 1, 4096, &o->k_max)) BAD("--k-max (an integer in [1, E])");
    } else if (IS("--capacity-factor")) {
      if (parse_float(val, 0.0, 1e6, 1, &o->capacity_factor)) BAD("--capacity-factor (a number > 0)");
    } else if (IS("--drop-policy")) {
      if (!strcasecmp(val, "position")) o->drop_policy = moeDropByPosition;
      else if (!strcasecmp(val, "probs")) o->drop_policy = moeDropByProbs;
      else BAD("--drop-policy (position or probs)");
    } else if (IS("--expert-choice")) {
      if (parse_float(val, 0.0, 1e6, 1, &o->expert_choice)) BAD("--expert-choice (a capacity factor > 0)");
    } else if (IS("--heads")) {
      if (parse_int(val, 1, 1 << 20, &o->heads)) BAD("--heads (an integer >= 1)");
    } else if (IS("--peak-bw")) {
      float v;
      if (parse_float(val, 0.0, 1e9, 1, &v)) BAD("--peak-bw (GB/s > 0)");
      o->peak_bw = v * 1e9;
    } else if (IS("--peak-tflops")) {
      float v;
      if (parse_float(val, 0.0, 1e9, 1, &v)) BAD("--peak-tflops (TFLOP/s > 0)");
      o->peak_flops = v * 1e12;
    } else if (name[0] == '-') {
      return usage_error("unknown option '%s'%s", name, "");
    } else {
      return usage_error("unexpected argument '%s'%s", name, "");
    }
#undef IS
#undef BAD
  }
  /* Combinations. */
  int modes = (o->top_p > 0) + (o->expert_choice > 0) + o->dense;
  if (modes > 1) return usage_error("--top-p, --expert-choice and --dense exclude each other%s%s", "", "");
  if (modes && o->routing >= 0)
    return usage_error("--routing cannot be combined with --top-p, --expert-choice or --dense%s%s", "", "");
  if (o->capacity_factor > 0 && (o->expert_choice > 0 || o->dense))
    return usage_error("--capacity-factor applies to token-choice routing only%s%s", "", "");
  if (o->num_tokens && o->sweep) return usage_error("--tokens and --sweep exclude each other%s%s", "", "");
  if (o->checkpoint && (o->num_presets || o->scale || modes || o->routing >= 0 ||
                        o->capacity_factor > 0 || o->drop_policy >= 0 || o->heads || o->k_max))
    return usage_error("--checkpoint takes the layer as it is: no --preset, --scale or routing "
                       "override%s%s", "", "");
  return 0;
}
