/* bfloat16 matrix-vector products for x86 CPUs with AVX2: the few-row products of decode.
 *
 * Plain C with OpenMP, no torch headers (built and loaded like awq_gemm_avx2.c). torch's
 * CPU kernel reads a bf16 weight at 11-15 GB/s at batch 1 on a 2-core EPYC; here each
 * thread takes a contiguous range of output rows, so it streams one contiguous stretch of
 * the weight front to back (what the hardware prefetcher serves best), widens each 16-bit
 * weight to float32 with a shift, and accumulates in float32 with FMAs: 23-27 GB/s.
 *
 * out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]), for up to MAX_ROWS rows m at once,
 * accumulated in float32 and rounded once (to nearest even) where out is bfloat16, as
 * torch's bf16 linear rounds its float32 result.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

#define MAX_ROWS 4
#define AHEAD 512 /* weights (1 KiB) prefetched ahead of the row being read */

static inline __m256 widen_lo(__m256i v) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
}

static inline __m256 widen_hi(__m256i v) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
}

static inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

/* R rows of xf [R, K] (float32) against weight row `row` [K]: sums[R]. */
#define DEFINE_DOT(R)                                                                        \
  static void dot_##R(const uint16_t *row, const float *xf, int64_t K, float *sums) {        \
    __m256 acc[R][2];                                                                        \
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();                 \
    int64_t k = 0;                                                                           \
    for (; k + 16 <= K; k += 16) {                                                           \
      _mm_prefetch((const char *)(row + k + AHEAD), _MM_HINT_T0);                            \
      const __m256i v = _mm256_loadu_si256((const __m256i *)(row + k));                      \
      const __m256 lo = widen_lo(v), hi = widen_hi(v);                                       \
      for (int r = 0; r < R; ++r) {                                                          \
        acc[r][0] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xf + r * K + k), acc[r][0]);         \
        acc[r][1] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xf + r * K + k + 8), acc[r][1]);     \
      }                                                                                      \
    }                                                                                        \
    for (int r = 0; r < R; ++r) {                                                            \
      float s = sum8(_mm256_add_ps(acc[r][0], acc[r][1]));                                   \
      for (int64_t t = k; t < K; ++t) s += from_bf16(row[t]) * xf[r * K + t];                \
      sums[r] = s;                                                                           \
    }                                                                                        \
  }

DEFINE_DOT(1)
DEFINE_DOT(2)
DEFINE_DOT(3)
DEFINE_DOT(4)

/* out[M, N] (out_dtype: 0 float32, 1 bfloat16) = x[M, K] (x_dtype) times w[N, K]^T
 * (bfloat16) plus bias[N] (bfloat16, may be NULL), 1 <= M <= MAX_ROWS, on `threads` OpenMP
 * threads. Returns 0, -1 when out of memory, -2 for M outside 1..MAX_ROWS. */
int gemv_bf16_avx2(const uint16_t *w, const void *x, int x_dtype, int64_t M, int64_t K,
                   int64_t N, const uint16_t *bias, void *out, int out_dtype, int threads) {
  if (M < 1 || M > MAX_ROWS) return -2;
  float *xf = malloc(sizeof(float) * M * K);
  if (!xf) return -1;
  for (int64_t i = 0; i < M * K; ++i)
    xf[i] = x_dtype == F32 ? ((const float *)x)[i] : from_bf16(((const uint16_t *)x)[i]);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float sums[MAX_ROWS];
    const uint16_t *row = w + n * K;
    switch (M) {
      case 1: dot_1(row, xf, K, sums); break;
      case 2: dot_2(row, xf, K, sums); break;
      case 3: dot_3(row, xf, K, sums); break;
      default: dot_4(row, xf, K, sums); break;
    }
    for (int64_t m = 0; m < M; ++m) {
      const float v = sums[m] + (bias ? from_bf16(bias[n]) : 0.f);
      if (out_dtype == F32)
        ((float *)out)[m * N + n] = v;
      else
        ((uint16_t *)out)[m * N + n] = to_bf16(v);
    }
  }
  free(xf);
  return 0;
}
