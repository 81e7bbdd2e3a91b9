"""C++ text of the weight-only GEMM kernels (w8, fp8, w4g, 2:4, w8_split) per ISA.

Data for `gemm.py`: the zmm (`woz`), ymm + FMA (`woy`) and portable (`wos`) kernels, which
decode the stored weight in registers and accumulate in float32, and the exact fp8 table.
"""
from __future__ import annotations

import functools
import math
import string

import torch

# The zmm and ymm weight-only kernels are one text: the vector vocabulary (`$V` the float
# vector, `$VI` the integer one, `$P` the intrinsic prefix, `$L` lanes, `$A` alignment) and
# the tile sizes are filled in per ISA. What really differs stays per ISA: loading a lane's
# bytes, the fp8 decode (F16C's vcvtph2ps vs integer arithmetic) and w4g (vpermps by nibble
# with one group rescale on zmm; AVX2 has no 16-entry permute, so the weight is decoded).
_WO_VECTOR = string.Template(r"""
#ifndef SPK_GEMM_$GUARD
#define SPK_GEMM_$GUARD
#if $REQUIRE
#error "spokeshave weight-only kernel (isa $ISA) needs $FLAGS"
#endif
namespace spk_gemm {
namespace $NS {
// Weight-only on $REG: the weight is decoded to float in registers, $L columns per vector,
// and multiplied by broadcast activations (folded into the FMA's memory operand). A format
// F provides MR, NR (tile = MR rows x $L*NR columns), NW (its packed tensors) and
// tile<R, K>(), which leaves the tile's values (scale applied) in `out`.

// Few rows leave few independent FMA chains (latency 4, two ports): split the k loop over
// KU accumulator sets then.
template <int R> struct Ku { static constexpr int value = R <= 2 ? 2 : 1; };

// $L bytes of a packed panel, zero- / sign-extended to $L int32 lanes
static inline $VI lanes_u8(const uint8_t* p) { return ${P}_cvtepu8_epi32($LOAD_BYTES((const __m128i*)p)); }
static inline $VI lanes_i8(const uint8_t* p) { return ${P}_cvtepi8_epi32($LOAD_BYTES((const __m128i*)p)); }
static inline $V dec_i8(const uint8_t* p) { return ${P}_cvtepi32_ps(lanes_i8(p)); }
// x[0..3] in every 128-bit lane
static inline $V bcast4(const float* p) { return $BROADCAST4; }
$DEC_F8
// w8 / fp8: [P][K][PW] bytes, per-column scale [NPAD].
template <bool F8> struct PerChannel {
  static constexpr int MR = $PC_MR, NR = $PC_NR, PW = $L * NR, NW = 2;
  template <int64_t K> static const float* prologue(const float*, int64_t, int64_t) { return nullptr; }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float*,
                          int64_t m0, $V (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    const uint8_t* wp = (const uint8_t*)w[0] + p * K * PW;
    const float* s = (const float*)w[1] + p * PW;
    const float* xr = x + m0 * ldx;
    $V a[KU][R][NR];
    SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
      SPK_UNROLL for (int j = 0; j < NR; ++j) a[u][i][j] = ${P}_setzero_ps();
    auto step = [&](int64_t k, int u) __attribute__((always_inline)) {
      $V b[NR];
      SPK_UNROLL for (int j = 0; j < NR; ++j) b[j] = F8 ? dec_f8(wp + k * PW + $L * j) : dec_i8(wp + k * PW + $L * j);
      SPK_UNROLL for (int i = 0; i < R; ++i) {
        const $V xv = ${P}_set1_ps(xr[i * ldx + k]);
        SPK_UNROLL for (int j = 0; j < NR; ++j) a[u][i][j] = ${P}_fmadd_ps(xv, b[j], a[u][i][j]);
      }
    };
    int64_t k = 0;
    for (; k + KU <= K; k += KU) { SPK_UNROLL for (int u = 0; u < KU; ++u) step(k + u, u); }
    if (K % KU) step(K - 1, 0);
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) {
      const $V v = KU == 2 ? ${P}_add_ps(a[0][i][j], a[KU - 1][i][j]) : a[0][i][j];
      out[i][j] = ${P}_mul_ps(v, ${P}_loadu_ps(s + $L * j));
    }
  }
};
$W4
// 2:4: per group of 4 k, the two kept values of $L columns ([P][K/4][2][PW] floats) and
// their positions ([P][K/4][PW] bytes, i0 | i1 << 2). x[4g..4g+3] is broadcast to every
// 128-bit lane and vpermilps picks each column's x by its 2-bit position (it reads only the
// low 2 bits). Only the kept half of the weight is read.
struct S24 {
  static constexpr int MR = $S24_MR, NR = 2, PW = $L * NR, NW = 2;
  template <int64_t K> static const float* prologue(const float*, int64_t, int64_t) { return nullptr; }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float*,
                          int64_t m0, $V (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    constexpr int64_t NG = K / 4;
    const float* vp = (const float*)w[0] + p * NG * 2 * PW;
    const uint8_t* ip = (const uint8_t*)w[1] + p * NG * PW;
    const float* xr = x + m0 * ldx;
    $V a[KU][R][NR];
    SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
      SPK_UNROLL for (int c = 0; c < NR; ++c) a[u][i][c] = ${P}_setzero_ps();
    for (int64_t g = 0; g < NG; ++g) {
      $V v0[NR], v1[NR];
      $VI i0[NR], i1[NR];
      SPK_UNROLL for (int c = 0; c < NR; ++c) {
        v0[c] = ${P}_loadu_ps(vp + (2 * g) * PW + $L * c);
        v1[c] = ${P}_loadu_ps(vp + (2 * g + 1) * PW + $L * c);
        i0[c] = lanes_u8(ip + g * PW + $L * c);
        i1[c] = ${P}_srli_epi32(i0[c], 2);
      }
      SPK_UNROLL for (int i = 0; i < R; ++i) {
        const $V xb = bcast4(xr + i * ldx + 4 * g);
        SPK_UNROLL for (int c = 0; c < NR; ++c) {
          a[0][i][c] = ${P}_fmadd_ps(${P}_permutevar_ps(xb, i0[c]), v0[c], a[0][i][c]);
          a[KU - 1][i][c] = ${P}_fmadd_ps(${P}_permutevar_ps(xb, i1[c]), v1[c], a[KU - 1][i][c]);
        }
      }
    }
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int c = 0; c < NR; ++c)
      out[i][c] = KU == 2 ? ${P}_add_ps(a[0][i][c], a[KU - 1][i][c]) : a[0][i][c];
  }
};

// The driver: tiles, outlier columns (w8_split: + x[:, oindex] @ owT), bias, epilogue.
template <class F, int64_t N, int64_t K, int MO, class Epi>
static void gemm(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w,
                 const float* bias, const Epi& epi) {
  constexpr int MR = F::MR, NR = F::NR, PW = F::PW;
  constexpr int64_t NP = (N + PW - 1) / PW, NPAD = NP * PW;
  if (M <= 0) return;
  const float* pre = F::template prologue<K>(x, M, ldx);
  const float* owT = MO ? (const float*)w[F::NW] : nullptr;
  const int32_t* oidx = MO ? (const int32_t*)w[F::NW + 1] : nullptr;
  parallel_tiles(NP, M, MR, M * NPAD * K, [&](int64_t p, int64_t mb) {
    const int64_t mt = mb * MR, n0 = p * PW;
    Rows<MR>::run((int)min64(MR, M - mt), [&](auto rc, int off) {
      constexpr int R = decltype(rc)::value;
      const int64_t m0 = mt + off;
      $V v[R][NR];
      F::template tile<R, K>(x, ldx, p, w, pre, m0, v);
      alignas($A) float t[R][PW];
      SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) {
        $V f = v[i][j];
        if (MO) {
          for (int jo = 0; jo < MO; ++jo)
            f = ${P}_fmadd_ps(${P}_set1_ps(x[(m0 + i) * ldx + oidx[jo]]), ${P}_loadu_ps(owT + jo * NPAD + n0 + $L * j), f);
        }
        ${P}_store_ps(&t[i][$L * j], f);
      }
      store_rows<PW>(&t[0][0], R, m0, n0, min64(PW, N - n0), bias, y, ldy, epi);
    });
  });
}

}  // namespace $NS
}  // namespace spk_gemm
#endif  // SPK_GEMM_$GUARD
""")

_DEC_F8_ZMM = r"""// e4m3fn S.EEEE.MMM moved into fp16 as S.0EEEE.MMM0000000 is the same number times 2^-8,
// normals and subnormals alike (exponent bias 7 vs 15, and fp16's subnormal step 2^-24 is
// e4m3's 2^-9 times 2^-8 too); the 2^8 is folded into the packed scale, vcvtph2ps is exact.
// (NaN codes, which the quantizer never writes, decode as +-480.)
static inline __m512 dec_f8(const uint8_t* p) {
  const __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)p));  // sign-extended
  return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xBFFF)));
}
"""

_DEC_F8_YMM = r"""// e4m3fn by integer arithmetic (F16C is not assumed on an AVX2 target): a normal code's
// float bits are its 7 magnitude bits << 20 with the exponent rebiased by 120; a subnormal
// (exponent 0) is m * 2^-9. (NaN codes, never written by the quantizer, decode as +-480.)
static inline __m256 dec_f8(const uint8_t* p) {
  const __m256i v = lanes_i8(p);  // bit 31 = sign
  const __m256i mag = _mm256_and_si256(v, _mm256_set1_epi32(0x7F));
  const __m256i sign = _mm256_and_si256(v, _mm256_set1_epi32((int)0x80000000u));
  const __m256i nrm = _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23));
  const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(1.0f / 512.0f));
  const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag);
  const __m256 r = _mm256_blendv_ps(_mm256_castsi256_ps(nrm), sub, _mm256_castsi256_ps(is_sub));
  return _mm256_or_ps(r, _mm256_castsi256_ps(sign));
}
"""

_W4_ZMM = r"""// w4g: [P][K/2][PW] bytes (low nibble = even k), scales (and zeros) [P][K/G][PW]. Per
// group the codes are summed as floats, sum_k x_k u_k, and the group's zero point and
// scale are applied once: s * (sum_k x_k u_k - z * sum_k x_k), with the row sums of x per
// group computed in the prologue. vpermps on a 0..15 table turns a nibble into its float
// in one instruction (it reads only the index's low 4 bits, so no mask is needed).
template <int64_t G, bool SYM> struct W4 {
  static constexpr int MR = 6, NR = 2, PW = 16 * NR, NW = SYM ? 2 : 3;
  template <int64_t K> static const float* prologue(const float* x, int64_t M, int64_t ldx) {
    constexpr int64_t NG = K / G;
    float* xs = (float*)scratch((size_t)(M * NG) * sizeof(float), 2);
    parallel_rows(M, M * K, [&](int64_t m) {
      for (int64_t g = 0; g < NG; ++g) {
        __m512 s = _mm512_setzero_ps();
        int64_t kk = 0;
        for (; kk + 16 <= G; kk += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + m * ldx + g * G + kk));
        float t = _mm512_reduce_add_ps(s);
        for (; kk < G; ++kk) t += x[m * ldx + g * G + kk];
        xs[m * NG + g] = t;
      }
    });
    return xs;
  }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float* xsum,
                          int64_t m0, __m512 (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    constexpr int64_t NG = K / G, J = G / 2;
    const uint8_t* wp = (const uint8_t*)w[0] + p * (K / 2) * PW;
    const float* sp = (const float*)w[1] + p * NG * PW;
    const float* zp = SYM ? nullptr : (const float*)w[2] + p * NG * PW;
    const float* xr = x + m0 * ldx;
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int c = 0; c < NR; ++c) out[i][c] = _mm512_setzero_ps();
    for (int64_t g = 0; g < NG; ++g) {
      __m512 a[KU][R][NR];
      SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
        SPK_UNROLL for (int c = 0; c < NR; ++c) a[u][i][c] = _mm512_setzero_ps();
      for (int64_t j = g * J; j < (g + 1) * J; ++j) {
        __m512 lo[NR], hi[NR];
        SPK_UNROLL for (int c = 0; c < NR; ++c) {
          const __m512i v = lanes_u8(wp + j * PW + 16 * c);
          lo[c] = _mm512_permutexvar_ps(v, iota);
          hi[c] = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), iota);
        }
        SPK_UNROLL for (int i = 0; i < R; ++i) {
          const __m512 x0 = _mm512_set1_ps(xr[i * ldx + 2 * j]), x1 = _mm512_set1_ps(xr[i * ldx + 2 * j + 1]);
          SPK_UNROLL for (int c = 0; c < NR; ++c) {
            a[0][i][c] = _mm512_fmadd_ps(x0, lo[c], a[0][i][c]);
            a[KU - 1][i][c] = _mm512_fmadd_ps(x1, hi[c], a[KU - 1][i][c]);
          }
        }
      }
      SPK_UNROLL for (int c = 0; c < NR; ++c) {
        const __m512 s = _mm512_loadu_ps(sp + g * PW + 16 * c);
        const __m512 z = SYM ? _mm512_set1_ps(8.0f) : _mm512_loadu_ps(zp + g * PW + 16 * c);
        SPK_UNROLL for (int i = 0; i < R; ++i) {
          const __m512 v = KU == 2 ? _mm512_add_ps(a[0][i][c], a[KU - 1][i][c]) : a[0][i][c];
          const __m512 xg = _mm512_set1_ps(xsum[(m0 + i) * NG + g]);
          out[i][c] = _mm512_fmadd_ps(s, _mm512_fnmadd_ps(z, xg, v), out[i][c]);
        }
      }
    }
  }
};

"""

_W4_YMM = r"""// w4g: the exact decoded weight (u - z) * s (what the reference multiplies by) in
// registers; no vpermps-by-nibble on AVX2, so and/shift + convert.
template <int64_t G, bool SYM> struct W4 {
  static constexpr int MR = 4, NR = 2, PW = 8 * NR, NW = SYM ? 2 : 3;
  template <int64_t K> static const float* prologue(const float*, int64_t, int64_t) { return nullptr; }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float*,
                          int64_t m0, __m256 (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    constexpr int64_t NG = K / G, J = G / 2;
    const uint8_t* wp = (const uint8_t*)w[0] + p * (K / 2) * PW;
    const float* sp = (const float*)w[1] + p * NG * PW;
    const float* zp = SYM ? nullptr : (const float*)w[2] + p * NG * PW;
    const float* xr = x + m0 * ldx;
    const __m256i m4 = _mm256_set1_epi32(0xF);
    __m256 a[KU][R][NR];
    SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
      SPK_UNROLL for (int c = 0; c < NR; ++c) a[u][i][c] = _mm256_setzero_ps();
    for (int64_t g = 0; g < NG; ++g) {
      __m256 s[NR], z[NR];
      SPK_UNROLL for (int c = 0; c < NR; ++c) {
        s[c] = _mm256_loadu_ps(sp + g * PW + 8 * c);
        z[c] = SYM ? _mm256_set1_ps(8.0f) : _mm256_loadu_ps(zp + g * PW + 8 * c);
      }
      for (int64_t j = g * J; j < (g + 1) * J; ++j) {
        __m256 lo[NR], hi[NR];
        SPK_UNROLL for (int c = 0; c < NR; ++c) {
          const __m256i v = lanes_u8(wp + j * PW + 8 * c);
          lo[c] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, m4)), z[c]), s[c]);
          hi[c] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), z[c]), s[c]);
        }
        SPK_UNROLL for (int i = 0; i < R; ++i) {
          const __m256 x0 = _mm256_set1_ps(xr[i * ldx + 2 * j]), x1 = _mm256_set1_ps(xr[i * ldx + 2 * j + 1]);
          SPK_UNROLL for (int c = 0; c < NR; ++c) {
            a[0][i][c] = _mm256_fmadd_ps(x0, lo[c], a[0][i][c]);
            a[KU - 1][i][c] = _mm256_fmadd_ps(x1, hi[c], a[KU - 1][i][c]);
          }
        }
      }
    }
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int c = 0; c < NR; ++c)
      out[i][c] = KU == 2 ? _mm256_add_ps(a[0][i][c], a[KU - 1][i][c]) : a[0][i][c];
  }
};

"""

_ZMM = dict(GUARD="WOZ", NS="woz", ISA="avx512", REG="zmm",
            REQUIRE="!defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX2__)",
            FLAGS="-mavx512f -mavx512bw", V="__m512", VI="__m512i", P="_mm512", L="16", A="64",
            LOAD_BYTES="_mm_loadu_si128", BROADCAST4="_mm512_broadcast_f32x4(_mm_loadu_ps(p))",
            PC_MR="8", PC_NR="3", S24_MR="6", DEC_F8=_DEC_F8_ZMM, W4=_W4_ZMM)
_YMM = dict(GUARD="WOY", NS="woy", ISA="avx2", REG="ymm + FMA",
            REQUIRE="!defined(__AVX2__) || !defined(__FMA__)", FLAGS="-mavx2 -mfma",
            V="__m256", VI="__m256i", P="_mm256", L="8", A="32",
            LOAD_BYTES="_mm_loadl_epi64", BROADCAST4="_mm256_broadcast_ps((const __m128*)p)",
            PC_MR="6", PC_NR="2", S24_MR="4", DEC_F8=_DEC_F8_YMM, W4=_W4_YMM)
WOZ = _WO_VECTOR.substitute(_ZMM)
WOY = _WO_VECTOR.substitute(_YMM)

WOS = r"""
#ifndef SPK_GEMM_WOS
#define SPK_GEMM_WOS
namespace spk_gemm {
namespace wos {
// Portable weight-only kernels on the stored layouts: one column's dot product at a time,
// the weight decoded exactly as the reference decodes it.
constexpr int PW = 64;

struct W8 {
  static constexpr int NW = 2;
  template <int64_t K> static inline float dot(const float* x, void* const* w, int64_t n) {
    const int8_t* q = (const int8_t*)w[0] + n * K;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) acc += x[k] * (float)q[k];
    return acc * ((const float*)w[1])[n];
  }
};

struct F8 {
  static constexpr int NW = 2;
  template <int64_t K> static inline float dot(const float* x, void* const* w, int64_t n) {
    const uint8_t* q = (const uint8_t*)w[0] + n * K;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) acc += x[k] * kFp8E4M3[q[k]];
    return acc * ((const float*)w[1])[n];
  }
};

template <int64_t G, bool SYM> struct W4 {
  static constexpr int NW = SYM ? 2 : 3;
  template <int64_t K> static inline float dot(const float* x, void* const* w, int64_t n) {
    const uint8_t* q = (const uint8_t*)w[0] + n * (K / 2);
    const float* s = (const float*)w[1] + n * (K / G);
    const uint8_t* z = SYM ? nullptr : (const uint8_t*)w[2] + n * (K / G);
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const int u = (k & 1) ? (q[k >> 1] >> 4) : (q[k >> 1] & 0xF);
      const float zf = SYM ? 8.0f : (float)z[k / G];
      acc += x[k] * (((float)u - zf) * s[k / G]);
    }
    return acc;
  }
};

struct S24 {
  static constexpr int NW = 2;
  template <int64_t K> static inline float dot(const float* x, void* const* w, int64_t n) {
    const float* v = (const float*)w[0] + n * (K / 2);
    const uint8_t* meta = (const uint8_t*)w[1] + n * ((K / 4 + 1) / 2);
    float acc = 0.0f;
    for (int64_t g = 0; g < K / 4; ++g) {
      const int nib = (g & 1) ? (meta[g >> 1] >> 4) : (meta[g >> 1] & 0xF);
      acc += v[2 * g] * x[4 * g + (nib & 3)] + v[2 * g + 1] * x[4 * g + ((nib >> 2) & 3)];
    }
    return acc;
  }
};

template <class F, int64_t N, int64_t K, int MO, class Epi>
static void gemm(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w,
                 const float* bias, const Epi& epi) {
  constexpr int64_t NP = (N + PW - 1) / PW;
  if (M <= 0) return;
  const float* owT = MO ? (const float*)w[F::NW] : nullptr;
  const int32_t* oidx = MO ? (const int32_t*)w[F::NW + 1] : nullptr;
  parallel_tiles(NP, M, 1, M * N * K, [&](int64_t p, int64_t m) {
    const int64_t n0 = p * PW, nc = min64(PW, N - n0);
    float t[PW];
    for (int64_t c = 0; c < nc; ++c) {
      float f = F::template dot<K>(x + m * ldx, w, n0 + c);
      for (int jo = 0; jo < MO; ++jo) f += x[m * ldx + oidx[jo]] * owT[jo * N + n0 + c];
      t[c] = f;
    }
    store_rows<PW>(t, 1, m, n0, nc, bias, y, ldy, epi);
  });
}

}  // namespace wos
}  // namespace spk_gemm
#endif  // SPK_GEMM_WOS
"""


@functools.lru_cache(maxsize=1)
def fp8_table() -> str:
    """The 256 e4m3fn values as C hex-float literals (exact), for the scalar fp8 kernel."""
    vals = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().tolist()
    lits = ["NAN" if math.isnan(v) else (("-" if math.copysign(1.0, v) < 0 else "") + float.hex(abs(v)) + "f")
            for v in vals]
    rows = [", ".join(lits[i:i + 8]) for i in range(0, 256, 8)]
    return ("#ifndef SPK_GEMM_FP8_TABLE\n#define SPK_GEMM_FP8_TABLE\n"
            "namespace spk_gemm {\nnamespace wos {\n"
            "// float8_e4m3fn code -> float32, exact (generated from torch's decoding)\n"
            "static const float kFp8E4M3[256] = {\n  " + ",\n  ".join(rows) + "};\n"
            "}  // namespace wos\n}  // namespace spk_gemm\n#endif  // SPK_GEMM_FP8_TABLE\n")


# Panel widths (columns per tile), which the packers below must agree with; the wrappers
# static_assert them against the C++ constants.
