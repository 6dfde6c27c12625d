/* safetensors reader: see safetensors.h for the format and the checks. */
#define _POSIX_C_SOURCE 200809L /* strdup, O_CLOEXEC, mmap */
#include "io/safetensors.h"

#ifdef MOE_WITH_CJSON

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"

typedef struct {
  const char *name;
  int bits; /* element size in bits */
  int supported;
  moeDtype_t dtype;
} st_dtype_info;

/* Every dtype of the safetensors specification; only the first three are loadable today. */
static const st_dtype_info g_dtypes[] = {
    {"F32", 32, 1, moeFloat32},   {"F16", 16, 1, moeFloat16},   {"BF16", 16, 1, moeBFloat16},
    {"F64", 64, 0, moeFloat32},   {"I64", 64, 0, moeFloat32},   {"U64", 64, 0, moeFloat32},
    {"I32", 32, 0, moeFloat32},   {"U32", 32, 0, moeFloat32},   {"I16", 16, 0, moeFloat32},
    {"U16", 16, 0, moeFloat32},   {"I8", 8, 0, moeFloat32},     {"U8", 8, 0, moeFloat32},
    {"BOOL", 8, 0, moeFloat32},   {"F8_E4M3", 8, 0, moeFloat32}, {"F8_E5M2", 8, 0, moeFloat32},
    {"F8_E8M0", 8, 0, moeFloat32}, {"F6_E2M3", 6, 0, moeFloat32}, {"F6_E3M2", 6, 0, moeFloat32},
    {"F4", 4, 0, moeFloat32},
};

static const st_dtype_info *find_dtype(const char *name) {
  for (size_t i = 0; i < sizeof g_dtypes / sizeof g_dtypes[0]; ++i)
    if (strcmp(g_dtypes[i].name, name) == 0) return &g_dtypes[i];
  return NULL;
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static int json_u64(const cJSON *item, uint64_t *out) {
  if (!cJSON_IsNumber(item)) return 0;
  double v = item->valuedouble;
  if (!(v >= 0.0) || v > 9007199254740992.0 /* 2^53 */ || v != (double)(uint64_t)v) return 0;
  *out = (uint64_t)v;
  return 1;
}

static int cmp_by_name(const void *a, const void *b) {
  return strcmp(((const moe_st_tensor *)a)->name, ((const moe_st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b) {
  const moe_st_tensor *x = *(const moe_st_tensor *const *)a, *y = *(const moe_st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

void moe_st_close(moe_st_file *file) {
  if (!file) return;
  for (size_t i = 0; i < file->count; ++i) free(file->tensors[i].name);
  free(file->tensors);
  if (file->map) munmap(file->map, file->map_size);
  free(file->path);
  free(file);
}

/* Fills t from one header entry. Returns moeSuccess or moeErrorFormat. */
static moeStatus_t parse_entry(const moe_st_file *f, const cJSON *entry, moe_st_tensor *t) {
  const char *p = f->path, *n = t->name;
  if (!cJSON_IsObject(entry))
    return moe_error(moeErrorFormat, "%s: tensor '%s': header entry is not a JSON object", p, n);
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
  const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
  if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets))
    return moe_error(moeErrorFormat,
                     "%s: tensor '%s': needs \"dtype\" (string), \"shape\" and \"data_offsets\" "
                     "(arrays)", p, n);
  const st_dtype_info *info = find_dtype(dtype->valuestring);
  if (!info)
    return moe_error(moeErrorFormat, "%s: tensor '%s': unknown dtype \"%.32s\"", p, n,
                     dtype->valuestring);
  snprintf(t->dtype_name, sizeof t->dtype_name, "%s", info->name);
  t->supported = info->supported;
  t->dtype = info->dtype;

  int ndim = cJSON_GetArraySize(shape);
  if (ndim > MOE_ST_MAX_DIMS)
    return moe_error(moeErrorFormat, "%s: tensor '%s': %d dimensions (at most %d supported)", p,
                     n, ndim, MOE_ST_MAX_DIMS);
  t->ndim = ndim;
  uint64_t numel = 1;
  int overflow = 0, zero = 0, d = 0;
  const cJSON *dim;
  cJSON_ArrayForEach(dim, shape) {
    uint64_t v;
    if (!json_u64(dim, &v) || v > (uint64_t)INT64_MAX)
      return moe_error(moeErrorFormat,
                       "%s: tensor '%s': shape[%d] is not a non-negative integer", p, n, d);
    t->shape[d++] = (int64_t)v;
    if (v == 0) zero = 1;
    else if (numel > UINT64_MAX / v) overflow = 1;
    numel *= v;
  }
  if (zero) { /* a zero dimension makes the product 0 whatever came before */
    overflow = 0;
    numel = 0;
  }
  if (overflow)
    return moe_error(moeErrorFormat, "%s: tensor '%s': the element count overflows 64 bits",
                     p, n);
  t->numel = numel;

  uint64_t b = 0, e = 0;
  if (cJSON_GetArraySize(offsets) != 2 || !json_u64(cJSON_GetArrayItem(offsets, 0), &b) ||
      !json_u64(cJSON_GetArrayItem(offsets, 1), &e))
    return moe_error(moeErrorFormat,
                     "%s: tensor '%s': data_offsets must be two non-negative integers", p, n);
  if (b > e || e > f->data_size)
    return moe_error(moeErrorFormat,
                     "%s: tensor '%s': data_offsets [%llu, %llu] out of range: need begin <= "
                     "end <= %llu (size of the data section)", p, n, (unsigned long long)b,
                     (unsigned long long)e, (unsigned long long)f->data_size);
  if (numel > UINT64_MAX / (uint64_t)info->bits)
    return moe_error(moeErrorFormat, "%s: tensor '%s': byte size overflows 64 bits", p, n);
  uint64_t bits = numel * (uint64_t)info->bits;
  if (bits % 8 != 0 || bits / 8 != e - b)
    return moe_error(moeErrorFormat,
                     "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but dtype %s "
                     "and shape of %llu elements need %llu%s", p, n, (unsigned long long)b,
                     (unsigned long long)e, (unsigned long long)(e - b), info->name,
                     (unsigned long long)numel, (unsigned long long)(bits / 8),
                     bits % 8 ? " and a half" : "");
  t->begin = b;
  t->end = e;
  t->data = f->data + b;
  return moeSuccess;
}

/* Sorts by name (for moe_st_find), then rejects duplicate names and overlapping extents. */
static moeStatus_t check_layout(moe_st_file *f) {
  qsort(f->tensors, f->count, sizeof *f->tensors, cmp_by_name);
  for (size_t i = 1; i < f->count; ++i)
    if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
      return moe_error(moeErrorFormat, "%s: tensor '%s' appears twice in the header", f->path,
                       f->tensors[i].name);
  if (f->count < 2) return moeSuccess;
  const moe_st_tensor **order = malloc(f->count * sizeof *order);
  if (!order) return moe_error(moeErrorOutOfMemory, "%s: out of memory", f->path);
  size_t m = 0;
  for (size_t i = 0; i < f->count; ++i)
    if (f->tensors[i].end > f->tensors[i].begin) order[m++] = &f->tensors[i]; /* empty: no bytes */
  qsort(order, m, sizeof *order, cmp_by_offset);
  moeStatus_t st = moeSuccess;
  for (size_t i = 1; i < m && st == moeSuccess; ++i) {
    const moe_st_tensor *a = order[i - 1], *b = order[i];
    if (b->begin < a->end)
      st = moe_error(moeErrorFormat,
                     "%s: tensor '%s' at [%llu, %llu] overlaps tensor '%s' at [%llu, %llu]",
                     f->path, b->name, (unsigned long long)b->begin,
                     (unsigned long long)b->end, a->name, (unsigned long long)a->begin,
                     (unsigned long long)a->end);
  }
  free(order);
  return st;
}

static moeStatus_t parse_header(moe_st_file *f, const char *text, size_t len) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    size_t at = end && end >= text ? (size_t)(end - text) : 0;
    return moe_error(moeErrorFormat, "%s: header is not valid JSON (error near byte %zu of %zu)",
                     f->path, at, len);
  }
  moeStatus_t st = moeSuccess;
  for (const char *c = end; c < text + len; ++c)
    if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
      st = moe_error(moeErrorFormat, "%s: header has bytes after its JSON object (byte %zu)",
                     f->path, (size_t)(c - text));
      break;
    }
  if (st == moeSuccess && !cJSON_IsObject(root))
    st = moe_error(moeErrorFormat, "%s: header is JSON but not an object", f->path);
  if (st != moeSuccess) {
    cJSON_Delete(root);
    return st;
  }
  size_t n = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, root) n += strcmp(item->string, "__metadata__") != 0;
  f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
  if (!f->tensors) {
    cJSON_Delete(root);
    return moe_error(moeErrorOutOfMemory, "%s: out of memory for %zu tensors", f->path, n);
  }
  cJSON_ArrayForEach(item, root) {
    if (strcmp(item->string, "__metadata__") == 0) continue; /* free-form strings: skipped */
    moe_st_tensor *t = &f->tensors[f->count];
    t->name = strdup(item->string);
    if (!t->name) {
      st = moe_error(moeErrorOutOfMemory, "%s: out of memory", f->path);
      break;
    }
    f->count++;
    st = parse_entry(f, item, t);
    if (st != moeSuccess) break;
  }
  cJSON_Delete(root);
  if (st == moeSuccess) st = check_layout(f);
  return st;
}

moeStatus_t moe_st_parse(const void *buf, size_t size, const char *path, moe_st_file **out) {
  *out = NULL;
  moe_st_file *f = calloc(1, sizeof *f);
  if (!f) return moe_error(moeErrorOutOfMemory, "%s: out of memory", path);
  f->path = strdup(path);
  if (!f->path) {
    free(f);
    return moe_error(moeErrorOutOfMemory, "%s: out of memory", path);
  }
  const uint8_t *bytes = buf;
  moeStatus_t st = moeSuccess;
  uint64_t header_len = 0;
  if (size < 8) {
    st = moe_error(moeErrorFormat, "%s: file of %zu bytes is too short for the 8-byte header "
                   "length (truncated?)", path, size);
  } else {
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | bytes[i];
    if (header_len > size - 8)
      st = moe_error(moeErrorFormat, "%s: header length %llu runs past the end of the file "
                     "(%zu bytes; truncated?)", path, (unsigned long long)header_len, size);
    else if (header_len > MOE_ST_MAX_HEADER_BYTES)
      st = moe_error(moeErrorFormat, "%s: header length %llu exceeds the limit of %u bytes",
                     path, (unsigned long long)header_len, MOE_ST_MAX_HEADER_BYTES);
  }
  if (st == moeSuccess) {
    f->data = bytes + 8 + header_len;
    f->data_size = size - 8 - header_len;
    st = parse_header(f, (const char *)bytes + 8, (size_t)header_len);
  }
  if (st != moeSuccess) {
    moe_st_close(f);
    return st;
  }
  *out = f;
  return moeSuccess;
}

moeStatus_t moe_st_open(const char *path, moe_st_file **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return moe_error(moeErrorIo, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int err = errno;
    close(fd);
    return moe_error(moeErrorIo, "%s: cannot stat: %s", path, strerror(err));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return moe_error(moeErrorIo, "%s: not a regular file", path);
  }
  size_t size = (size_t)sb.st_size;
  void *map = NULL;
  if (size > 0) {
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      int err = errno;
      close(fd);
      return moe_error(moeErrorIo, "%s: cannot mmap %zu bytes: %s", path, size, strerror(err));
    }
  }
  close(fd); /* the mapping stays valid */
  static const uint8_t empty[1] = {0};
  moeStatus_t st = moe_st_parse(map ? map : empty, size, path, out);
  if (st != moeSuccess) {
    if (map) munmap(map, size);
    return st;
  }
  (*out)->map = map;
  (*out)->map_size = size;
  return moeSuccess;
}

const moe_st_tensor *moe_st_find(const moe_st_file *file, const char *name) {
  size_t lo = 0, hi = file->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(file->tensors[mid].name, name);
    if (c == 0) return &file->tensors[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static void format_shape(char *buf, size_t cap, int32_t ndim, const int64_t *shape) {
  size_t used = (size_t)snprintf(buf, cap, "[");
  for (int32_t i = 0; i < ndim && used < cap; ++i)
    used += (size_t)snprintf(buf + used, cap - used, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (used < cap) snprintf(buf + used, cap - used, "]");
}

moeStatus_t moe_st_check(const moe_st_file *file, const moe_st_tensor *t, int32_t ndim,
                         const int64_t *shape) {
  if (!t->supported)
    return moe_error(moeErrorNotSupported, "%s: dtype %s of tensor %s not supported yet "
                     "(loadable: F32, F16, BF16)", file->path, t->dtype_name, t->name);
  int same = t->ndim == ndim;
  for (int32_t i = 0; same && i < ndim; ++i) same = t->shape[i] == shape[i];
  if (!same) {
    char got[256], want[256];
    format_shape(got, sizeof got, t->ndim, t->shape);
    format_shape(want, sizeof want, ndim, shape);
    return moe_error(moeErrorFormat, "%s: tensor %s has shape %s but config.json implies %s",
                     file->path, t->name, got, want);
  }
  return moeSuccess;
}

#else
typedef int moe_io_safetensors_needs_cjson; /* keeps the translation unit non-empty */
#endif /* MOE_WITH_CJSON */
