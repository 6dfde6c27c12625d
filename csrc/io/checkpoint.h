/* A Hugging Face checkpoint directory: config.json plus either one model.safetensors or shards
 * listed by model.safetensors.index.json ({"weight_map": {tensor: file}}). Shards are opened
 * lazily, the first time one of their tensors is asked for, and each at most once; a shard
 * holding no tensor that is asked for is never opened (expert parallelism relies on this). */
#ifndef MOE_IO_CHECKPOINT_H
#define MOE_IO_CHECKPOINT_H

#include <stddef.h>

#include "io/safetensors.h"
#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  char *name;
  size_t file; /* index into moe_ckpt.files */
} moe_ckpt_entry;

typedef struct {
  char *dir;
  char *index_path;        /* the index file, or the single model.safetensors */
  char **files;            /* shard names relative to dir */
  size_t num_files;
  moe_st_file **opened;    /* [num_files], NULL until first use */
  moe_ckpt_entry *map;     /* sorted by name; empty for a single-file checkpoint */
  size_t map_size;
  int single;              /* 1: model.safetensors without an index */
} moe_ckpt;

/* Opens a checkpoint directory: reads the index if there is one (no shard is opened).
 * Returns: moeSuccess, moeErrorIo (neither model.safetensors.index.json nor model.safetensors),
 *          moeErrorFormat (a malformed index), moeErrorOutOfMemory. */
moeStatus_t moe_ckpt_open(const char *dir, moe_ckpt **out);

/* Closes every opened shard and frees. NULL is a no-op. */
void moe_ckpt_close(moe_ckpt *ckpt);

/* Whether a tensor exists. For a single file this opens it (once). Returns 1, 0, or -1 with
 * the error recorded when the file that would hold it cannot be opened. */
int moe_ckpt_has(moe_ckpt *ckpt, const char *name, moeStatus_t *status);

/* Finds a tensor, opening its shard on first use.
 * [out] file, tensor  valid until moe_ckpt_close.
 * Returns: moeSuccess, moeErrorFormat ("tensor X not found in <index>", or the shard does not
 *          hold the tensor its index promised), and the errors of moe_st_open. */
moeStatus_t moe_ckpt_get(moe_ckpt *ckpt, const char *name, const moe_st_file **file,
                         const moe_st_tensor **tensor);

/* Reads a whole small file (config.json, the index) into a NUL-terminated buffer.
 * Returns: moeSuccess, moeErrorIo, moeErrorFormat (larger than max_bytes), OutOfMemory. */
moeStatus_t moe_read_text_file(const char *path, size_t max_bytes, char **text, size_t *len);

/* Joins dir and name with one '/'. Returns NULL when out of memory. */
char *moe_path_join(const char *dir, const char *name);

#ifdef __cplusplus
}
#endif
#endif
