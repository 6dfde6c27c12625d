/* A safetensors reader: the file is mmap'ed read-only, its JSON header parsed with cJSON and
 * every tensor's extent checked before any tensor is handed out.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   {"__metadata__": {...}, "name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
 * then the data section; offsets are relative to the data section.
 *
 * Checks (each failure is moeErrorFormat with a message naming the file, and the tensor when
 * there is one): file shorter than 8 bytes; header length past the end of the file or above
 * MOE_ST_MAX_HEADER_BYTES; invalid JSON, or anything but whitespace after it; a tensor entry
 * without a valid dtype / shape / data_offsets; b <= e <= data section size; e - b equal to
 * product(shape) * element size (with overflow checks); no two tensors overlapping; no
 * duplicate names. Dtypes other than F32/F16/BF16 (F8_E4M3, I64, ...) are recognized, their
 * extents checked, and reported as moeErrorNotSupported when a tensor of that dtype is asked
 * for (moe_st_check). */
#ifndef MOE_IO_SAFETENSORS_H
#define MOE_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_ST_MAX_HEADER_BYTES (100u * 1000u * 1000u) /* 100 MB, as the reference reader */
#define MOE_ST_MAX_DIMS 16

typedef struct {
  char *name;              /* owned */
  char dtype_name[16];     /* as written in the header: "BF16", "F8_E4M3", ... */
  int supported;           /* 1 for F32, F16, BF16 (then dtype is valid) */
  moeDtype_t dtype;
  int32_t ndim;
  int64_t shape[MOE_ST_MAX_DIMS];
  uint64_t numel;
  uint64_t begin, end;     /* byte offsets into the data section, checked */
  const uint8_t *data;     /* start of the tensor's bytes (no alignment guarantee) */
} moe_st_tensor;

typedef struct {
  char *path;              /* for messages */
  void *map;               /* mmap'ed file, or NULL when parsed from memory */
  size_t map_size;
  const uint8_t *data;     /* the data section */
  uint64_t data_size;
  moe_st_tensor *tensors;  /* sorted by name */
  size_t count;
} moe_st_file;

/* Parses a safetensors image held in memory (size bytes at buf, which must outlive the result).
 * path only names the file in messages. [out] out: the parsed file; NULL on failure.
 * Returns: moeSuccess, moeErrorFormat, moeErrorOutOfMemory. */
moeStatus_t moe_st_parse(const void *buf, size_t size, const char *path, moe_st_file **out);

/* Opens and maps path read-only, then parses it.
 * Returns: as moe_st_parse, and moeErrorIo when the file cannot be opened, sized or mapped. */
moeStatus_t moe_st_open(const char *path, moe_st_file **out);

/* Unmaps and frees. NULL is a no-op. */
void moe_st_close(moe_st_file *file);

/* Returns: the tensor called name, or NULL. */
const moe_st_tensor *moe_st_find(const moe_st_file *file, const char *name);

/* Checks that a tensor has a supported dtype and the expected shape (ndim dims).
 * Returns: moeSuccess, moeErrorNotSupported ("dtype F8_E4M3 of tensor X not supported yet"),
 *          moeErrorFormat (shape mismatch; the message shows both shapes). */
moeStatus_t moe_st_check(const moe_st_file *file, const moe_st_tensor *t, int32_t ndim,
                         const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif
