/* moe-bench: shared types of the benchmark tool (options, one result row, the run's environment)
 * and small helpers used by every mode. */
#ifndef MOE_BENCH_BENCH_H
#define MOE_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "moe/moe.h"
#include "presets.h"

#define BENCH_MAX_TOKENS 32 /* token counts in one sweep */
#define BENCH_NUM_STAGES 5

enum { BENCH_STAGE_ROUTE, BENCH_STAGE_PERMUTE, BENCH_STAGE_EXPERTS, BENCH_STAGE_SHARED,
       BENCH_STAGE_COMBINE };
extern const char *const bench_stage_names[BENCH_NUM_STAGES];

/* Everything the command line can set (bench/options.c). Negative / zero values mean "the mode's
 * default". */
typedef struct {
  const char *presets[64]; /* --preset (repeatable, each preset once, or "all") */
  int num_presets;
  int scale;               /* --scale N; 0 = auto (CPU: seconds per run; GPU: 1) */
  int64_t tokens[BENCH_MAX_TOKENS];
  int num_tokens;          /* 0 = the mode's default */
  int sweep;               /* --sweep */
  moeDtype_t dtype;
  moeBackend_t backend;
  int iters, warmup;       /* 0 = auto */
  double max_time;         /* auto iterations: seconds of timed runs per T (0 = 2 GPU, 1 CPU) */
  uint64_t seed;
  int threads;
  int check;               /* -1 = the mode's default */
  int check_tokens;        /* tokens compared with the naive reference when T is larger */
  int stages;              /* time the stages one by one (default 1) */
  int stats;               /* --stats */
  const char *json_path, *csv_path; /* "-" = stdout */
  const char *tune_path;   /* --tune FILE: measure the GEMM kernel choices, write the table */
  int quiet;               /* no table on stdout (also implied by a FILE of "-") */
  /* Routing research overrides (ROUTING.md sections 3-6); < 0 / NULL = keep the preset's. */
  int routing;             /* a moeRouting_t or -1: --routing, or the family that --top-p,
                              --expert-choice or --dense stand for */
  float top_p;             /* --top-p THRESH, or < 0 (top-p routing: the library's 0.4) */
  int k_max;               /* --k-max, or 0 = min(E, 2k) */
  float capacity_factor;   /* --capacity-factor, or < 0 */
  int drop_policy;         /* --drop-policy, or -1 */
  float expert_choice;     /* --expert-choice C, or < 0 (expert choice: --capacity-factor, 1) */
  int heads;               /* --heads, or 0 */
  /* A real layer instead of a preset (include/moe/moe_io.h). */
  const char *checkpoint;  /* --checkpoint DIR, or NULL */
  int ckpt_layer;          /* --layer N */
  int dtype_set;           /* --dtype given (a checkpoint otherwise keeps its own dtype) */
  /* Actions and output details. */
  int help, version, list, roofline, markdown, warmup_set;
  double peak_bw, peak_flops; /* --roofline ceilings (B/s, FLOP/s) */
  int ep;                  /* --ep N: the expert-parallel benchmark over N MPI ranks, or 0 */
  uint64_t given;          /* BENCH_OPT_BIT(id) of every option on the command line */
} benchOptions;

/* One measured (preset, T). Times in microseconds; < 0 = not measured. */
typedef struct {
  char preset[48];          /* preset name, or "name/variant" under --tune */
  char backend[8];
  char dtype[8];
  char routing[32];
  int scale;
  int64_t T, H, I, Is;
  int32_t E, K, S, heads;
  int iters;
  int graph;               /* GPU: timed as CUDA graph replays */
  int input_buffers;       /* rotating input buffers */
  double median_us, min_us, max_us;
  double stage_us[BENCH_NUM_STAGES];
  double tokens_per_s;
  double flops;            /* useful FLOPs of one forward */
  double bytes;            /* minimum bytes of one forward */
  double selections;       /* kept (token, expert) pairs */
  double experts_hit;      /* distinct routed experts hit (mean over input buffers) */
  double flop_rate;        /* FLOP/s */
  double byte_rate;        /* B/s of the minimum bytes */
  double floor_us;         /* roofline floor from the measured ceilings; < 0 if none */
  double roofline_frac;    /* floor_us / median_us; < 0 if none */
  /* --check */
  int checked;             /* 0 = not run, 1 = run, -1 = skipped (see check_note) */
  int check_tokens;
  double rel_err, tol;
  int pass;
  char check_note[96];
  /* --stats */
  int have_stats;
  float stat_scalars[moeStatScalarCount];
  int64_t count_min, count_max;
  double count_mean;
  int64_t dropped_total;
} benchRow;

/* The run: where, what, and the ceilings measured in it. */
typedef struct {
  char commit[48];
  char date[32];
  char host[64];
  char device[128];
  char driver[32];
  char runtime[32];
  char mode[8];            /* "cpu" or "cuda" */
  char command[512];       /* the command line */
  int threads;
  double copy_bw;          /* measured device-to-device copy B/s (read + write); < 0 if none */
  double gemm_rate;        /* measured dense bf16 GEMM FLOP/s; < 0 if none */
  int gemm_n;
  double l2_bytes;
  double mem_bytes;
} benchEnv;

/* ---- helpers (common.c) ------------------------------------------------------------------ */
double bench_now_us(void);
double bench_median(double *v, int n); /* sorts v */
/* The token counts of a run: --tokens, else the backend's default list (the sweep on a GPU;
 * on the CPU a short list, or its sweep with --sweep). Returns how many; *t_max the largest. */
int bench_token_counts(const benchOptions *opt, int gpu, const int64_t **tokens, int64_t *t_max);
void bench_sort(double *v, int n);
const char *bench_dtype_name(moeDtype_t dtype);
size_t bench_dtype_size(moeDtype_t dtype);
const char *bench_routing_name(moeRouting_t routing);
int bench_routing_parse(const char *s); /* -1 if unknown */
/* Exits with status 1 after printing the library's message when st != moeSuccess. */
void bench_check_status(moeStatus_t st, const char *what);
void *bench_xmalloc(size_t bytes);
void *bench_xcalloc(size_t n, size_t size);
void bench_fill_env_common(benchEnv *env);

/* fp32 <-> storage bits (round to nearest even, NaN stays NaN). */
uint16_t bench_f32_to_bf16(float f);
float bench_bf16_to_f32(uint16_t h);
uint16_t bench_f32_to_f16(float f);
float bench_f16_to_f32(uint16_t h);
float bench_round_to(float v, moeDtype_t dtype);
void bench_store(void *dst, moeDtype_t dtype, size_t i, float v);
float bench_load(const void *src, moeDtype_t dtype, size_t i);

/* ---- weights and tokens (weights.c) ------------------------------------------------------ */
/* Deterministic random weights: every tensor is a function of (seed, tensor, index) only, so
 * any part can be regenerated without the rest (--check rebuilds only the experts it needs).
 * Matrices are rounded to the storage dtype; vectors (router, biases) stay fp32. */
typedef enum {
  BENCH_T_ROUTER_W,        /* [E, Hr] */
  BENCH_T_ROUTER_B,        /* [E] */
  BENCH_T_SELECTION_BIAS,  /* [E] */
  BENCH_T_GATE_UP,         /* expert index: [GI, Hr] */
  BENCH_T_DOWN,            /* expert index: [Hr, I] */
  BENCH_T_GATE_UP_BIAS,    /* expert index: [GI] */
  BENCH_T_DOWN_BIAS,       /* expert index: [Hr] */
  BENCH_T_SHARED_GATE_UP,  /* shared index: [GIs, H] */
  BENCH_T_SHARED_DOWN,     /* shared index: [H, Is] */
  BENCH_T_HEAD,            /* [H, H] */
  BENCH_T_MERGE,           /* [H, H] */
  BENCH_T_COUNT
} benchTensor;

typedef struct { int64_t H, Hr, I, Is, GI, GIs; int32_t E, S, heads, gated; } benchDims;
void bench_dims(const moeLayerConfig_t *cfg, benchDims *d);
size_t bench_tensor_numel(const benchDims *d, benchTensor t);
/* Generates tensor t (index = expert or shared expert) as fp32 values (f32 may be NULL) and as
 * bytes of the storage dtype (bytes may be NULL; vectors are always written as fp32). */
void bench_gen_tensor(const moeLayerConfig_t *cfg, uint64_t seed, benchTensor t, int32_t index,
                      float *f32, void *bytes);
moeStatus_t bench_upload_weights(moeLayer_t layer, const moeLayerConfig_t *cfg, uint64_t seed,
                                 int router_bias);
/* Tokens x [T, H], uniform in [-1, 1), rounded to the dtype: as fp32 (may be NULL) and as
 * storage bytes (may be NULL). */
void bench_make_tokens(int64_t T, int64_t H, moeDtype_t dtype, uint64_t seed, float *x_f32,
                       void *x_bytes);

/* ---- the modes ---------------------------------------------------------------------------- */
/* Both return 0 on success, 1 when a check failed; they exit(1) on library errors. */
struct benchReport;
int bench_run_cpu(const benchOptions *opt, struct benchReport *rep);
int bench_gpu_available(void);
int bench_run_gpu(const benchOptions *opt, struct benchReport *rep);

/* Builds the layer config of a preset with the command line's overrides applied.
 * Returns 0, or -1 with a message in err. */
int bench_make_config(const benchPreset *p, const benchOptions *opt, int scale,
                      moeLayerConfig_t *cfg, char *err, size_t err_len);
/* Default scale for the CPU mode: expert weights around 32 MB. */
int bench_auto_cpu_scale(const benchPreset *p, moeDtype_t dtype);

/* ---- what is benchmarked: a preset with random weights, or a checkpoint (source.c) ---------- */
struct moeCheckpointWeights_s;
typedef struct {
  char name[32];           /* preset name, or "ckpt-L<N>:<dir basename>" */
  int router_bias;         /* random weights: the router has a bias (gpt-oss) */
  int scale;               /* 1/scale of the preset's widths */
  moeLayerConfig_t cfg;    /* the configuration asked for */
  const char *ckpt_dir;    /* NULL for a preset */
  int ckpt_layer;
  void *ckpt_weights;      /* moeCheckpointWeights_t *, read by the first --check */
} benchSource;

int bench_source_count(const benchOptions *opt);
/* Source i of the run. Returns: 0, or -1 with a message in err. */
int bench_source_open(const benchOptions *opt, int i, int gpu, benchSource *src, char *err,
                      size_t err_len);
/* Creates the layer on ctx and sets its weights (random, or the checkpoint's). */
moeStatus_t bench_source_create_layer(benchSource *src, moeContext_t ctx, const benchOptions *opt,
                                      moeLayer_t *layer);
void bench_source_close(benchSource *src);

/* ---- --check and --stats (reference_check.c) ---------------------------------------------- */
/* Compares y (storage dtype, [T, H]) with the naive double reference on up to max_tokens
 * tokens of x (fp32 values); cfg is the layer's configuration. Fills row->checked, rel_err,
 * tol, pass. */
void bench_reference_check(const moeLayerConfig_t *cfg, benchSource *src, uint64_t seed,
                           int64_t T, const float *x, const void *y, int max_tokens,
                           benchRow *row);
/* Fills the statistics fields of row from host copies of the router statistics. */
void bench_fill_stats(benchRow *row, int32_t E, const int64_t *counts, const int64_t *dropped,
                      const float *scalars);
/* Distinct experts among ids [n] (-1 = none), and the number of ids that are not -1. */
int bench_count_hit(const int32_t *ids, int64_t n, int32_t E, int64_t *selections);

#endif
