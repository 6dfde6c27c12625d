/* Storage dtypes on the host: sizes and scalar conversions to and from fp32.
 * bf16 and f16 are stored as uint16_t bit patterns; conversions round to nearest even and keep
 * NaN a NaN, matching the GPU's __float2bfloat16 / __float2half. */
#ifndef MOE_CORE_DTYPE_H
#define MOE_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "moe/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

static inline size_t moe_dtype_size(moeDtype_t dtype) { return dtype == moeFloat32 ? 4 : 2; }

static inline int moe_dtype_valid(moeDtype_t dtype) {
  return dtype == moeFloat32 || dtype == moeFloat16 || dtype == moeBFloat16;
}

static inline const char *moe_dtype_name(moeDtype_t dtype) {
  switch (dtype) {
    case moeFloat32: return "f32";
    case moeFloat16: return "f16";
    case moeBFloat16: return "bf16";
  }
  return "unknown";
}

static inline uint32_t moe_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float moe_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float moe_bf16_to_f32(uint16_t h) { return moe_bits_f32((uint32_t)h << 16); }

static inline uint16_t moe_f32_to_bf16(float f) {
  uint32_t u = moe_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
  return (uint16_t)(u >> 16);
}

static inline float moe_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0x1f) return moe_bits_f32(sign | 0x7f800000u | (mant << 13)); /* inf / nan */
  if (exp == 0) {
    if (mant == 0) return moe_bits_f32(sign);
    /* subnormal: value = mant * 2^-24 */
    float v = (float)mant * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return moe_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline uint16_t moe_f32_to_f16(float f) {
  uint32_t u = moe_f32_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);      /* NaN */
  if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);     /* rounds to >= 65520: inf */
  if (abs < 0x38800000u) {                                       /* below 2^-14: subnormal */
    /* value / 2^-24, rounded to nearest even */
    float v = moe_bits_f32(abs) * 16777216.0f;
    uint32_t m = (uint32_t)v;
    float rem = v - (float)m;
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t exp = (abs >> 23) - 112u, mant = abs & 0x7fffffu;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* carries into exp correctly */
  return (uint16_t)(sign | h);
}

/* Element i of a buffer of the given dtype, as fp32. */
static inline float moe_load_f32(const void *p, moeDtype_t dtype, size_t i) {
  switch (dtype) {
    case moeFloat16: return moe_f16_to_f32(((const uint16_t *)p)[i]);
    case moeBFloat16: return moe_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
  }
}

/* Stores v, rounded to the dtype, as element i. */
static inline void moe_store_f32(void *p, moeDtype_t dtype, size_t i, float v) {
  switch (dtype) {
    case moeFloat16: ((uint16_t *)p)[i] = moe_f32_to_f16(v); break;
    case moeBFloat16: ((uint16_t *)p)[i] = moe_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
  }
}

/* Converts n elements between dtypes (host memory). */
void moe_convert(void *dst, moeDtype_t dst_dtype, const void *src, moeDtype_t src_dtype,
                 size_t n);

/* Converts n elements of src to fp32 (host memory). */
void moe_to_f32(float *dst, const void *src, moeDtype_t src_dtype, size_t n);

#ifdef __cplusplus
}
#endif
#endif
