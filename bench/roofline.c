/* moe-bench: minimum bytes, useful FLOPs and roofline floors. */
#include "roofline.h"

#include <math.h>

#include "bench.h"

void bench_work(const moeLayerConfig_t *cfg, int64_t T, double selections, double experts_hit,
                benchWork *w) {
  benchDims d;
  bench_dims(cfg, &d);
  const double es = (double)bench_dtype_size(cfg->dtype);
  const double t = (double)T;
  const double per_sel = 2.0 * (double)d.GI * (double)d.Hr + 2.0 * (double)d.Hr * (double)d.I;
  const double per_shared = 2.0 * (double)d.GIs * (double)d.H + 2.0 * (double)d.H * (double)d.Is;
  w->expert_flops = selections * per_sel;
  w->flops = w->expert_flops + t * d.S * per_shared + 2.0 * t * (double)d.H * d.E;
  if (d.heads > 1) w->flops += 2.0 * 2.0 * t * (double)d.H * (double)d.H;

  double wb = experts_hit * ((double)d.GI * d.Hr + (double)d.Hr * d.I) * es;
  if (cfg->expert_bias) wb += experts_hit * ((double)d.GI + (double)d.Hr) * 4.0;
  wb += d.S * ((double)d.GIs * d.H + (double)d.H * d.Is) * es;
  wb += (double)d.E * d.Hr * 4.0; /* router, fp32 */
  if (d.heads > 1) wb += 2.0 * (double)d.H * d.H * es;
  w->weight_bytes = wb;
  w->act_bytes = 2.0 * t * (double)d.H * es;
  w->bytes = w->weight_bytes + w->act_bytes;
}

double bench_expected_hit(int32_t E, int32_t k, int64_t T) {
  if (E <= 0) return 0.0;
  double miss = 1.0 - (double)k / (double)E;
  return (double)E * (1.0 - pow(miss < 0 ? 0 : miss, (double)T));
}

double bench_floor_us(double flops, double bytes, double bw, double rate) {
  double f = -1.0;
  if (bw > 0) f = bytes / bw * 1e6;
  if (rate > 0 && flops / rate * 1e6 > f) f = flops / rate * 1e6;
  return f;
}

void bench_print_roofline_table(FILE *f, double bw, double rate, int markdown) {
  static const int64_t Ts[3] = {1, 8, 64};
  const char *sep = markdown ? " | " : "  ";
  if (markdown)
    fprintf(f, "| preset | min MB T=1 | floor us | min MB T=8 | floor us | min MB T=64 | floor us "
               "| GFLOP T=4096 | floor us | bound |\n|---|---|---|---|---|---|---|---|---|---|\n");
  else
    fprintf(f, "%-16s  %10s  %8s  %10s  %8s  %11s  %8s  %12s  %8s  %s\n", "preset", "MB T=1", "us",
            "MB T=8", "us", "MB T=64", "us", "GFLOP T=4096", "us", "bound@4096");
  for (int i = 0; i < bench_preset_count(); ++i) {
    const benchPreset *p = bench_preset_at(i);
    moeLayerConfig_t cfg = MOE_LAYER_CONFIG_INIT;
    bench_preset_config(p, 1, moeBFloat16, &cfg);
    fprintf(f, markdown ? "| %s" : "%-16s", p->name);
    for (int j = 0; j < 3; ++j) {
      benchWork w;
      double hit = bench_expected_hit(p->num_experts, p->top_k, Ts[j]);
      bench_work(&cfg, Ts[j], (double)Ts[j] * p->top_k, hit, &w);
      fprintf(f, markdown ? "%s%.1f%s%.1f" : "%s%10.1f%s%8.1f", sep, w.bytes / 1e6, sep,
              bench_floor_us(w.flops, w.bytes, bw, rate));
    }
    benchWork w;
    const int64_t T = 4096;
    bench_work(&cfg, T, (double)T * p->top_k, bench_expected_hit(p->num_experts, p->top_k, T), &w);
    double fb = w.bytes / bw * 1e6, ff = w.flops / rate * 1e6;
    fprintf(f, markdown ? "%s%.0f%s%.1f%s%s |\n" : "%s%12.0f%s%8.1f%s%s\n", sep, w.flops / 1e9, sep,
            fb > ff ? fb : ff, sep, fb > ff ? "memory" : "compute");
  }
}
