/* moe-bench: command line parsing (--help is in help.c). */
#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "presets.h"

/* ---- the option table ----------------------------------------------------------------------- */
typedef enum { ARG_NONE, ARG_INT, ARG_INT_LIST, ARG_NUMBER, ARG_TEXT } argKind;

typedef struct {
  benchOptionId id;
  const char *name, *short_name; /* short_name may be NULL */
  argKind arg;
  int64_t min, max;              /* ARG_INT, and each item of ARG_INT_LIST: [min, max] */
  double above, upto;            /* ARG_NUMBER: (above, upto] */
  const char *what;              /* ARG_NUMBER: its unit; ARG_TEXT: the accepted values */
} optionSpec;

/* Indexed by benchOptionId. The ranges are the whole truth: the messages are made from them. */
#define FLAG(id, name, short_name) [id] = {id, name, short_name, ARG_NONE, 0, 0, 0, 0, NULL}
#define INT(id, name, short_name, lo, hi) [id] = {id, name, short_name, ARG_INT, lo, hi, 0, 0, NULL}
#define NUMBER(id, name, above, upto, unit) \
  [id] = {id, name, NULL, ARG_NUMBER, 0, 0, above, upto, unit}
#define TEXT(id, name, short_name, what) [id] = {id, name, short_name, ARG_TEXT, 0, 0, 0, 0, what}

static const optionSpec kOptions[BENCH_OPT_COUNT] = {
    FLAG(BENCH_OPT_HELP, "--help", "-h"),
    FLAG(BENCH_OPT_VERSION, "--version", "-V"),
    FLAG(BENCH_OPT_LIST, "--list", "-l"),
    FLAG(BENCH_OPT_ROOFLINE, "--roofline", NULL),
    FLAG(BENCH_OPT_MARKDOWN, "--markdown", NULL),
    NUMBER(BENCH_OPT_PEAK_BW, "--peak-bw", 0.0, 1e9, "GB/s"),
    NUMBER(BENCH_OPT_PEAK_TFLOPS, "--peak-tflops", 0.0, 1e9, "TFLOP/s"),
    TEXT(BENCH_OPT_PRESET, "--preset", "-p", NULL),
    INT(BENCH_OPT_SCALE, "--scale", "-s", 1, 4096),
    [BENCH_OPT_TOKENS] = {BENCH_OPT_TOKENS, "--tokens", "-t", ARG_INT_LIST, 1, (int64_t)1 << 24, 0, 0, NULL},
    FLAG(BENCH_OPT_SWEEP, "--sweep", NULL),
    TEXT(BENCH_OPT_DTYPE, "--dtype", "-d", "f32, f16 or bf16"),
    TEXT(BENCH_OPT_CHECKPOINT, "--checkpoint", NULL, NULL),
    INT(BENCH_OPT_LAYER, "--layer", NULL, 0, 1 << 20),
    TEXT(BENCH_OPT_BACKEND, "--backend", "-b", "auto, cpu or cuda"),
    INT(BENCH_OPT_ITERS, "--iters", "-n", 1, 1000000),
    NUMBER(BENCH_OPT_MAX_TIME, "--max-time", 0.0, 3600.0, "seconds"),
    INT(BENCH_OPT_WARMUP, "--warmup", "-w", 0, 1000000),
    INT(BENCH_OPT_SEED, "--seed", NULL, 0, INT64_MAX),
    INT(BENCH_OPT_THREADS, "--threads", NULL, 0, 4096),
    FLAG(BENCH_OPT_NO_STAGES, "--no-stages", NULL),
    FLAG(BENCH_OPT_CHECK, "--check", "-c"),
    FLAG(BENCH_OPT_NO_CHECK, "--no-check", NULL),
    INT(BENCH_OPT_CHECK_TOKENS, "--check-tokens", NULL, 1, 1 << 20),
    FLAG(BENCH_OPT_STATS, "--stats", NULL),
    TEXT(BENCH_OPT_ROUTING, "--routing", NULL, NULL), /* the families: bench_routing_name */
    NUMBER(BENCH_OPT_TOP_P, "--top-p", 0.0, 1.0, NULL),
    INT(BENCH_OPT_K_MAX, "--k-max", NULL, 1, 4096),
    NUMBER(BENCH_OPT_CAPACITY, "--capacity-factor", 0.0, 1e6, NULL),
    TEXT(BENCH_OPT_DROP_POLICY, "--drop-policy", NULL, "position or probs"),
    NUMBER(BENCH_OPT_EXPERT_CHOICE, "--expert-choice", 0.0, 1e6, NULL),
    INT(BENCH_OPT_HEADS, "--heads", NULL, 1, 1 << 20),
    FLAG(BENCH_OPT_DENSE, "--dense", NULL),
    INT(BENCH_OPT_EP, "--ep", NULL, 1, 1 << 20),
    TEXT(BENCH_OPT_JSON, "--json", NULL, NULL),
    TEXT(BENCH_OPT_CSV, "--csv", NULL, NULL),
    TEXT(BENCH_OPT_TUNE, "--tune", NULL, NULL),
    FLAG(BENCH_OPT_QUIET, "--quiet", "-q"),
};

#undef FLAG
#undef INT
#undef NUMBER
#undef TEXT

/* What each mode takes besides --help and --version (always answered). */
#define BIT BENCH_OPT_BIT
static const uint64_t kListOptions = BIT(BENCH_OPT_LIST) | BIT(BENCH_OPT_QUIET) | BIT(BENCH_OPT_JSON);
static const uint64_t kRooflineOptions = BIT(BENCH_OPT_ROOFLINE) | BIT(BENCH_OPT_MARKDOWN) |
                                         BIT(BENCH_OPT_PEAK_BW) | BIT(BENCH_OPT_PEAK_TFLOPS);
static const uint64_t kEpOptions = BIT(BENCH_OPT_EP) | BIT(BENCH_OPT_PRESET) |
                                   BIT(BENCH_OPT_SCALE) | BIT(BENCH_OPT_TOKENS) |
                                   BIT(BENCH_OPT_DTYPE) | BIT(BENCH_OPT_ITERS) |
                                   BIT(BENCH_OPT_WARMUP) | BIT(BENCH_OPT_BACKEND) |
                                   BIT(BENCH_OPT_SEED);
static const uint64_t kAlwaysAnswered = BIT(BENCH_OPT_HELP) | BIT(BENCH_OPT_VERSION);

/* Where messages go: stderr, or nowhere on the MPI ranks other than 0. */
static FILE *g_err;

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int usage_error(const char *fmt, ...) {
  if (!g_err) return 2;
  va_list ap;
  va_start(ap, fmt);
  fputs("moe-bench: ", g_err);
  vfprintf(g_err, fmt, ap);
  va_end(ap);
  fputs("\nTry 'moe-bench --help'.\n", g_err);
  return 2;
}

static const optionSpec *find_option(const char *name) {
  for (int i = 0; i < BENCH_OPT_COUNT; ++i)
    if ((kOptions[i].name && strcmp(name, kOptions[i].name) == 0) ||
        (kOptions[i].short_name && strcmp(name, kOptions[i].short_name) == 0))
      return &kOptions[i];
  return NULL;
}

/* "an integer in [1, 4096]", "a number of seconds in (0, 3600]", "f32, f16 or bf16". */
static const char *describe_values(const optionSpec *s, char *buf, size_t len) {
  switch (s->arg) {
    case ARG_INT:
      snprintf(buf, len, "an integer in [%lld, %lld]", (long long)s->min, (long long)s->max);
      break;
    case ARG_INT_LIST:
      snprintf(buf, len, "comma-separated integers in [%lld, %lld]", (long long)s->min,
               (long long)s->max);
      break;
    case ARG_NUMBER:
      snprintf(buf, len, "a number%s%s in (%g, %g]", s->what ? " of " : "", s->what ? s->what : "",
               s->above, s->upto);
      break;
    default:
      if (s->id == BENCH_OPT_ROUTING) {
        size_t at = (size_t)snprintf(buf, len, "one of");
        for (int i = 0; i < moeRoutingCount && at < len; ++i)
          at += (size_t)snprintf(buf + at, len - at, "%s %s", i ? "," : "",
                                 bench_routing_name((moeRouting_t)i));
      } else {
        snprintf(buf, len, "%s", s->what ? s->what : "a non-empty value");
      }
  }
  return buf;
}

static int bad_value(const char *typed, const char *val, const optionSpec *s) {
  char what[256];
  return usage_error("invalid value '%s' for %s: %s", val, typed, describe_values(s, what, sizeof what));
}

/* A whole decimal integer in [lo, hi]: no sign, space or suffix that strtoll would let by. */
static int parse_integer(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  if (!(*s >= '0' && *s <= '9') && !(*s == '-' && s[1] >= '0' && s[1] <= '9')) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_number(const char *s, double above, double upto, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v <= above || v > upto) return -1;
  *out = v;
  return 0;
}

/* --tokens: every item a count in range, none empty ("1,,2" and "1," are mistakes, not 1,2 and
 * 1), none twice. */
static int parse_token_list(const char *typed, const char *val, const optionSpec *s,
                            benchOptions *o) {
  char what[128];
  describe_values(s, what, sizeof what);
  o->num_tokens = 0;
  for (const char *item = val;;) {
    const char *comma = strchr(item, ',');
    const size_t n = comma ? (size_t)(comma - item) : strlen(item);
    char buf[32];
    if (n == 0) return usage_error("empty item in %s %s (%s)", typed, val, what);
    if (n >= sizeof buf) return usage_error("invalid token count '%.*s...' in %s (%s)", 20, item, typed, what);
    memcpy(buf, item, n);
    buf[n] = '\0';
    int64_t t;
    if (parse_integer(buf, 0, 0, &t) == 0)
      return usage_error("token count 0 in %s %s: T = 0 is a valid forward (it returns at once) "
                         "but has nothing to measure; %s", typed, val, what);
    if (parse_integer(buf, s->min, s->max, &t))
      return usage_error("invalid token count '%s' in %s %s (%s)", buf, typed, val, what);
    for (int i = 0; i < o->num_tokens; ++i)
      if (o->tokens[i] == t) return usage_error("token count %lld twice in %s %s", (long long)t, typed, val);
    if (o->num_tokens >= BENCH_MAX_TOKENS)
      return usage_error("more than %d token counts in %s", BENCH_MAX_TOKENS, typed);
    o->tokens[o->num_tokens++] = t;
    if (!comma) return 0;
    item = comma + 1;
  }
}

/* Each preset once: a repeated one would only run the same thing twice. */
static int add_preset(benchOptions *o, const benchPreset *p, int with_all) {
  for (int i = 0; i < o->num_presets; ++i)
    if (o->presets[i] == p->name)
      return usage_error("preset %s given twice%s: each preset runs once", p->name,
                         with_all ? " ('all' is every preset)" : "");
  if (o->num_presets >= (int)(sizeof o->presets / sizeof o->presets[0]))
    return usage_error("too many presets");
  o->presets[o->num_presets++] = p->name;
  return 0;
}

/* --routing, --top-p, --expert-choice and --dense each choose the routing family, so only one
 * of them may (a repeated --routing replaces its own value, as any option does). */
static int choose_routing(benchOptions *o, int family, const optionSpec *s, const optionSpec **by) {
  if (o->routing >= 0 && o->routing != family && *by && (*by)->id != s->id)
    return usage_error("%s conflicts with %s: each chooses the routing (%s vs %s)", s->name,
                       (*by)->name, bench_routing_name((moeRouting_t)family),
                       bench_routing_name((moeRouting_t)o->routing));
  o->routing = family;
  *by = s;
  return 0;
}

/* The first option of `mask` on the command line (in table order), or -1. */
static int first_given(const benchOptions *o, uint64_t mask) {
  for (int id = 0; id < BENCH_OPT_COUNT; ++id)
    if (o->given & mask & BIT(id)) return id;
  return -1;
}

/* Refuses the first given option outside `allowed`, naming what the mode does take. */
static int only_options(const benchOptions *o, uint64_t allowed, const char *mode) {
  const int id = first_given(o, ~allowed & ~kAlwaysAnswered);
  if (id < 0) return 0;
  char takes[512];
  size_t at = 0;
  for (int i = 0; i < BENCH_OPT_COUNT && at < sizeof takes; ++i)
    if (allowed & BIT(i))
      at += (size_t)snprintf(takes + at, sizeof takes - at, "%s%s%s%s", at ? ", " : "",
                             kOptions[i].short_name ? kOptions[i].short_name : "",
                             kOptions[i].short_name ? "/" : "", kOptions[i].name);
  return usage_error("%s does not apply to %s, which takes only %s", kOptions[id].name, mode, takes);
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

/* Splits "--name=value"; returns the option of argv[*i] (NULL if unknown) and its value, taking
 * the next argument when the option needs one and had no "=". */
static const optionSpec *next_option(int argc, char **argv, int *i, char *name, size_t name_len,
                                     const char **val) {
  const char *arg = argv[*i];
  const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
  *val = NULL;
  if (eq) {
    const size_t n = (size_t)(eq - arg) < name_len - 1 ? (size_t)(eq - arg) : name_len - 1;
    memcpy(name, arg, n);
    name[n] = '\0';
    *val = eq + 1;
  } else {
    snprintf(name, name_len, "%s", arg);
  }
  const optionSpec *s = find_option(name);
  if (s && s->arg != ARG_NONE && !*val && *i + 1 < argc) *val = argv[++*i];
  return s;
}

int bench_options_want_ep(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    char name[48];
    const char *val;
    const optionSpec *s = next_option(argc, argv, &i, name, sizeof name, &val);
    if (s && s->id == BENCH_OPT_EP) return 1;
  }
  return 0;
}

static int check_combinations(benchOptions *o);

int bench_parse_options(int argc, char **argv, benchOptions *o, FILE *err) {
  g_err = err;
  const optionSpec *routing_by = NULL;
  int seen_all = 0; /* --preset all given */
  for (int i = 1; i < argc; ++i) {
    char name[48];
    const char *val, *arg = argv[i];
    const int had_eq = strncmp(arg, "--", 2) == 0 && strchr(arg, '=') != NULL;
    const optionSpec *s = next_option(argc, argv, &i, name, sizeof name, &val);
    if (!s) {
      if (name[0] == '-' && name[1]) return usage_error("unknown option '%s'", name);
      return usage_error("unexpected argument '%s'", name);
    }
    if (s->arg == ARG_NONE && val) return usage_error("option '%s' takes no value", name);
    if (s->arg != ARG_NONE) {
      if (!val) return usage_error("option '%s' needs a value", name);
      /* "--json --csv x": the value forgotten, not a file named --csv. */
      if (!had_eq && val[0] == '-' && val[1] && find_option(val))
        return usage_error("option '%s' needs a value (got the option '%s')", name, val);
      if (!val[0]) return usage_error("option '%s' needs a non-empty value", name);
    }
    o->given |= BIT(s->id);
    int64_t n = 0;
    double x = 0.0;
    if (s->arg == ARG_INT && parse_integer(val, s->min, s->max, &n)) return bad_value(name, val, s);
    if (s->arg == ARG_NUMBER && parse_number(val, s->above, s->upto, &x)) return bad_value(name, val, s);
    int rc = 0;
    switch (s->id) {
      case BENCH_OPT_HELP: o->help = 1; break;
      case BENCH_OPT_VERSION: o->version = 1; break;
      case BENCH_OPT_LIST: o->list = 1; break;
      case BENCH_OPT_ROOFLINE: o->roofline = 1; break;
      case BENCH_OPT_MARKDOWN: o->markdown = 1; break;
      case BENCH_OPT_PEAK_BW: o->peak_bw = x * 1e9; break;
      case BENCH_OPT_PEAK_TFLOPS: o->peak_flops = x * 1e12; break;
      case BENCH_OPT_PRESET:
        if (strcasecmp(val, "all") == 0) {
          seen_all = 1;
          for (int k = 0; k < bench_preset_count() && !rc; ++k)
            rc = add_preset(o, bench_preset_at(k), seen_all);
        } else {
          const benchPreset *p = bench_preset_find(val);
          if (!p) return usage_error("unknown preset '%s' (see --list)", val);
          rc = add_preset(o, p, seen_all);
        }
        break;
      case BENCH_OPT_SCALE: o->scale = (int)n; break;
      case BENCH_OPT_TOKENS: rc = parse_token_list(name, val, s, o); break;
      case BENCH_OPT_SWEEP: o->sweep = 1; break;
      case BENCH_OPT_DTYPE:
        if (!strcasecmp(val, "f32") || !strcasecmp(val, "fp32") || !strcasecmp(val, "float32")) o->dtype = moeFloat32;
        else if (!strcasecmp(val, "f16") || !strcasecmp(val, "fp16") || !strcasecmp(val, "float16")) o->dtype = moeFloat16;
        else if (!strcasecmp(val, "bf16") || !strcasecmp(val, "bfloat16")) o->dtype = moeBFloat16;
        else return bad_value(name, val, s);
        o->dtype_set = 1;
        break;
      case BENCH_OPT_CHECKPOINT: o->checkpoint = val; break;
      case BENCH_OPT_LAYER: o->ckpt_layer = (int)n; break;
      case BENCH_OPT_BACKEND:
        if (!strcasecmp(val, "auto")) o->backend = moeBackendAuto;
        else if (!strcasecmp(val, "cpu")) o->backend = moeBackendCpu;
        else if (!strcasecmp(val, "cuda") || !strcasecmp(val, "gpu")) o->backend = moeBackendCuda;
        else return bad_value(name, val, s);
        break;
      case BENCH_OPT_ITERS: o->iters = (int)n; break;
      case BENCH_OPT_MAX_TIME: o->max_time = x; break;
      case BENCH_OPT_WARMUP: o->warmup = (int)n, o->warmup_set = 1; break;
      case BENCH_OPT_SEED: o->seed = (uint64_t)n; break;
      case BENCH_OPT_THREADS: o->threads = (int)n; break;
      case BENCH_OPT_NO_STAGES: o->stages = 0; break;
      case BENCH_OPT_CHECK: o->check = 1; break;
      case BENCH_OPT_NO_CHECK: o->check = 0; break;
      case BENCH_OPT_CHECK_TOKENS: o->check_tokens = (int)n; break;
      case BENCH_OPT_STATS: o->stats = 1; break;
      case BENCH_OPT_ROUTING: {
        const int family = bench_routing_parse(val);
        if (family < 0) return bad_value(name, val, s);
        rc = choose_routing(o, family, s, &routing_by);
        break;
      }
      case BENCH_OPT_TOP_P:
        o->top_p = (float)x;
        rc = choose_routing(o, moeRoutingTopP, s, &routing_by);
        break;
      case BENCH_OPT_K_MAX: o->k_max = (int)n; break;
      case BENCH_OPT_CAPACITY: o->capacity_factor = (float)x; break;
      case BENCH_OPT_DROP_POLICY:
        if (!strcasecmp(val, "position")) o->drop_policy = moeDropByPosition;
        else if (!strcasecmp(val, "probs")) o->drop_policy = moeDropByProbs;
        else return bad_value(name, val, s);
        break;
      case BENCH_OPT_EXPERT_CHOICE:
        o->expert_choice = (float)x;
        rc = choose_routing(o, moeRoutingExpertChoice, s, &routing_by);
        break;
      case BENCH_OPT_HEADS: o->heads = (int)n; break;
      case BENCH_OPT_DENSE: rc = choose_routing(o, moeRoutingDense, s, &routing_by); break;
      case BENCH_OPT_EP: o->ep = (int)n; break;
      case BENCH_OPT_JSON: o->json_path = val; break;
      case BENCH_OPT_CSV: o->csv_path = val; break;
      case BENCH_OPT_TUNE: o->tune_path = val; break;
      case BENCH_OPT_QUIET: o->quiet = 1; break;
      case BENCH_OPT_COUNT: break;
    }
    if (rc) return rc;
  }
  return check_combinations(o);
}

#define GIVEN(id) ((o->given & BIT(id)) != 0)

static int check_combinations(benchOptions *o) {
  if (o->help || o->version) return 0; /* answered whatever else the line holds */
  if (o->ep) return 0;                  /* bench_options_finish_ep, after MPI_Init */
  if (o->list) return only_options(o, kListOptions, "--list");
  if (o->roofline) return only_options(o, kRooflineOptions, "--roofline");
  const int roofline_only = first_given(o, kRooflineOptions);
  if (roofline_only >= 0) return usage_error("%s applies to --roofline only", kOptions[roofline_only].name);
  if (o->num_tokens && o->sweep) return usage_error("--tokens and --sweep exclude each other");
  if (GIVEN(BENCH_OPT_LAYER) && !o->checkpoint)
    return usage_error("--layer applies to --checkpoint only");
  /* A family's own option must not be overridden by a later --routing (choose_routing sees
   * only the option that chose last). */
  static const struct { int id; moeRouting_t family; } kFamilyOption[] = {
      {BENCH_OPT_TOP_P, moeRoutingTopP},
      {BENCH_OPT_EXPERT_CHOICE, moeRoutingExpertChoice},
      {BENCH_OPT_DENSE, moeRoutingDense}};
  for (size_t i = 0; i < sizeof kFamilyOption / sizeof kFamilyOption[0]; ++i)
    if (GIVEN(kFamilyOption[i].id) && o->routing != (int)kFamilyOption[i].family)
      return usage_error("%s conflicts with --routing %s: each chooses the routing",
                         kOptions[kFamilyOption[i].id].name,
                         bench_routing_name((moeRouting_t)o->routing));
  if (o->checkpoint && (o->num_presets || o->scale || o->routing >= 0 || o->capacity_factor > 0 ||
                        o->drop_policy >= 0 || o->heads || o->k_max))
    return usage_error("--checkpoint takes the layer as it is: no --preset, --scale or routing "
                       "override");
  if (o->capacity_factor > 0 && o->routing == moeRoutingDense)
    return usage_error("--capacity-factor does not apply to dense gating");
  if (o->capacity_factor > 0 && o->expert_choice > 0)
    return usage_error("--capacity-factor and --expert-choice both set expert choice's C: "
                       "give one");
  /* Output files: distinct, and stdout for one of them at most, which then takes the place of
   * the table there. */
  const char *paths[3] = {o->json_path, o->csv_path, o->tune_path};
  const char *names[3] = {"--json", "--csv", "--tune"};
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b)
      if (paths[a] && paths[b] && strcmp(paths[a], paths[b]) == 0)
        return strcmp(paths[a], "-") == 0
                   ? usage_error("%s - and %s -: stdout ('-') takes one of them at most", names[a], names[b])
                   : usage_error("%s and %s name the same file '%s'", names[a], names[b], paths[a]);
  for (int a = 0; a < 3; ++a)
    if (paths[a] && strcmp(paths[a], "-") == 0) o->quiet = 1;
  return 0;
}

int bench_options_finish_ep(benchOptions *o, FILE *err) {
  g_err = err;
  int rc = only_options(o, kEpOptions, "--ep");
  if (rc) return rc;
  if (GIVEN(BENCH_OPT_BACKEND) && o->backend == moeBackendAuto)
    return usage_error("--ep needs --backend cpu or cuda (no auto: every rank must agree)");
  if (o->backend == moeBackendAuto) o->backend = moeBackendCpu;
  if (o->num_presets > 1) return usage_error("--ep runs one preset, not %d", o->num_presets);
  if (o->num_presets == 0) o->presets[o->num_presets++] = "deepseek-v3";
  if (o->num_tokens > 1) return usage_error("--ep takes one token count (per rank), not a list");
  if (o->num_tokens == 0) o->tokens[o->num_tokens++] = 128;
  if (o->iters == 0) o->iters = 20;
  if (!o->warmup_set) o->warmup = 3;
  if (o->scale == 0) o->scale = o->backend == moeBackendCuda ? 1 : 8;
  return 0;
}

int bench_options_finish_run(benchOptions *o, int gpu) {
  g_err = stderr;
  if (o->check < 0) o->check = gpu ? 0 : 1;
  if (GIVEN(BENCH_OPT_CHECK_TOKENS) && !o->check)
    return usage_error("--check-tokens applies only with --check (off by default on a GPU)");
  if (GIVEN(BENCH_OPT_THREADS) && gpu)
    return usage_error("--threads sets the CPU backend's threads; this run uses the CUDA backend");
  if (o->tune_path && !gpu)
    return usage_error("--tune measures the CUDA backend's kernels: it needs a visible GPU (the "
                       "CPU backend has no kernel choices)");
  return 0;
}
