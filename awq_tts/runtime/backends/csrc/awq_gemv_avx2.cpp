// AWQ INT4 matmul for x86 CPUs with AVX2: integer dot products, weights streamed as nibbles.
//
// Activations are quantized per row and per group of G inputs to int16 with the scale
// max|x| / 32767 (error at most 2^-16 of the group's largest input, far below the bf16
// rounding the talker's activations already carry). Each group's dot product is then
// exact in int32, and the AWQ zero point is applied in integers:
//   out[n] += s[g, n] * xscale[g] * (sum_k xq[k] q[n, k] - zp[g, n] * sum_k xq[k]).
//
// Layout (prepared by awq_tts/runtime/backends/avx2.py): output columns in blocks of 32,
// each block in chunks of 8 inputs, each chunk as 4 sub-blocks of 8 columns x 16 uint16
// lanes. Lane 2i + p of sub-block c holds q[col, k0 + 2j + p] << 4j for j = 0..3, with
// col = 32 b + 8 c + i. So (lane >> 4j) & 0xF gives, in 16-bit lanes, the pairs
// (q[col, k0 + 2j], q[col, k0 + 2j + 1]) that _mm256_madd_epi16 multiplies with a broadcast
// pair of activations: 64 multiply-adds from one 32-byte load, six ALU ops, four madds.
// Each thread streams its blocks front to back and prefetches 1 KiB ahead (a talker step's
// 0.7 GB of weights comes from DRAM: 20% faster than the hardware prefetcher alone).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <optional>

namespace {

constexpr int64_t kBlock = 32, kChunk = 8, kAhead = 1024;

// R rows (xq: int16 [R, K], lda K) against one 32-column block; adds into out [R, N].
template <int R>
void block(const int16_t* xq, const float* xscale, const int32_t* xqsum, int64_t K,
           int64_t groups, int64_t G, const uint8_t* w, const float* s, const int32_t* zp,
           int64_t N, int64_t col, float* out) {
  const __m256i mask = _mm256_set1_epi16(0x000F);
  for (int64_t g = 0; g < groups; ++g) {
    __m256i acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 4; ++c) acc[r][c] = _mm256_setzero_si256();
    for (int64_t k0 = g * G; k0 < (g + 1) * G; k0 += kChunk) {
      const uint8_t* wc = w + k0 / kChunk * 128;
      _mm_prefetch(reinterpret_cast<const char*>(wc + kAhead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(wc + kAhead + 64), _MM_HINT_T0);
      __m256i xb[R][4];
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < 4; ++j) {
          int32_t pair;
          std::memcpy(&pair, xq + r * K + k0 + 2 * j, sizeof(pair));
          xb[r][j] = _mm256_set1_epi32(pair);
        }
      for (int c = 0; c < 4; ++c) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + 32 * c));
        const __m256i q0 = _mm256_and_si256(v, mask);
        const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(v, 8), mask);
        const __m256i q3 = _mm256_srli_epi16(v, 12);
        for (int r = 0; r < R; ++r) {
          __m256i a = _mm256_add_epi32(_mm256_madd_epi16(q0, xb[r][0]),
                                       _mm256_madd_epi16(q1, xb[r][1]));
          a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_madd_epi16(q2, xb[r][2]),
                                                   _mm256_madd_epi16(q3, xb[r][3])));
          acc[r][c] = _mm256_add_epi32(acc[r][c], a);
        }
      }
    }
    for (int c = 0; c < 4; ++c) {
      const int64_t n = col + 8 * c;
      const __m256i z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp + g * N + n));
      const __m256 sc = _mm256_loadu_ps(s + g * N + n);
      for (int r = 0; r < R; ++r) {
        const __m256i dot = _mm256_sub_epi32(
            acc[r][c], _mm256_mullo_epi32(z, _mm256_set1_epi32(xqsum[r * groups + g])));
        const __m256 scale = _mm256_mul_ps(sc, _mm256_set1_ps(xscale[r * groups + g]));
        float* o = out + r * N + n;
        _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, _mm256_loadu_ps(o)));
      }
    }
  }
}

// Per row and group (groups i0..i1 of all rows): int16 codes of x, their scale and sum.
void quantize_groups(const float* x, int64_t i0, int64_t i1, int64_t G, int16_t* xq,
                     float* xscale, int32_t* xqsum) {
  for (int64_t i = i0; i < i1; ++i) {
    const float* xg = x + i * G;
    float top = 0.f;
    for (int64_t k = 0; k < G; ++k) top = std::fmax(top, std::fabs(xg[k]));
    const float scale = top / 32767.f, inv = top > 0.f ? 32767.f / top : 0.f;
    int32_t sum = 0;
    for (int64_t k = 0; k < G; ++k) {
      const int32_t v = static_cast<int32_t>(std::nearbyint(xg[k] * inv));
      xq[i * G + k] = static_cast<int16_t>(v);
      sum += v;
    }
    xscale[i] = scale;
    xqsum[i] = sum;
  }
}

// x: [M, K] any float dtype; w: [N / 32, K / 8, 128] uint8; scales: [K / G, N] float32;
// zeros: [K / G, N] int32; bias: [N] or none -> [M, N] in x's dtype (bias added in float32).
at::Tensor gemm(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& scales,
                const at::Tensor& zeros, const std::optional<at::Tensor>& bias, int64_t G) {
  TORCH_CHECK(x_in.dim() == 2 && w.dim() == 3 && w.size(2) == 128, "awq_gemv_avx2: bad shapes");
  TORCH_CHECK(w.scalar_type() == at::kByte && scales.scalar_type() == at::kFloat &&
                  zeros.scalar_type() == at::kInt && G % kChunk == 0,
              "awq_gemv_avx2: bad dtypes or group size");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0) * kBlock, groups = K / G;
  TORCH_CHECK(w.size(1) * kChunk == K && K % G == 0 && scales.size(0) == groups &&
                  scales.size(1) == N && zeros.sizes() == scales.sizes(),
              "awq_gemv_avx2: weight does not match the input");
  at::Tensor xq = at::empty({M, K}, x.options().dtype(at::kShort));
  at::Tensor xscale = at::empty({M, groups}, x.options());
  at::Tensor xqsum = at::empty({M, groups}, x.options().dtype(at::kInt));
  at::parallel_for(0, M * groups, 64, [&](int64_t i0, int64_t i1) {
    quantize_groups(x.data_ptr<float>(), i0, i1, G, xq.data_ptr<int16_t>(),
                    xscale.data_ptr<float>(), xqsum.data_ptr<int32_t>());
  });
  at::Tensor out = at::zeros({M, N}, x.options());
  const int16_t* qp = xq.data_ptr<int16_t>();
  const float *xs = xscale.data_ptr<float>(), *sp = scales.data_ptr<float>();
  const int32_t *xz = xqsum.data_ptr<int32_t>(), *zp = zeros.data_ptr<int32_t>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, w.size(0), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* wb = wp + b * (K / 2) * kBlock;
      int64_t m = 0;
      for (; m + 2 <= M; m += 2)
        block<2>(qp + m * K, xs + m * groups, xz + m * groups, K, groups, G, wb, sp, zp, N,
                 b * kBlock, op + m * N);
      for (; m < M; ++m)
        block<1>(qp + m * K, xs + m * groups, xz + m * groups, K, groups, G, wb, sp, zp, N,
                 b * kBlock, op + m * N);
    }
  });
  if (bias.has_value()) out.add_(bias->to(at::kFloat));
  return out.scalar_type() == x_in.scalar_type() ? out : out.to(x_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY(awq_tts, m) {
  m.def("gemm_avx2(Tensor x, Tensor w, Tensor scales, Tensor zeros, Tensor? bias, int group) -> Tensor");
}

TORCH_LIBRARY_IMPL(awq_tts, CPU, m) { m.impl("gemm_avx2", gemm); }
