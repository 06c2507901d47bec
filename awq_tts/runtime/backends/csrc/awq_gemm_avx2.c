/* AWQ INT4 matmul for x86 CPUs with AVX2: integer dot products, weights streamed as nibbles.
 *
 * Plain C with OpenMP, no torch headers: it compiles in about a second, and torch's
 * tensors reach it as pointers (awq_tts/runtime/backends/avx2.py, through ctypes).
 *
 * Activations are quantized per row and per group of G inputs to int16 with the scale
 * max|x| / 32767 (error at most 2^-16 of the group's largest input, far below the bf16
 * rounding the talker's activations already carry). Each group's dot product is then
 * exact in int32, and the AWQ zero point is applied in integers:
 *   out[n] += s[g, n] * xscale[g] * (sum_k xq[k] q[n, k] - zp[g, n] * sum_k xq[k]).
 *
 * Layout (prepared by avx2.py): output columns in blocks of 32, each block in chunks of 8
 * inputs, each chunk as 4 sub-blocks of 8 columns x 16 uint16 lanes. Lane 2i + p of
 * sub-block c holds q[col, k0 + 2j + p] << 4j for j = 0..3, with col = 32 b + 8 c + i. So
 * (lane >> 4j) & 0xF gives, in 16-bit lanes, the pairs (q[col, k0 + 2j], q[col, k0 + 2j + 1])
 * that _mm256_madd_epi16 multiplies with a broadcast pair of activations: 64 multiply-adds
 * from one 32-byte load, six ALU ops and four madds. Each thread streams its blocks front
 * to back and prefetches 1 KiB ahead (a talker step's 0.7 GB of weights comes from DRAM:
 * 20% faster than the hardware prefetcher alone).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

#define BLOCK 32
#define CHUNK 8
#define AHEAD 1024

static inline float load_x(const void *x, int dtype, int64_t i) {
  return dtype == F32 ? ((const float *)x)[i] : from_bf16(((const uint16_t *)x)[i]);
}

/* int16 codes, scale and code sum of group i (G inputs) of the flattened rows of x. A group
 * holding an infinity or a NaN gets a NaN scale, so it poisons its row's outputs the way a
 * float matmul would, instead of becoming finite garbage. */
static void quantize_group(const void *x, int dtype, int64_t i, int64_t G, int16_t *xq,
                           float *xscale, int32_t *xqsum) {
  float top = 0.f;
  int finite = 1;
  for (int64_t k = 0; k < G; ++k) {
    const float v = load_x(x, dtype, i * G + k);
    finite &= isfinite(v) != 0;
    top = fmaxf(top, fabsf(v));
  }
  const float inv = finite && top > 0.f ? 32767.f / top : 0.f;
  int32_t sum = 0;
  for (int64_t k = 0; k < G; ++k) {
    const int32_t v = (int32_t)lrintf(load_x(x, dtype, i * G + k) * inv);
    xq[i * G + k] = (int16_t)(finite ? v : 0);
    sum += finite ? v : 0;
  }
  xscale[i] = finite ? top / 32767.f : NAN;
  xqsum[i] = sum;
}

/* R rows (xq: [R, K]) against one 32-column block; adds into acc_out [R, N] (float32). */
#define DEFINE_BLOCK(R)                                                                        \
  static void block_##R(const int16_t *xq, const float *xscale, const int32_t *xqsum,         \
                        int64_t K, int64_t groups, int64_t G, const uint8_t *w,                \
                        const float *s, const uint8_t *zp, int64_t N, int64_t col,             \
                        float *out) {                                                          \
    const __m256i mask = _mm256_set1_epi16(0x000F);                                            \
    for (int64_t g = 0; g < groups; ++g) {                                                     \
      __m256i acc[R][4];                                                                       \
      for (int r = 0; r < R; ++r)                                                              \
        for (int c = 0; c < 4; ++c) acc[r][c] = _mm256_setzero_si256();                        \
      for (int64_t k0 = g * G; k0 < (g + 1) * G; k0 += CHUNK) {                                \
        const uint8_t *wc = w + k0 / CHUNK * 128;                                              \
        _mm_prefetch((const char *)(wc + AHEAD), _MM_HINT_T0);                                 \
        _mm_prefetch((const char *)(wc + AHEAD + 64), _MM_HINT_T0);                            \
        __m256i xb[R][4];                                                                      \
        for (int r = 0; r < R; ++r)                                                            \
          for (int j = 0; j < 4; ++j) {                                                        \
            int32_t pair;                                                                      \
            memcpy(&pair, xq + r * K + k0 + 2 * j, sizeof pair);                               \
            xb[r][j] = _mm256_set1_epi32(pair);                                                \
          }                                                                                    \
        for (int c = 0; c < 4; ++c) {                                                          \
          const __m256i v = _mm256_loadu_si256((const __m256i *)(wc + 32 * c));                \
          const __m256i q0 = _mm256_and_si256(v, mask);                                        \
          const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);                  \
          const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(v, 8), mask);                  \
          const __m256i q3 = _mm256_srli_epi16(v, 12);                                         \
          for (int r = 0; r < R; ++r) {                                                        \
            __m256i a = _mm256_add_epi32(_mm256_madd_epi16(q0, xb[r][0]),                      \
                                         _mm256_madd_epi16(q1, xb[r][1]));                     \
            a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_madd_epi16(q2, xb[r][2]),          \
                                                     _mm256_madd_epi16(q3, xb[r][3])));        \
            acc[r][c] = _mm256_add_epi32(acc[r][c], a);                                        \
          }                                                                                    \
        }                                                                                      \
      }                                                                                        \
      for (int c = 0; c < 4; ++c) {                                                            \
        const int64_t n = col + 8 * c;                                                         \
        const __m256i z =                                                                      \
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(zp + g * N + n)));          \
        const __m256 sc = _mm256_loadu_ps(s + g * N + n);                                      \
        for (int r = 0; r < R; ++r) {                                                          \
          const __m256i dot = _mm256_sub_epi32(                                                \
              acc[r][c], _mm256_mullo_epi32(z, _mm256_set1_epi32(xqsum[r * groups + g])));    \
          const __m256 scale = _mm256_mul_ps(sc, _mm256_set1_ps(xscale[r * groups + g]));     \
          float *o = out + r * N + n;                                                          \
          _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale,                  \
                                              _mm256_loadu_ps(o)));                            \
        }                                                                                      \
      }                                                                                        \
    }                                                                                          \
  }

DEFINE_BLOCK(1)
DEFINE_BLOCK(2)

/* out[M, N] (dtype: 0 float32, 1 bfloat16) = x[M, K] (same dtypes) times the AWQ weight
 * w [N/32, K/8, 128] with scales and zero points [K/G, N] (float32, uint8), plus bias [N]
 * (float32, may be NULL), on `threads` OpenMP threads. Returns 0, or -1 when out of memory. */
int awq_gemm_avx2(const void *x, int x_dtype, int64_t M, int64_t K, const uint8_t *w,
                  const float *scales, const uint8_t *zeros, const float *bias, int64_t N,
                  int64_t G, void *out, int out_dtype, int threads) {
  const int64_t groups = K / G, blocks = N / BLOCK;
  if (M == 0) return 0;
  int16_t *xq = malloc(sizeof(int16_t) * M * K);
  float *xscale = malloc(sizeof(float) * M * groups);
  int32_t *xqsum = malloc(sizeof(int32_t) * M * groups);
  float *acc = out_dtype == F32 ? (float *)out : malloc(sizeof(float) * M * N);
  if (!xq || !xscale || !xqsum || !acc) {
    free(xq), free(xscale), free(xqsum);
    if (acc != out) free(acc);
    return -1;
  }
#pragma omp parallel for num_threads(threads) schedule(static) if (M * groups > 64)
  for (int64_t i = 0; i < M * groups; ++i) quantize_group(x, x_dtype, i, G, xq, xscale, xqsum);
  memset(acc, 0, sizeof(float) * M * N);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t *wb = w + b * (K / 2) * BLOCK;
    int64_t m = 0;
    for (; m + 2 <= M; m += 2)
      block_2(xq + m * K, xscale + m * groups, xqsum + m * groups, K, groups, G, wb, scales,
              zeros, N, b * BLOCK, acc + m * N);
    for (; m < M; ++m)
      block_1(xq + m * K, xscale + m * groups, xqsum + m * groups, K, groups, G, wb, scales,
              zeros, N, b * BLOCK, acc + m * N);
    for (int64_t r = 0; r < M; ++r) {
      float *row = acc + r * N + b * BLOCK;
      if (bias)
        for (int i = 0; i < BLOCK; ++i) row[i] += bias[b * BLOCK + i];
      if (out_dtype == BF16)
        for (int i = 0; i < BLOCK; ++i)
          ((uint16_t *)out)[r * N + b * BLOCK + i] = to_bf16(row[i]);
    }
  }
  free(xq), free(xscale), free(xqsum);
  if (acc != out) free(acc);
  return 0;
}

/* Columns n0..n1 (multiples of 32) of the weight of w (layout above), transposed, as
 * bfloat16 [K, n1 - n0]: each (q - zp) * s
 * computed exactly in float32 and rounded to nearest even once. For prefill, where one
 * bfloat16 matrix product over many rows beats the integer path (avx2.py picks). A 32-byte
 * sub-block holds 8 columns' codes as 8 32-bit pairs of lanes (p = 0 low, p = 1 high), so
 * shifting by 4j (p = 0) or 16 + 4j (p = 1) gives input k0 + 2j + p of those 8 columns:
 * one contiguous 16-byte row piece of the output. Whole blocks per thread. */
void awq_dequant_bf16(const uint8_t *w, const float *scales, const uint8_t *zeros, int64_t K,
                      int64_t N, int64_t G, int64_t n0, int64_t n1, uint16_t *out,
                      int threads) {
  const int64_t chunks = K / CHUNK, width = n1 - n0;
  const __m256i nibble = _mm256_set1_epi32(0xF), one = _mm256_set1_epi32(1);
  const __m256i half = _mm256_set1_epi32(0x7fff);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = n0 / BLOCK; b < n1 / BLOCK; ++b)
    for (int64_t kc = 0; kc < chunks; ++kc) {
      const uint8_t *chunk = w + (b * chunks + kc) * 128;
      const int64_t g = kc * CHUNK / G, k0 = kc * CHUNK;
      for (int c = 0; c < 4; ++c) {
        const int64_t col = b * BLOCK + 8 * c;
        const __m256i v = _mm256_loadu_si256((const __m256i *)(chunk + 32 * c));
        const __m256 z = _mm256_cvtepi32_ps(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(zeros + g * N + col))));
        const __m256 s = _mm256_loadu_ps(scales + g * N + col);
        for (int j = 0; j < 4; ++j)
          for (int p = 0; p < 2; ++p) {
            const __m256i q = _mm256_and_si256(_mm256_srli_epi32(v, 16 * p + 4 * j), nibble);
            const __m256 f = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(q), z), s);
            const __m256i bits = _mm256_castps_si256(f);
            const __m256i rounded = _mm256_srli_epi32(
                _mm256_add_epi32(bits, _mm256_add_epi32(
                    half, _mm256_and_si256(_mm256_srli_epi32(bits, 16), one))), 16);
            const __m256i packed =
                _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0xD8);
            _mm_storeu_si128((__m128i *)(out + (k0 + 2 * j + p) * width + col - n0),
                             _mm256_castsi256_si128(packed));
          }
      }
    }
}
