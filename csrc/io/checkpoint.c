/* Checkpoint directories: the shard index and lazily opened shards (see checkpoint.h). */
#define _POSIX_C_SOURCE 200809L /* strdup, O_CLOEXEC, mmap */
#include "io/checkpoint.h"

#ifdef MOE_WITH_CJSON

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/status.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define MAX_INDEX_BYTES (256u * 1024u * 1024u)

char *moe_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  int slash = a > 0 && dir[a - 1] != '/';
  char *p = malloc(a + (size_t)slash + b + 1);
  if (!p) return NULL;
  memcpy(p, dir, a);
  if (slash) p[a] = '/';
  memcpy(p + a + slash, name, b + 1);
  return p;
}

moeStatus_t moe_read_text_file(const char *path, size_t max_bytes, char **text, size_t *len) {
  *text = NULL;
  FILE *fp = fopen(path, "rb");
  if (!fp) return moe_error(moeErrorIo, "%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  size_t used = 0, cap = 0;
  moeStatus_t st = moeSuccess;
  for (;;) {
    if (cap - used < 4096) {
      size_t ncap = cap ? cap * 2 : 65536;
      char *nbuf = realloc(buf, ncap + 1);
      if (!nbuf) {
        st = moe_error(moeErrorOutOfMemory, "%s: out of memory", path);
        break;
      }
      buf = nbuf;
      cap = ncap;
    }
    size_t got = fread(buf + used, 1, cap - used, fp);
    used += got;
    if (used > max_bytes) {
      st = moe_error(moeErrorFormat, "%s: larger than %zu bytes", path, max_bytes);
      break;
    }
    if (got == 0) {
      if (ferror(fp)) st = moe_error(moeErrorIo, "%s: read error", path);
      break;
    }
  }
  fclose(fp);
  if (st != moeSuccess) {
    free(buf);
    return st;
  }
  buf[used] = '\0';
  *text = buf;
  if (len) *len = used;
  return moeSuccess;
}

void moe_ckpt_close(moe_ckpt *c) {
  if (!c) return;
  for (size_t i = 0; i < c->num_files; ++i) {
    if (c->opened) moe_st_close(c->opened[i]);
    free(c->files[i]);
  }
  for (size_t i = 0; i < c->map_size; ++i) free(c->map[i].name);
  free(c->map);
  free(c->opened);
  free(c->files);
  free(c->index_path);
  free(c->dir);
  free(c);
}

static int cmp_entry(const void *a, const void *b) {
  return strcmp(((const moe_ckpt_entry *)a)->name, ((const moe_ckpt_entry *)b)->name);
}

/* Shard names stay inside the checkpoint directory: no absolute paths, no ".." component. */
static int safe_relative(const char *name) {
  if (name[0] == '\0' || name[0] == '/') return 0;
  for (const char *p = name; *p;) {
    const char *q = strchr(p, '/');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
    if (!q) break;
    p = q + 1;
  }
  return 1;
}

/* Adds file (if new) and returns its index, or (size_t)-1 when out of memory. */
static size_t intern_file(moe_ckpt *c, const char *file) {
  for (size_t i = c->num_files; i-- > 0;) /* shards are usually listed in runs */
    if (strcmp(c->files[i], file) == 0) return i;
  char **nf = realloc(c->files, (c->num_files + 1) * sizeof *nf);
  if (!nf) return (size_t)-1;
  c->files = nf;
  c->files[c->num_files] = strdup(file);
  if (!c->files[c->num_files]) return (size_t)-1;
  return c->num_files++;
}

static moeStatus_t read_index(moe_ckpt *c) {
  char *text = NULL;
  size_t len = 0;
  MOE_TRY(moe_read_text_file(c->index_path, MAX_INDEX_BYTES, &text, &len));
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  if (!root) return moe_error(moeErrorFormat, "%s: not valid JSON", c->index_path);
  moeStatus_t st = moeSuccess;
  const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
  if (!cJSON_IsObject(wm)) {
    st = moe_error(moeErrorFormat, "%s: no \"weight_map\" object", c->index_path);
  } else {
    size_t n = (size_t)cJSON_GetArraySize(wm);
    c->map = calloc(n ? n : 1, sizeof *c->map);
    if (!c->map) st = moe_error(moeErrorOutOfMemory, "%s: out of memory", c->index_path);
    const cJSON *item;
    cJSON_ArrayForEach(item, wm) {
      if (st != moeSuccess) break;
      if (!cJSON_IsString(item) || !safe_relative(item->valuestring)) {
        st = moe_error(moeErrorFormat, "%s: tensor '%s': the file name must be a relative path "
                       "inside the checkpoint directory", c->index_path, item->string);
        break;
      }
      size_t f = intern_file(c, item->valuestring);
      char *name = f == (size_t)-1 ? NULL : strdup(item->string);
      if (!name) {
        st = moe_error(moeErrorOutOfMemory, "%s: out of memory", c->index_path);
        break;
      }
      c->map[c->map_size].name = name;
      c->map[c->map_size].file = f;
      c->map_size++;
    }
  }
  cJSON_Delete(root);
  if (st != moeSuccess) return st;
  qsort(c->map, c->map_size, sizeof *c->map, cmp_entry);
  for (size_t i = 1; i < c->map_size; ++i)
    if (strcmp(c->map[i - 1].name, c->map[i].name) == 0)
      return moe_error(moeErrorFormat, "%s: tensor '%s' listed twice in weight_map",
                       c->index_path, c->map[i].name);
  return moeSuccess;
}

moeStatus_t moe_ckpt_open(const char *dir, moe_ckpt **out) {
  *out = NULL;
  moe_ckpt *c = calloc(1, sizeof *c);
  if (!c) return moe_error(moeErrorOutOfMemory, "out of memory");
  moeStatus_t st = moeSuccess;
  struct stat sb;
  c->dir = strdup(dir);
  c->index_path = moe_path_join(dir, INDEX_NAME);
  if (!c->dir || !c->index_path) {
    st = moe_error(moeErrorOutOfMemory, "out of memory");
  } else if (stat(c->index_path, &sb) == 0) {
    st = read_index(c);
  } else {
    free(c->index_path);
    c->index_path = moe_path_join(dir, SINGLE_NAME);
    if (!c->index_path) {
      st = moe_error(moeErrorOutOfMemory, "out of memory");
    } else if (stat(c->index_path, &sb) != 0) {
      st = moe_error(moeErrorIo, "%s: neither " INDEX_NAME " nor " SINGLE_NAME " found", dir);
    } else {
      c->single = 1;
      if (intern_file(c, SINGLE_NAME) == (size_t)-1)
        st = moe_error(moeErrorOutOfMemory, "out of memory");
    }
  }
  if (st == moeSuccess) {
    c->opened = calloc(c->num_files ? c->num_files : 1, sizeof *c->opened);
    if (!c->opened) st = moe_error(moeErrorOutOfMemory, "out of memory");
  }
  if (st != moeSuccess) {
    moe_ckpt_close(c);
    return st;
  }
  *out = c;
  return moeSuccess;
}

static moeStatus_t open_file(moe_ckpt *c, size_t f) {
  if (c->opened[f]) return moeSuccess;
  char *path = moe_path_join(c->dir, c->files[f]);
  if (!path) return moe_error(moeErrorOutOfMemory, "out of memory");
  moeStatus_t st = moe_st_open(path, &c->opened[f]);
  free(path);
  return st;
}

/* The file that holds name per the index (or the single file); (size_t)-1 when none. */
static size_t file_of(const moe_ckpt *c, const char *name) {
  if (c->single) return 0;
  moe_ckpt_entry key = {(char *)name, 0};
  const moe_ckpt_entry *e = bsearch(&key, c->map, c->map_size, sizeof *c->map, cmp_entry);
  return e ? e->file : (size_t)-1;
}

int moe_ckpt_has(moe_ckpt *c, const char *name, moeStatus_t *status) {
  *status = moeSuccess;
  size_t f = file_of(c, name);
  if (f == (size_t)-1) return 0;
  if (!c->single) return 1;
  *status = open_file(c, f);
  if (*status != moeSuccess) return -1;
  return moe_st_find(c->opened[f], name) != NULL;
}

moeStatus_t moe_ckpt_get(moe_ckpt *c, const char *name, const moe_st_file **file,
                         const moe_st_tensor **tensor) {
  size_t f = file_of(c, name);
  if (f == (size_t)-1)
    return moe_error(moeErrorFormat, "%s: tensor %s not found", c->index_path, name);
  MOE_TRY(open_file(c, f));
  const moe_st_tensor *t = moe_st_find(c->opened[f], name);
  if (!t)
    return moe_error(moeErrorFormat, "%s: tensor %s not found%s", c->opened[f]->path, name,
                     c->single ? "" : " although " INDEX_NAME " places it there");
  *file = c->opened[f];
  *tensor = t;
  return moeSuccess;
}

#else
typedef int moe_io_checkpoint_needs_cjson; /* keeps the translation unit non-empty */
#endif /* MOE_WITH_CJSON */
