/* bfloat16 <-> float32 for the project's C kernels (included by each; native.py hashes the
 * headers with the source, so a change here rebuilds them). */
#ifndef AWQ_TTS_BF16_H
#define AWQ_TTS_BF16_H

#include <stdint.h>
#include <string.h>

enum { F32 = 0, BF16 = 1 };

static inline float from_bf16(uint16_t v) {
  uint32_t bits = (uint32_t)v << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* Round-to-nearest-even float32 -> bfloat16 (NaN kept a NaN). */
static inline uint16_t to_bf16(float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

#endif
