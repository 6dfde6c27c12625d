/* Writes a tiny Mixtral-style Hugging Face checkpoint (config.json + model.safetensors, bf16,
 * 2 layers, H 64, I 96, E 8, k 2) into a directory, for the moe-bench --checkpoint smoke test.
 *   tiny_checkpoint DIR */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { H = 64, I = 96, E = 8, K = 2, L = 2 };

static uint64_t state = 0x9e3779b97f4a7c15ull;
static float uniform(float a) {
  state ^= state << 13, state ^= state >> 7, state ^= state << 17;
  return a * (float)((double)(state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static uint16_t bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

typedef struct { char name[96]; int rows, cols; float amp; } tensor;

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: tiny_checkpoint DIR\n");
    return 2;
  }
  if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "tiny_checkpoint: cannot create %s\n", argv[1]);
    return 1;
  }
  enum { N = L * (1 + 3 * E) };
  static tensor t[N];
  int n = 0;
  for (int l = 0; l < L; ++l) {
    snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.block_sparse_moe.gate.weight", l);
    t[n].rows = E, t[n].cols = H, t[n++].amp = 6.0f / sqrtf((float)H);
    for (int j = 0; j < E; ++j) {
      static const char *w[3] = {"w1", "w3", "w2"};
      for (int m = 0; m < 3; ++m) {
        snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, j, w[m]);
        t[n].rows = m < 2 ? I : H, t[n].cols = m < 2 ? H : I;
        t[n++].amp = m < 2 ? 3.0f / sqrtf((float)H) : 1.7f / sqrtf((float)I);
      }
    }
  }
  /* Header: {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [a, b]}, ...} */
  size_t cap = 64 + (size_t)N * 192, len = 0, off = 0;
  char *hdr = malloc(cap);
  len += (size_t)snprintf(hdr + len, cap - len, "{");
  for (int i = 0; i < n; ++i) {
    size_t bytes = (size_t)t[i].rows * t[i].cols * 2;
    len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%d,%d],"
                            "\"data_offsets\":[%zu,%zu]}", i ? "," : "", t[i].name, t[i].rows,
                            t[i].cols, off, off + bytes);
    off += bytes;
  }
  len += (size_t)snprintf(hdr + len, cap - len, "}");
  while (len % 8) hdr[len++] = ' ';

  char path[4096];
  snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "tiny_checkpoint: cannot write %s\n", path);
    return 1;
  }
  uint64_t hlen = len;
  fwrite(&hlen, 8, 1, f); /* little-endian hosts */
  fwrite(hdr, 1, len, f);
  for (int i = 0; i < n; ++i)
    for (int e = 0; e < t[i].rows * t[i].cols; ++e) {
      uint16_t v = bf16(uniform(t[i].amp));
      fwrite(&v, 2, 1, f);
    }
  fclose(f);
  free(hdr);
  snprintf(path, sizeof path, "%s/config.json", argv[1]);
  f = fopen(path, "w");
  if (!f) return 1;
  fprintf(f, "{\"model_type\": \"mixtral\", \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_local_experts\": %d, \"num_experts_per_tok\": %d, \"num_hidden_layers\": %d, "
             "\"hidden_act\": \"silu\", \"torch_dtype\": \"bfloat16\"}\n", H, I, E, K, L);
  fclose(f);
  return 0;
}
