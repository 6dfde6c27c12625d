#include "core/dtype.h"

void moe_to_f32(float *dst, const void *src, moeDtype_t src_dtype, size_t n) {
  if (src_dtype == moeFloat32) {
    memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (size_t i = 0; i < n; ++i) dst[i] = moe_load_f32(src, src_dtype, i);
}

void moe_convert(void *dst, moeDtype_t dst_dtype, const void *src, moeDtype_t src_dtype,
                 size_t n) {
  if (dst_dtype == src_dtype) {
    memcpy(dst, src, n * moe_dtype_size(dst_dtype));
    return;
  }
  for (size_t i = 0; i < n; ++i) moe_store_f32(dst, dst_dtype, i, moe_load_f32(src, src_dtype, i));
}
