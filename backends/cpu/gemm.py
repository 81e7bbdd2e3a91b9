"""C++ GEMM kernels for the compressed linears of the `spk` dialect, one per op and ISA.

`gemm_kernel(op, weights, target)` repacks an op's weights into the layout its kernel reads
and returns a `GemmKernel`: the C++ text of a template function (`symbol`) plus the packed
tensors whose data pointers the runtime passes in order. Every kernel has one signature,

    template <class Epi>
    static void SYMBOL(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy,
                       void* const* w, const float* bias, Epi epi);

computing `y[m*ldy + n] = epi(value, m, n)` for the op's exact value (scale and bias
included); `N` and `K` are baked into the text, `M` is a run-time size, so dynamic shapes
never recompile. `bias` may be null; `epi` is a functor `float operator()(float v, int64_t m,
int64_t n) const`. The int8-activation ops (`spk.linear_w8a8`, `spk.linear_w8a8_split`) also
expose the entry points a fusion pass needs to quantize activations in the producer (the
norm) instead of writing and re-reading them in float:

    static inline void SYMBOL_quantize_row(const float* x_row, void* q_row, float* xscale,
                                           void* const* w);   // + a 3-argument form for w8a8
    template <class Epi>
    static void SYMBOL_q(const void* xq, const float* xscale, const float* x, int64_t M,
                         int64_t ldx, float* y, int64_t ldy, void* const* w, const float* bias,
                         Epi epi);

`quantize_row` writes `act_row_bytes` bytes (K rounded up to 4; the padding's value never
matters) and the row's scale; `SYMBOL_q` reads rows `act_row_bytes` apart. The split op's
`quantize_row` needs `w` (it zeroes the outlier columns, whose indices are a packed tensor)
and its `SYMBOL_q` needs the float `x` (the outlier columns are a float GEMM); for w8a8
both are unused (`x` may be null).

Numerics follow `compiler.numerics` exactly:

* w8a8: per-token int8 quantization bit for bit (`amax / 127`, a true division `x / scale`,
  round half to even, clamp +-127, scale 1 for `amax <= 1e-12`), exact int32 accumulation,
  then `float(acc) * xscale[m] * wscale[n] (+ bias)` rounded in that order. The results
  are bit-identical to `quant.linear_w8a8` (the split op adds a float GEMM of the outlier
  columns, whose summation order is ours).
* weight-only ops (w8, fp8, w4g, 2:4, w8_split) decode the stored weight in registers and
  accumulate in float32: "decode, then a float GEMM" up to float rounding order. Per-column
  scales multiply the finished sum; the zmm w4g kernel also takes each group's zero point
  and scale out of the inner loop, `s * (sum x u - z * sum x)` (well within the 1e-5
  relative tolerance the tests hold every weight-only path to).

ISA selection reads `target.features`, never the host (a kernel is generated for the
machine that will run it). int8 activations: `avx512_vnni` (zmm `vpdpbusd`), `avx_vnni`
(ymm `vpdpbusd`), `avx2` (`vpmaddubsw`, exact by the sign trick below), `scalar`.
Weight-only: `avx512` (zmm), `avx2` (ymm + FMA), `scalar`. The text `#error`s when compiled
without the flags its ISA needs, and must not be compiled with `-ffast-math` (the int8
paths rely on IEEE division and on no reassociation).

Layouts (PW = panel width in columns, a multiple of the vector width; N is zero-padded to
whole panels so tiles never need a column tail in the inner loop):

* int8 x int8: `[N/PW][K/4][PW][4]` int8 (4 consecutive k of one column form the 32-bit
  lane `vpdpbusd` reduces), per-column scales, and for VNNI the per-column `128 * colsum`
  (activations are shifted to u8 by +128; the shift is subtracted exactly in int32).
* weight-only: `[N/PW][K][PW]` (w8, fp8 bytes), `[N/PW][K/2][PW]` (w4g: the stored bytes,
  column-blocked, so the low nibble is still the even k), `[N/PW][K/4]{v0,v1}[PW]` floats
  plus `[N/PW][K/4][PW]` position bytes (2:4). Scalar kernels read the stored layout.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from ...compiler.dialect import WEIGHT, op_def
from ...compiler.ir import Op, TensorType
from ...compiler.target import Target


@dataclass(frozen=True)
class GemmKernel:
    """One generated kernel: C++ text, the weights in its layout, and what the caller needs.

    `symbol`/`source` depend only on (op, N, K, attributes, ISA), so layers of the same
    shape share one instantiation; `packed` holds this layer's weights (contiguous CPU
    tensors) whose `data_ptr()`s go, in order, into the kernel's `void* const* w`."""

    op_name: str
    symbol: str
    source: str = field(repr=False)
    isa: str
    packed: tuple[torch.Tensor, ...] = field(repr=False, compare=False)
    n: int
    k: int
    act_row_bytes: int = 0   # w8a8-type: bytes per row of SYMBOL_q's quantized activations

    @property
    def has_prologue(self) -> bool:
        """Whether `SYMBOL_quantize_row` / `SYMBOL_q` exist (the int8-activation ops)."""
        return self.act_row_bytes > 0


# ---------------------------------------------------------------------------- C++ text
# Helper blocks, each with its own include guard, so the sources of many kernels can be
# concatenated into one translation unit. Panel widths (PW) here must match `_PW` below;
# every wrapper static_asserts it.

_PRELUDE = r"""
#ifndef SPK_GEMM_PRELUDE
#define SPK_GEMM_PRELUDE
// spokeshave compressed-linear GEMM kernels (generated by spokeshave/backends/cpu/gemm.py).
// Do not compile with -ffast-math: the int8 paths reproduce the reference's float rounding.
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <type_traits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__clang__)
#define SPK_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define SPK_UNROLL _Pragma("GCC unroll 32")
#else
#define SPK_UNROLL
#endif

namespace spk_gemm {

// Hides how `v` was computed, so the compiler cannot contract a preceding multiply into a
// following add (GCC contracts across statements and intrinsics by default): the reference
// rounds the product `acc * xscale * wscale` before adding the bias.
template <class T> static inline T opaque(T v) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__("" : "+v"(v));
#elif defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile T t = v; v = t;
#endif
  return v;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// int32 accumulators are kept in these (GCC's own element types) rather than __m512i /
// __m256i (vectors of int64): the intrinsics cast to v16si/v8si and back, and GCC does not
// coalesce those casts of loop-carried values, costing a register copy per accumulator per
// iteration (measured: 24 accumulators ran at 40% of the clean loop's speed).
typedef int v16si __attribute__((vector_size(64)));
typedef int v8si __attribute__((vector_size(32)));

// Scratch reused across calls: one growing buffer per calling thread and slot, so a
// prefill does not mmap/page-fault megabytes of quantized activations on every call.
// Kept for the thread's lifetime (a per-thread cache, as oneDNN's scratchpad).
static inline void* scratch(size_t bytes, int slot) {
  struct Buf { void* p; size_t n; };
  static thread_local Buf bufs[4] = {{nullptr, 0}, {nullptr, 0}, {nullptr, 0}, {nullptr, 0}};
  Buf& b = bufs[slot];
  if (b.n < bytes) {
    free(b.p);
    b.n = (bytes + 4095) & ~(size_t)4095;
    b.p = aligned_alloc(64, b.n);
  }
  return b.p;
}

// Covers `rows` (1 <= rows <= MR) with tiles of R in {MR, 4, 2, 1} rows, calling
// f(integral_constant<R>, row offset) for each: the microkernels are instantiated per row
// count (a tile's accumulators must be compile-time), and this set keeps M = 1 and small-M
// decode as tight as a full tile while compiling 4 variants instead of MR.
template <int MR> struct Rows {
  template <class F> static inline void run(int rows, const F& f) {
    int done = 0;
    if (rows == MR) { f(std::integral_constant<int, MR>(), 0); return; }
    if (MR > 4) for (; rows - done >= 4; done += 4) f(std::integral_constant<int, (MR > 4 ? 4 : 1)>(), done);
    if (MR > 2) for (; rows - done >= 2; done += 2) f(std::integral_constant<int, (MR > 2 ? 2 : 1)>(), done);
    for (; done < rows; ++done) f(std::integral_constant<int, 1>(), done);
  }
};

// Tiles of (column panel, block of mr rows), panel-major so that a thread's static chunk
// walks all row blocks of one panel while the panel's weights sit in its L2. At M = 1
// this parallelises over N. Tiny problems stay on the calling thread (fork/join costs
// microseconds).
template <class F>
static inline void parallel_tiles(int64_t np, int64_t M, int mr, int64_t work, const F& f) {
  const int64_t mb = (M + mr - 1) / mr, total = np * mb;
#pragma omp parallel for schedule(static) if (total > 1 && work >= (1 << 17))
  for (int64_t t = 0; t < total; ++t) f(t / mb, t % mb);
}

template <class F> static inline void parallel_rows(int64_t M, int64_t work, const F& f) {
#pragma omp parallel for schedule(static) if (M > 1 && work >= (1 << 16))
  for (int64_t m = 0; m < M; ++m) f(m);
}

// Writes a tile's values through the epilogue; the bias is added here (after the rescale
// was rounded), then epi sees the op's final value.
template <int PW, class Epi>
static inline void store_rows(const float* t, int rows, int64_t m0, int64_t n0, int64_t nc,
                              const float* bias, float* y, int64_t ldy, const Epi& epi) {
  for (int i = 0; i < rows; ++i) {
    const int64_t m = m0 + i;
    const float* ti = t + i * PW;
    float* yr = y + m * ldy + n0;
    if (bias) {
      const float* b = bias + n0;
      for (int64_t c = 0; c < nc; ++c) yr[c] = epi(ti[c] + b[c], m, n0 + c);
    } else {
      for (int64_t c = 0; c < nc; ++c) yr[c] = epi(ti[c], m, n0 + c);
    }
  }
}

// The reference quantizer for one value (tails and the scalar kernels): a true division,
// round half to even (nearbyintf in the default rounding mode), clamp to +-127.
static inline int quantize1(float v, float scale) {
  float r = nearbyintf(v / scale);
  r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
  return (int)r;
}

static inline float row_scale(float amax) { return amax > 1e-12f ? amax / 127.0f : 1.0f; }

}  // namespace spk_gemm
#endif  // SPK_GEMM_PRELUDE
"""

_I8Z = r"""
#ifndef SPK_GEMM_I8Z
#define SPK_GEMM_I8Z
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "spokeshave int8 kernel (isa avx512_vnni) needs -mavx512f -mavx512bw -mavx512vnni"
#endif
namespace spk_gemm {
namespace i8z {
// int8 x int8 on zmm vpdpbusd (u8 x s8 -> s32, 4 products per lane, no saturation).
// Tile: 6 rows x 64 columns of int32 accumulators = 24 zmm, + 4 weight vectors + 1
// broadcast = 29 of the 32 registers. Per k-quad: 4 weight loads, 6 broadcasts, 24 dpbusd.
constexpr int MR = 6, NR = 4, PW = 16 * NR;
constexpr int XB = 3;  // w[]: qweight, scale, colsum, then the split's owT, oindex, keep

static inline v16si dp(v16si acc, v16si a, v16si b) {
#if defined(__GNUC__) && !defined(__clang__)
  return __builtin_ia32_vpdpbusd_v16si(acc, a, b);
#else
  return (v16si)_mm512_dpbusd_epi32((__m512i)acc, (__m512i)a, (__m512i)b);
#endif
}

static inline __m512 load_keep(const float* x, const int32_t* keep, int64_t k, __mmask16 t) {
  __m512 v = _mm512_maskz_loadu_ps(t, x + k);
  // split op: the outlier columns are zero for the int8 part (they set no scale either)
  if (keep) v = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_maskz_loadu_epi32(t, keep + k)));
  return v;
}

// One row -> K codes stored as u8 (q + 128, for vpdpbusd's unsigned operand), KP bytes.
template <int64_t K>
static inline void quantize_row(const float* x, uint8_t* q, float* xscale, const int32_t* keep) {
  constexpr int64_t KP = (K + 3) / 4 * 4;
  constexpr __mmask16 TAIL = (__mmask16)((1u << (K % 16)) - 1);
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16)
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(load_keep(x, keep, k, k + 16 <= K ? (__mmask16)0xFFFF : TAIL)));
  const float scale = row_scale(_mm512_reduce_max_ps(vmax));
  *xscale = scale;
  const __m512 vs = _mm512_set1_ps(scale), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512i off = _mm512_set1_epi32(128);
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 t = k + 16 <= K ? (__mmask16)0xFFFF : TAIL;
    const __m512 d = _mm512_div_ps(load_keep(x, keep, k, t), vs);  // a true division, as torch
    const __m512 r = _mm512_roundscale_ps(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi)), off);
    _mm512_mask_cvtepi32_storeu_epi8(q + k, t, i);
  }
  for (int64_t k = K; k < KP; ++k) q[k] = 128;  // code 0 (the padded weights are 0 anyway)
}

// The accumulators live only in this function (fully unrolled, so they stay in registers);
// each finished one goes to emit(i, j, acc).
template <int R, int64_t K4, class Emit>
static inline void micro(const uint8_t* xq, int64_t ldq, const int8_t* wp, const Emit& emit) {
  v16si acc[R][NR];
  SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) acc[i][j] = (v16si)_mm512_setzero_si512();
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const int8_t* wk = wp + k4 * (PW * 4);
    v16si b[NR];
    SPK_UNROLL for (int j = 0; j < NR; ++j) b[j] = (v16si)_mm512_loadu_si512((const void*)(wk + 64 * j));
    SPK_UNROLL for (int i = 0; i < R; ++i) {
      int32_t a;
      memcpy(&a, xq + i * ldq + 4 * k4, 4);
      const v16si va = (v16si)_mm512_set1_epi32(a);
      SPK_UNROLL for (int j = 0; j < NR; ++j) acc[i][j] = dp(acc[i][j], va, b[j]);
    }
  }
  SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) emit(i, j, (__m512i)acc[i][j]);
}

template <int64_t N, int64_t K, int MO, class Epi>
static void gemm_q(const uint8_t* xq, const float* xs, const float* x, int64_t M, int64_t ldx,
                   float* y, int64_t ldy, void* const* w, const float* bias, const Epi& epi) {
  constexpr int64_t K4 = (K + 3) / 4, KP = 4 * K4, NP = (N + PW - 1) / PW, NPAD = NP * PW;
  if (M <= 0) return;
  const int8_t* wq = (const int8_t*)w[0];
  const float* ws = (const float*)w[1];
  const int32_t* comp = (const int32_t*)w[2];
  const float* owT = MO ? (const float*)w[XB] : nullptr;
  const int32_t* oidx = MO ? (const int32_t*)w[XB + 1] : nullptr;
  parallel_tiles(NP, M, MR, M * NPAD * KP, [&](int64_t p, int64_t mb) {
    const int64_t mt = mb * MR, n0 = p * PW;
    Rows<MR>::run((int)min64(MR, M - mt), [&](auto rc, int off) {
      constexpr int R = decltype(rc)::value;
      const int64_t m0 = mt + off;
      alignas(64) float t[R][PW];
      micro<R, K4>(xq + m0 * KP, KP, wq + p * (K4 * PW * 4), [&](int i, int j, __m512i acc) {
        const int64_t n = n0 + 16 * j;
        // exact int32 result: the +128 shift of the activations contributed 128 * colsum
        const __m512i a = _mm512_sub_epi32(acc, _mm512_loadu_si512((const void*)(comp + n)));
        __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(xs[m0 + i])), _mm512_loadu_ps(ws + n));
        f = opaque(f);
        if (MO) {
          __m512 o = _mm512_setzero_ps();
          for (int jo = 0; jo < MO; ++jo)
            o = _mm512_fmadd_ps(_mm512_set1_ps(x[(m0 + i) * ldx + oidx[jo]]), _mm512_loadu_ps(owT + jo * NPAD + n), o);
          f = _mm512_add_ps(f, o);
        }
        _mm512_store_ps(&t[i][16 * j], f);
      });
      store_rows<PW>(&t[0][0], R, m0, n0, min64(PW, N - n0), bias, y, ldy, epi);
    });
  });
}

template <int64_t N, int64_t K, int MO, class Epi>
static void gemm(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w,
                 const float* bias, const Epi& epi) {
  constexpr int64_t KP = (K + 3) / 4 * 4;
  if (M <= 0) return;
  uint8_t* xq = (uint8_t*)scratch((size_t)(M * KP), 0);
  float* xs = (float*)scratch((size_t)M * sizeof(float), 1);
  const int32_t* keep = MO ? (const int32_t*)w[XB + 2] : nullptr;
  parallel_rows(M, M * K, [&](int64_t m) { quantize_row<K>(x + m * ldx, xq + m * KP, xs + m, keep); });
  gemm_q<N, K, MO>(xq, xs, x, M, ldx, y, ldy, w, bias, epi);
}

}  // namespace i8z
}  // namespace spk_gemm
#endif  // SPK_GEMM_I8Z
"""

_I8Y = r"""
#ifndef SPK_GEMM_I8Y
#define SPK_GEMM_I8Y
#if !defined(__AVX2__)
#error "spokeshave int8 kernel (isa avx2 / avx_vnni) needs -mavx2"
#endif
namespace spk_gemm {
namespace i8y {
// int8 x int8 on ymm. VNNI = true: vpdpbusd (avx_vnni, activations shifted to u8 as on
// zmm). VNNI = false (plain AVX2): vpmaddubsw multiplies u8 x s8 and adds pairs into
// SATURATING int16. The +128 shift would overflow it (255 * 127 * 2 > 32767), so instead
// we multiply |w| (u8; |-128| = 128 is still right unsigned) by x * sign(w) (s8; exact
// because the quantizer's codes are within +-127, so negating cannot wrap): each pair is
// at most 2 * 128 * 127 = 32512 < 32767, never saturates; vpmaddwd then sums pairs into
// int32. (llama.cpp's maddubs(|x|, sign(w, x)) needs |w| <= 127; this way round any int8
// weight is exact.)
template <bool VNNI> struct Dp;
template <> struct Dp<false> {
  static inline __m256i prep(__m256i b) { return _mm256_abs_epi8(b); }
  static inline v8si dot(v8si acc, __m256i a, __m256i b, __m256i babs) {
    const __m256i p = _mm256_maddubs_epi16(babs, _mm256_sign_epi8(a, b));
    return acc + (v8si)_mm256_madd_epi16(p, _mm256_set1_epi16(1));
  }
};
// 16 ymm registers: VNNI 4x3 accumulators + 3 weights + 1 broadcast; AVX2 4x2 + 2 weights
// + 2 |weights| + ones + broadcast + a temporary.
template <bool VNNI> struct Cfg {
  static constexpr int MR = 4, NR = VNNI ? 3 : 2, PW = 8 * NR, XB = VNNI ? 3 : 2;
};

static inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

static inline __m256 load_keep(const float* x, const int32_t* keep, int64_t k) {
  __m256 v = _mm256_loadu_ps(x + k);
  if (keep) v = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i*)(keep + k))));
  return v;
}

// One row -> K codes (u8 = q + 128 for VNNI, s8 otherwise), KP bytes.
template <bool VNNI, int64_t K>
static inline void quantize_row(const float* x, uint8_t* q, float* xscale, const int32_t* keep) {
  constexpr int64_t KP = (K + 3) / 4 * 4, KV = K / 8 * 8;
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  for (int64_t k = 0; k < KV; k += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(load_keep(x, keep, k), absmask));
  float amax = hmax(vmax);
  for (int64_t k = KV; k < K; ++k) {
    const float v = (keep && !keep[k]) ? 0.0f : fabsf(x[k]);
    amax = v > amax ? v : amax;
  }
  const float scale = row_scale(amax);
  *xscale = scale;
  const __m256 vs = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int64_t k = 0; k < KV; k += 8) {
    const __m256 d = _mm256_div_ps(load_keep(x, keep, k), vs);  // a true division, as torch
    const __m256 r = _mm256_round_ps(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256i i = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    if (VNNI) i = _mm256_add_epi32(i, _mm256_set1_epi32(128));
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    const __m128i b = VNNI ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16);
    _mm_storel_epi64((__m128i*)(q + k), b);
  }
  for (int64_t k = KV; k < K; ++k) {
    const int v = (keep && !keep[k]) ? 0 : quantize1(x[k], scale);
    q[k] = (uint8_t)(VNNI ? v + 128 : v);
  }
  for (int64_t k = K; k < KP; ++k) q[k] = VNNI ? 128 : 0;
}

template <bool VNNI, int R, int64_t K4, class Emit>
static inline void micro(const uint8_t* xq, int64_t ldq, const int8_t* wp, const Emit& emit) {
  constexpr int NR = Cfg<VNNI>::NR, PW = Cfg<VNNI>::PW;
  v8si acc[R][NR];
  SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) acc[i][j] = (v8si)_mm256_setzero_si256();
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const int8_t* wk = wp + k4 * (PW * 4);
    __m256i b[NR], bp[NR];
    SPK_UNROLL for (int j = 0; j < NR; ++j) {
      b[j] = _mm256_loadu_si256((const __m256i*)(wk + 32 * j));
      bp[j] = Dp<VNNI>::prep(b[j]);
    }
    SPK_UNROLL for (int i = 0; i < R; ++i) {
      int32_t a;
      memcpy(&a, xq + i * ldq + 4 * k4, 4);
      const __m256i va = _mm256_set1_epi32(a);
      SPK_UNROLL for (int j = 0; j < NR; ++j) acc[i][j] = Dp<VNNI>::dot(acc[i][j], va, b[j], bp[j]);
    }
  }
  SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) emit(i, j, (__m256i)acc[i][j]);
}

template <bool VNNI, int64_t N, int64_t K, int MO, class Epi>
static void gemm_q(const uint8_t* xq, const float* xs, const float* x, int64_t M, int64_t ldx,
                   float* y, int64_t ldy, void* const* w, const float* bias, const Epi& epi) {
  using C = Cfg<VNNI>;
  constexpr int MR = C::MR, NR = C::NR, PW = C::PW;
  constexpr int64_t K4 = (K + 3) / 4, KP = 4 * K4, NP = (N + PW - 1) / PW, NPAD = NP * PW;
  if (M <= 0) return;
  const int8_t* wq = (const int8_t*)w[0];
  const float* ws = (const float*)w[1];
  const int32_t* comp = VNNI ? (const int32_t*)w[2] : nullptr;
  const float* owT = MO ? (const float*)w[C::XB] : nullptr;
  const int32_t* oidx = MO ? (const int32_t*)w[C::XB + 1] : nullptr;
  parallel_tiles(NP, M, MR, M * NPAD * KP, [&](int64_t p, int64_t mb) {
    const int64_t mt = mb * MR, n0 = p * PW;
    Rows<MR>::run((int)min64(MR, M - mt), [&](auto rc, int off) {
      constexpr int R = decltype(rc)::value;
      const int64_t m0 = mt + off;
      alignas(32) float t[R][PW];
      micro<VNNI, R, K4>(xq + m0 * KP, KP, wq + p * (K4 * PW * 4), [&](int i, int j, __m256i a) {
        const int64_t n = n0 + 8 * j;
        if (VNNI) a = _mm256_sub_epi32(a, _mm256_loadu_si256((const __m256i*)(comp + n)));
        __m256 f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(xs[m0 + i])), _mm256_loadu_ps(ws + n));
        f = opaque(f);
        if (MO) {
          __m256 o = _mm256_setzero_ps();
          for (int jo = 0; jo < MO; ++jo)
            // mul + add, not _mm256_fmadd_ps: an AVX2 target need not list FMA
            o = _mm256_add_ps(o, _mm256_mul_ps(_mm256_set1_ps(x[(m0 + i) * ldx + oidx[jo]]), _mm256_loadu_ps(owT + jo * NPAD + n)));
          f = _mm256_add_ps(f, o);
        }
        _mm256_store_ps(&t[i][8 * j], f);
      });
      store_rows<PW>(&t[0][0], R, m0, n0, min64(PW, N - n0), bias, y, ldy, epi);
    });
  });
}

template <bool VNNI, int64_t N, int64_t K, int MO, class Epi>
static void gemm(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w,
                 const float* bias, const Epi& epi) {
  constexpr int64_t KP = (K + 3) / 4 * 4;
  if (M <= 0) return;
  uint8_t* xq = (uint8_t*)scratch((size_t)(M * KP), 0);
  float* xs = (float*)scratch((size_t)M * sizeof(float), 1);
  const int32_t* keep = MO ? (const int32_t*)w[Cfg<VNNI>::XB + 2] : nullptr;
  parallel_rows(M, M * K, [&](int64_t m) { quantize_row<VNNI, K>(x + m * ldx, xq + m * KP, xs + m, keep); });
  gemm_q<VNNI, N, K, MO>(xq, xs, x, M, ldx, y, ldy, w, bias, epi);
}

}  // namespace i8y
}  // namespace spk_gemm
#endif  // SPK_GEMM_I8Y
"""

_I8Y_VNNI = r"""
#ifndef SPK_GEMM_I8Y_VNNI
#define SPK_GEMM_I8Y_VNNI
#if !defined(__AVXVNNI__)
#error "spokeshave int8 kernel (isa avx_vnni) needs -mavxvnni"
#endif
namespace spk_gemm {
namespace i8y {
template <> struct Dp<true> {
  static inline __m256i prep(__m256i b) { return b; }
  static inline v8si dot(v8si acc, __m256i a, __m256i b, __m256i) {
#if defined(__GNUC__) && !defined(__clang__)
    return __builtin_ia32_vpdpbusd_v8si(acc, (v8si)a, (v8si)b);  // see v16si in the prelude
#else
    return (v8si)_mm256_dpbusd_avx_epi32((__m256i)acc, a, b);
#endif
  }
};
}  // namespace i8y
}  // namespace spk_gemm
#endif  // SPK_GEMM_I8Y_VNNI
"""

_I8S = r"""
#ifndef SPK_GEMM_I8S
#define SPK_GEMM_I8S
namespace spk_gemm {
namespace i8s {
// Portable int8 x int8: the stored [N][K] int8 weight, s8 activations, int32 dot products
// (the compiler vectorises what the target allows).
constexpr int PW = 64, XB = 2;  // w[]: qweight [N][K], scale [N], then owT, oindex, keep

template <int64_t K>
static inline void quantize_row(const float* x, uint8_t* q, float* xscale, const int32_t* keep) {
  float amax = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    const float v = (keep && !keep[k]) ? 0.0f : fabsf(x[k]);
    amax = v > amax ? v : amax;
  }
  const float scale = row_scale(amax);
  *xscale = scale;
  for (int64_t k = 0; k < K; ++k) q[k] = (uint8_t)(int8_t)((keep && !keep[k]) ? 0 : quantize1(x[k], scale));
  for (int64_t k = K; k < (K + 3) / 4 * 4; ++k) q[k] = 0;
}

template <int64_t N, int64_t K, int MO, class Epi>
static void gemm_q(const uint8_t* xq, const float* xs, const float* x, int64_t M, int64_t ldx,
                   float* y, int64_t ldy, void* const* w, const float* bias, const Epi& epi) {
  constexpr int64_t KP = (K + 3) / 4 * 4, NP = (N + PW - 1) / PW;
  if (M <= 0) return;
  const int8_t* wq = (const int8_t*)w[0];
  const float* ws = (const float*)w[1];
  const float* owT = MO ? (const float*)w[XB] : nullptr;
  const int32_t* oidx = MO ? (const int32_t*)w[XB + 1] : nullptr;
  parallel_tiles(NP, M, 1, M * N * K, [&](int64_t p, int64_t m) {
    const int64_t n0 = p * PW, nc = min64(PW, N - n0);
    const int8_t* a = (const int8_t*)(xq + m * KP);
    float t[PW];
    for (int64_t c = 0; c < nc; ++c) {
      const int8_t* b = wq + (n0 + c) * K;
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (int32_t)a[k] * (int32_t)b[k];
      float f = opaque((float)acc * xs[m] * ws[n0 + c]);
      if (MO) {
        float o = 0.0f;
        for (int jo = 0; jo < MO; ++jo) o += x[m * ldx + oidx[jo]] * owT[jo * N + n0 + c];
        f = f + o;
      }
      t[c] = f;
    }
    store_rows<PW>(t, 1, m, n0, nc, bias, y, ldy, epi);
  });
}

template <int64_t N, int64_t K, int MO, class Epi>
static void gemm(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w,
                 const float* bias, const Epi& epi) {
  constexpr int64_t KP = (K + 3) / 4 * 4;
  if (M <= 0) return;
  uint8_t* xq = (uint8_t*)scratch((size_t)(M * KP), 0);
  float* xs = (float*)scratch((size_t)M * sizeof(float), 1);
  const int32_t* keep = MO ? (const int32_t*)w[XB + 2] : nullptr;
  parallel_rows(M, M * K, [&](int64_t m) { quantize_row<K>(x + m * ldx, xq + m * KP, xs + m, keep); });
  gemm_q<N, K, MO>(xq, xs, x, M, ldx, y, ldy, w, bias, epi);
}

}  // namespace i8s
}  // namespace spk_gemm
#endif  // SPK_GEMM_I8S
"""

_WOZ = r"""
#ifndef SPK_GEMM_WOZ
#define SPK_GEMM_WOZ
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX2__)
#error "spokeshave weight-only kernel (isa avx512) needs -mavx512f -mavx512bw"
#endif
namespace spk_gemm {
namespace woz {
// Weight-only on zmm: the weight is decoded to float in registers, 16 columns per vector,
// and multiplied by broadcast activations (folded into the FMA's memory operand). A format
// F provides MR, NR (tile = MR rows x 16*NR columns), NW (its packed tensors) and
// tile<R, K>(), which leaves the tile's values (scale applied) in `out`.

// Few rows leave few independent FMA chains (latency 4, two ports): split the k loop over
// KU accumulator sets then.
template <int R> struct Ku { static constexpr int value = R <= 2 ? 2 : 1; };

static inline __m512 dec_i8(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
// e4m3fn S.EEEE.MMM moved into fp16 as S.0EEEE.MMM0000000 is the same number times 2^-8,
// normals and subnormals alike (exponent bias 7 vs 15, and fp16's subnormal step 2^-24 is
// e4m3's 2^-9 times 2^-8 too); the 2^8 is folded into the packed scale, vcvtph2ps is exact. (NaN codes, which the
// quantizer never writes, decode as +-480.)
static inline __m512 dec_f8(const uint8_t* p) {
  const __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)p));  // sign-extended
  return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xBFFF)));
}

// w8 / fp8: [P][K][PW] bytes, per-column scale [NPAD].
template <bool F8> struct PerChannel {
  static constexpr int MR = 8, NR = 3, PW = 16 * NR, NW = 2;
  template <int64_t K> static const float* prologue(const float*, int64_t, int64_t) { return nullptr; }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float*,
                          int64_t m0, __m512 (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    const uint8_t* wp = (const uint8_t*)w[0] + p * K * PW;
    const float* s = (const float*)w[1] + p * PW;
    const float* xr = x + m0 * ldx;
    __m512 a[KU][R][NR];
    SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
      SPK_UNROLL for (int j = 0; j < NR; ++j) a[u][i][j] = _mm512_setzero_ps();
    auto step = [&](int64_t k, int u) __attribute__((always_inline)) {
      __m512 b[NR];
      SPK_UNROLL for (int j = 0; j < NR; ++j) b[j] = F8 ? dec_f8(wp + k * PW + 16 * j) : dec_i8(wp + k * PW + 16 * j);
      SPK_UNROLL for (int i = 0; i < R; ++i) {
        const __m512 xv = _mm512_set1_ps(xr[i * ldx + k]);
        SPK_UNROLL for (int j = 0; j < NR; ++j) a[u][i][j] = _mm512_fmadd_ps(xv, b[j], a[u][i][j]);
      }
    };
    int64_t k = 0;
    for (; k + KU <= K; k += KU) { SPK_UNROLL for (int u = 0; u < KU; ++u) step(k + u, u); }
    if (K % KU) step(K - 1, 0);
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) {
      const __m512 v = KU == 2 ? _mm512_add_ps(a[0][i][j], a[KU - 1][i][j]) : a[0][i][j];
      out[i][j] = _mm512_mul_ps(v, _mm512_loadu_ps(s + 16 * j));
    }
  }
};

// w4g: [P][K/2][PW] bytes (low nibble = even k), scales (and zeros) [P][K/G][PW]. Per
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
          const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(wp + j * PW + 16 * c)));
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

// 2:4: per group of 4 k, the two kept values of 16 columns ([P][K/4][2][PW] floats) and
// their positions ([P][K/4][PW] bytes, i0 | i1 << 2). x[4g..4g+3] is broadcast to every
// 128-bit lane and vpermilps picks each column's x by its 2-bit position (it reads only the
// low 2 bits). Only the kept half of the weight is read.
struct S24 {
  static constexpr int MR = 6, NR = 2, PW = 16 * NR, NW = 2;
  template <int64_t K> static const float* prologue(const float*, int64_t, int64_t) { return nullptr; }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float*,
                          int64_t m0, __m512 (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    constexpr int64_t NG = K / 4;
    const float* vp = (const float*)w[0] + p * NG * 2 * PW;
    const uint8_t* ip = (const uint8_t*)w[1] + p * NG * PW;
    const float* xr = x + m0 * ldx;
    __m512 a[KU][R][NR];
    SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
      SPK_UNROLL for (int c = 0; c < NR; ++c) a[u][i][c] = _mm512_setzero_ps();
    for (int64_t g = 0; g < NG; ++g) {
      __m512 v0[NR], v1[NR];
      __m512i i0[NR], i1[NR];
      SPK_UNROLL for (int c = 0; c < NR; ++c) {
        v0[c] = _mm512_loadu_ps(vp + (2 * g) * PW + 16 * c);
        v1[c] = _mm512_loadu_ps(vp + (2 * g + 1) * PW + 16 * c);
        i0[c] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(ip + g * PW + 16 * c)));
        i1[c] = _mm512_srli_epi32(i0[c], 2);
      }
      SPK_UNROLL for (int i = 0; i < R; ++i) {
        const __m512 xb = _mm512_broadcast_f32x4(_mm_loadu_ps(xr + i * ldx + 4 * g));
        SPK_UNROLL for (int c = 0; c < NR; ++c) {
          a[0][i][c] = _mm512_fmadd_ps(_mm512_permutevar_ps(xb, i0[c]), v0[c], a[0][i][c]);
          a[KU - 1][i][c] = _mm512_fmadd_ps(_mm512_permutevar_ps(xb, i1[c]), v1[c], a[KU - 1][i][c]);
        }
      }
    }
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int c = 0; c < NR; ++c)
      out[i][c] = KU == 2 ? _mm512_add_ps(a[0][i][c], a[KU - 1][i][c]) : a[0][i][c];
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
      __m512 v[R][NR];
      F::template tile<R, K>(x, ldx, p, w, pre, m0, v);
      alignas(64) float t[R][PW];
      SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) {
        __m512 f = v[i][j];
        if (MO) {
          for (int jo = 0; jo < MO; ++jo)
            f = _mm512_fmadd_ps(_mm512_set1_ps(x[(m0 + i) * ldx + oidx[jo]]), _mm512_loadu_ps(owT + jo * NPAD + n0 + 16 * j), f);
        }
        _mm512_store_ps(&t[i][16 * j], f);
      }
      store_rows<PW>(&t[0][0], R, m0, n0, min64(PW, N - n0), bias, y, ldy, epi);
    });
  });
}

}  // namespace woz
}  // namespace spk_gemm
#endif  // SPK_GEMM_WOZ
"""

_WOY = r"""
#ifndef SPK_GEMM_WOY
#define SPK_GEMM_WOY
#if !defined(__AVX2__) || !defined(__FMA__)
#error "spokeshave weight-only kernel (isa avx2) needs -mavx2 -mfma"
#endif
namespace spk_gemm {
namespace woy {
// Weight-only on ymm + FMA, the same scheme as the zmm kernels with 8 columns per vector.
template <int R> struct Ku { static constexpr int value = R <= 2 ? 2 : 1; };

static inline __m256 dec_i8(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}
// e4m3fn by integer arithmetic (F16C is not assumed on an AVX2 target): a normal code's
// float bits are its 7 magnitude bits << 20 with the exponent rebiased by 120; a subnormal
// (exponent 0) is m * 2^-9. (NaN codes, never written by the quantizer, decode as +-480.)
static inline __m256 dec_f8(const uint8_t* p) {
  const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p));  // bit 31 = sign
  const __m256i mag = _mm256_and_si256(v, _mm256_set1_epi32(0x7F));
  const __m256i sign = _mm256_and_si256(v, _mm256_set1_epi32((int)0x80000000u));
  const __m256i nrm = _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23));
  const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(1.0f / 512.0f));
  const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag);
  const __m256 r = _mm256_blendv_ps(_mm256_castsi256_ps(nrm), sub, _mm256_castsi256_ps(is_sub));
  return _mm256_or_ps(r, _mm256_castsi256_ps(sign));
}

template <bool F8> struct PerChannel {
  static constexpr int MR = 6, NR = 2, PW = 8 * NR, NW = 2;
  template <int64_t K> static const float* prologue(const float*, int64_t, int64_t) { return nullptr; }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float*,
                          int64_t m0, __m256 (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    const uint8_t* wp = (const uint8_t*)w[0] + p * K * PW;
    const float* s = (const float*)w[1] + p * PW;
    const float* xr = x + m0 * ldx;
    __m256 a[KU][R][NR];
    SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
      SPK_UNROLL for (int j = 0; j < NR; ++j) a[u][i][j] = _mm256_setzero_ps();
    auto step = [&](int64_t k, int u) __attribute__((always_inline)) {
      __m256 b[NR];
      SPK_UNROLL for (int j = 0; j < NR; ++j) b[j] = F8 ? dec_f8(wp + k * PW + 8 * j) : dec_i8(wp + k * PW + 8 * j);
      SPK_UNROLL for (int i = 0; i < R; ++i) {
        const __m256 xv = _mm256_set1_ps(xr[i * ldx + k]);
        SPK_UNROLL for (int j = 0; j < NR; ++j) a[u][i][j] = _mm256_fmadd_ps(xv, b[j], a[u][i][j]);
      }
    };
    int64_t k = 0;
    for (; k + KU <= K; k += KU) { SPK_UNROLL for (int u = 0; u < KU; ++u) step(k + u, u); }
    if (K % KU) step(K - 1, 0);
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) {
      const __m256 v = KU == 2 ? _mm256_add_ps(a[0][i][j], a[KU - 1][i][j]) : a[0][i][j];
      out[i][j] = _mm256_mul_ps(v, _mm256_loadu_ps(s + 8 * j));
    }
  }
};

// w4g: the exact decoded weight (u - z) * s (what the reference multiplies by) in
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
          const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(wp + j * PW + 8 * c)));
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

// 2:4 as on zmm: vpermilps picks x[4g + position] within each 128-bit lane.
struct S24 {
  static constexpr int MR = 4, NR = 2, PW = 8 * NR, NW = 2;
  template <int64_t K> static const float* prologue(const float*, int64_t, int64_t) { return nullptr; }
  template <int R, int64_t K>
  static inline void tile(const float* x, int64_t ldx, int64_t p, void* const* w, const float*,
                          int64_t m0, __m256 (&out)[R][NR]) {
    constexpr int KU = Ku<R>::value;
    constexpr int64_t NG = K / 4;
    const float* vp = (const float*)w[0] + p * NG * 2 * PW;
    const uint8_t* ip = (const uint8_t*)w[1] + p * NG * PW;
    const float* xr = x + m0 * ldx;
    __m256 a[KU][R][NR];
    SPK_UNROLL for (int u = 0; u < KU; ++u) SPK_UNROLL for (int i = 0; i < R; ++i)
      SPK_UNROLL for (int c = 0; c < NR; ++c) a[u][i][c] = _mm256_setzero_ps();
    for (int64_t g = 0; g < NG; ++g) {
      __m256i i0[NR], i1[NR];
      SPK_UNROLL for (int c = 0; c < NR; ++c) {
        i0[c] = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(ip + g * PW + 8 * c)));
        i1[c] = _mm256_srli_epi32(i0[c], 2);
      }
      SPK_UNROLL for (int i = 0; i < R; ++i) {
        const __m256 xb = _mm256_broadcast_ps((const __m128*)(xr + i * ldx + 4 * g));
        SPK_UNROLL for (int c = 0; c < NR; ++c) {
          a[0][i][c] = _mm256_fmadd_ps(_mm256_permutevar_ps(xb, i0[c]), _mm256_loadu_ps(vp + (2 * g) * PW + 8 * c), a[0][i][c]);
          a[KU - 1][i][c] = _mm256_fmadd_ps(_mm256_permutevar_ps(xb, i1[c]), _mm256_loadu_ps(vp + (2 * g + 1) * PW + 8 * c), a[KU - 1][i][c]);
        }
      }
    }
    SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int c = 0; c < NR; ++c)
      out[i][c] = KU == 2 ? _mm256_add_ps(a[0][i][c], a[KU - 1][i][c]) : a[0][i][c];
  }
};

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
      __m256 v[R][NR];
      F::template tile<R, K>(x, ldx, p, w, pre, m0, v);
      alignas(32) float t[R][PW];
      SPK_UNROLL for (int i = 0; i < R; ++i) SPK_UNROLL for (int j = 0; j < NR; ++j) {
        __m256 f = v[i][j];
        if (MO) {
          for (int jo = 0; jo < MO; ++jo)
            f = _mm256_fmadd_ps(_mm256_set1_ps(x[(m0 + i) * ldx + oidx[jo]]), _mm256_loadu_ps(owT + jo * NPAD + n0 + 8 * j), f);
        }
        _mm256_store_ps(&t[i][8 * j], f);
      }
      store_rows<PW>(&t[0][0], R, m0, n0, min64(PW, N - n0), bias, y, ldy, epi);
    });
  });
}

}  // namespace woy
}  // namespace spk_gemm
#endif  // SPK_GEMM_WOY
"""

_WOS = r"""
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
def _fp8_table() -> str:
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
_PW = {
    ("i8", "avx512_vnni"): 64, ("i8", "avx_vnni"): 24, ("i8", "avx2"): 16,
    ("w8", "avx512"): 48, ("fp8", "avx512"): 48, ("w4g", "avx512"): 32, ("s24", "avx512"): 32,
    ("w8", "avx2"): 16, ("fp8", "avx2"): 16, ("w4g", "avx2"): 16, ("s24", "avx2"): 16,
}

_I8_NS = {"avx512_vnni": ("spk_gemm::i8z", "", "spk_gemm::i8z::PW"),
          "avx_vnni": ("spk_gemm::i8y", "true, ", "spk_gemm::i8y::Cfg<true>::PW"),
          "avx2": ("spk_gemm::i8y", "false, ", "spk_gemm::i8y::Cfg<false>::PW"),
          "scalar": ("spk_gemm::i8s", "", None)}
_I8_BLOCKS = {"avx512_vnni": (_PRELUDE, _I8Z), "avx_vnni": (_PRELUDE, _I8Y, _I8Y_VNNI),
              "avx2": (_PRELUDE, _I8Y), "scalar": (_PRELUDE, _I8S)}
_WO_BLOCKS = {"avx512": (_PRELUDE, _WOZ), "avx2": (_PRELUDE, _WOY), "scalar": None}
_WO_NS = {"avx512": "spk_gemm::woz", "avx2": "spk_gemm::woy", "scalar": "spk_gemm::wos"}

_SIG = "const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w, const float* bias, Epi epi"
_ARGS = "x, M, ldx, y, ldy, w, bias, epi"


# ---------------------------------------------------------------------------- ISA choice


def int8_isa(target: Target) -> str:
    """The int8 x int8 path for `target`: zmm VNNI, ymm VNNI, AVX2 or scalar."""
    f = target.features
    if target.arch != "x86_64":
        return "scalar"
    if {"avx512f", "avx512bw", "avx512_vnni"} <= f:
        return "avx512_vnni"
    if {"avx2", "avx_vnni"} <= f:
        return "avx_vnni"
    if "avx2" in f:
        return "avx2"
    return "scalar"


def weight_only_isa(target: Target) -> str:
    """The float-activation path for `target`: zmm, ymm + FMA, or scalar."""
    f = target.features
    if target.arch != "x86_64":
        return "scalar"
    if {"avx512f", "avx512bw", "avx2"} <= f:
        return "avx512"
    if {"avx2", "fma"} <= f:
        return "avx2"
    return "scalar"


# ---------------------------------------------------------------------------- packing


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """`t` [N, ...] zero-padded to `rows` rows (padded columns compute zeros, never stored)."""
    if t.shape[0] == rows:
        return t
    out = torch.zeros((rows,) + tuple(t.shape[1:]), dtype=t.dtype)
    out[:t.shape[0]] = t
    return out


def _panels(t: torch.Tensor, pw: int) -> torch.Tensor:
    """[N, L, ...] -> [N/pw, L, pw, ...]: column panels, the columns innermost per k."""
    npad = -(-t.shape[0] // pw) * pw
    t = _pad_rows(t, npad)
    t = t.reshape((npad // pw, pw) + tuple(t.shape[1:]))
    return t.transpose(1, 2).contiguous()


def _pack_k4(q: torch.Tensor, pw: int) -> torch.Tensor:
    """int8 [N, K] -> [N/pw][K/4][pw][4] (vpdpbusd's 4-byte lanes), K padded with zeros."""
    n, k = q.shape
    kp = -(-k // 4) * 4
    qp = torch.zeros((n, kp), dtype=torch.int8)
    qp[:, :k] = q
    return _panels(qp.reshape(n, kp // 4, 4), pw)


def _padded_vec(v: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return _pad_rows(v.to(dtype).reshape(-1), n).contiguous()


def _split_extras(oweight: torch.Tensor, oindex: torch.Tensor, n: int, k: int, npad: int,
                  with_keep: bool) -> tuple[torch.Tensor, ...]:
    """The outlier part: owT [MO, npad] float32, oindex int32 [MO], (int8 act) keep mask [K]
    (-1 for ordinary columns, 0 for outliers: the activation quantizer zeroes those)."""
    owT = torch.zeros((oweight.shape[1], npad), dtype=torch.float32)
    owT[:, :n] = oweight.float().t()
    out = [owT.contiguous(), oindex.to(torch.int32).contiguous()]
    if with_keep:
        keep = torch.full((k,), -1, dtype=torch.int32)
        keep[oindex] = 0
        out.append(keep)
    return tuple(out)


def _dedupe_last(oweight: torch.Tensor, oindex: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`split_weight` assigns `w[:, oindex] = oweight`: with a repeated index only one
    column lands (the last, as torch's CPU index_put_ writes in order). Keep that one, so
    a kernel that adds the outlier columns does not count it twice."""
    idx = oindex.tolist()
    last = {c: j for j, c in enumerate(idx)}
    keep = sorted(last.values())
    if len(keep) == len(idx):
        return oweight, oindex
    sel = torch.tensor(keep, dtype=torch.int64)
    return oweight[:, sel], oindex[sel]


# ---------------------------------------------------------------------------- builders


def _guarded(symbol: str, body: str) -> str:
    return f"#ifndef SPK_{symbol}\n#define SPK_{symbol}\n{body}#endif  // SPK_{symbol}\n"


def _int8_act_kernel(op_name: str, qweight: torch.Tensor, scale: torch.Tensor,
                     extras: tuple[torch.Tensor, torch.Tensor] | None, isa: str) -> GemmKernel:
    """w8a8 (extras None) or w8a8_split (extras = oweight, oindex)."""
    n, k = qweight.shape
    q = qweight.contiguous()
    kp = -(-k // 4) * 4
    if isa == "scalar":
        npad = n
        packed: list[torch.Tensor] = [q, scale.float().contiguous()]
    else:
        pw = _PW[("i8", isa)]
        npad = -(-n // pw) * pw
        packed = [_pack_k4(q, pw), _padded_vec(scale, npad, torch.float32)]
        if isa in ("avx512_vnni", "avx_vnni"):
            # activations enter vpdpbusd as u8 = q + 128; subtract 128 * colsum(w) in int32
            packed.append(_padded_vec(128 * q.to(torch.int32).sum(dim=1), npad, torch.int32))
    mo = 0
    if extras is not None:
        mo = int(extras[1].numel())
        if mo:
            packed += _split_extras(extras[0], extras[1], n, k, npad, with_keep=True)
    ns, tmpl, pw_expr = _I8_NS[isa]
    tag = "w8a8" if extras is None else "w8a8split"
    symbol = f"spk_gemm_{tag}_{isa}_n{n}_k{k}" + (f"_o{mo}" if mo else "")
    keep = f"(const int32_t*)w[{len(packed) - 1}]" if mo else "nullptr"
    body = ""
    if pw_expr is not None:
        body += f"static_assert({pw_expr} == {_PW[('i8', isa)]}, \"panel width out of sync with gemm.py\");\n"
    body += (
        f"// {op_name}, N={n}, K={k}, {mo} outlier columns, isa {isa}; quantized rows are {kp} bytes\n"
        f"static inline void {symbol}_quantize_row(const float* x_row, void* q_row, float* xscale, void* const* w) {{\n"
        f"  (void)w;\n  {ns}::quantize_row<{tmpl}{k}>(x_row, (uint8_t*)q_row, xscale, {keep});\n}}\n")
    if not mo:
        body += (f"static inline void {symbol}_quantize_row(const float* x_row, void* q_row, float* xscale) {{\n"
                 f"  {ns}::quantize_row<{tmpl}{k}>(x_row, (uint8_t*)q_row, xscale, nullptr);\n}}\n")
    body += (
        f"template <class Epi>\nstatic void {symbol}_q(const void* xq, const float* xscale, const float* x, int64_t M, "
        f"int64_t ldx, float* y, int64_t ldy, void* const* w, const float* bias, Epi epi) {{\n"
        f"  {ns}::gemm_q<{tmpl}{n}, {k}, {mo}>((const uint8_t*)xq, xscale, x, M, ldx, y, ldy, w, bias, epi);\n}}\n"
        f"template <class Epi>\nstatic void {symbol}({_SIG}) {{\n"
        f"  {ns}::gemm<{tmpl}{n}, {k}, {mo}>({_ARGS});\n}}\n")
    source = "".join(_I8_BLOCKS[isa]) + _guarded(symbol, body)
    return GemmKernel(op_name, symbol, source, isa, tuple(packed), n, k, kp)


def _weight_only_kernel(op_name: str, fmt: str, fmt_args: str, base: list[torch.Tensor],
                        n: int, k: int, isa: str, extras: tuple[torch.Tensor, torch.Tensor] | None,
                        tag: str) -> GemmKernel:
    """Shared tail of the weight-only builders: split extras, symbol, wrapper, source."""
    npad = n if isa == "scalar" else -(-n // _PW[(fmt, isa)]) * _PW[(fmt, isa)]
    packed = list(base)
    mo = 0
    if extras is not None and extras[1].numel():
        mo = int(extras[1].numel())
        packed += _split_extras(extras[0], extras[1], n, k, npad, with_keep=False)
    ns = _WO_NS[isa]
    struct = {"w8": "PerChannel<false>", "fp8": "PerChannel<true>", "w4g": f"W4<{fmt_args}>",
              "s24": "S24"}[fmt]
    if isa == "scalar":
        struct = {"w8": "W8", "fp8": "F8", "w4g": f"W4<{fmt_args}>", "s24": "S24"}[fmt]
    symbol = f"spk_gemm_{tag}_{isa}_n{n}_k{k}" + (f"_o{mo}" if mo else "")
    body = ""
    if isa != "scalar":
        body += (f"static_assert({ns}::{struct}::PW == {_PW[(fmt, isa)]}, "
                 f"\"panel width out of sync with gemm.py\");\n")
    body += (f"// {op_name}, N={n}, K={k}, {mo} outlier columns, isa {isa}\n"
             f"template <class Epi>\nstatic void {symbol}({_SIG}) {{\n"
             f"  {ns}::gemm<{ns}::{struct}, {n}, {k}, {mo}>({_ARGS});\n}}\n")
    blocks = _WO_BLOCKS[isa] or (_PRELUDE, _fp8_table(), _WOS)
    source = "".join(blocks) + _guarded(symbol, body)
    return GemmKernel(op_name, symbol, source, isa, tuple(packed), n, k, 0)


def _per_channel_base(q: torch.Tensor, scale: torch.Tensor, fmt: str, isa: str) -> list[torch.Tensor]:
    """w8 / fp8 weight and scale in `isa`'s layout (q as bytes)."""
    qb = q.contiguous().view(torch.uint8) if q.dtype == torch.float8_e4m3fn else q.contiguous()
    if isa == "scalar":
        return [qb, scale.float().contiguous()]
    s = scale.float()
    if fmt == "fp8" and isa == "avx512":
        s = s * 256.0  # dec_f8 yields value * 2^-8 (exact power-of-two rescale)
    pw = _PW[(fmt, isa)]
    return [_panels(qb, pw), _padded_vec(s, -(-q.shape[0] // pw) * pw, torch.float32)]


def _build_w8(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    q, scale = w
    if q.dtype != torch.int8:
        return None
    isa = weight_only_isa(target)
    n, k = q.shape
    return _weight_only_kernel(op.name, "w8", "", _per_channel_base(q, scale, "w8", isa), n, k, isa, None, "w8")


def _build_fp8(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    q, scale = w
    if q.dtype != torch.float8_e4m3fn:
        return None
    isa = weight_only_isa(target)
    n, k = q.shape
    return _weight_only_kernel(op.name, "fp8", "", _per_channel_base(q, scale, "fp8", isa), n, k, isa, None, "fp8")


def _build_w4g(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    group, sym = op.attributes.get("group"), op.attributes.get("symmetric")
    if not isinstance(group, int) or not isinstance(sym, bool) or len(w) != (2 if sym else 3):
        return None
    q, scale = w[0], w[1]
    n, half = q.shape
    k = 2 * half
    if q.dtype != torch.uint8 or group <= 0 or group % 2 or k % group or tuple(scale.shape) != (n, k // group):
        return None
    isa = weight_only_isa(target)
    if isa == "scalar":
        base = [q.contiguous(), scale.float().contiguous()] + ([] if sym else [w[2].to(torch.uint8).contiguous()])
    else:
        pw = _PW[("w4g", isa)]
        base = [_panels(q.contiguous(), pw), _panels(scale.float(), pw)]
        if not sym:
            base.append(_panels(w[2].float(), pw))
    tag = f"w4g{group}{'s' if sym else 'a'}"
    args = f"{group}, {'true' if sym else 'false'}"
    return _weight_only_kernel(op.name, "w4g", args, base, n, k, isa, None, tag)


def _build_sparse24(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    values, meta = w
    if values.dtype != torch.float32 or meta.dtype != torch.uint8:
        return None
    n, half = values.shape
    k = 2 * half
    if k % 4:
        return None
    isa = weight_only_isa(target)
    if isa == "scalar":
        base = [values.contiguous(), meta.contiguous()]
    else:
        pw = _PW[("s24", isa)]
        m = meta.to(torch.int64)
        nib = torch.stack([m & 0xF, m >> 4], dim=-1).reshape(n, -1)[:, :k // 4].to(torch.uint8)
        base = [_panels(values.reshape(n, k // 4, 2), pw).transpose(2, 3).contiguous(), _panels(nib, pw)]
    return _weight_only_kernel(op.name, "s24", "", base, n, k, isa, None, "s24")


def _split_operands(w: list[torch.Tensor]):
    q, scale, oweight, oindex = w
    n, k = q.shape
    if (q.dtype != torch.int8 or oindex.dtype != torch.int64 or oweight.dim() != 2
            or oweight.shape[0] != n or oweight.shape[1] != oindex.numel()):
        return None
    if oindex.numel() and (int(oindex.min()) < 0 or int(oindex.max()) >= k):
        return None
    return q, scale, oweight, oindex


def _build_w8a8(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    q, scale = w
    if q.dtype != torch.int8:
        return None
    return _int8_act_kernel(op.name, q, scale, None, int8_isa(target))


def _build_w8a8_split(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    ops = _split_operands(w)
    if ops is None or ops[2].dtype != torch.float32:
        return None  # the outlier GEMM runs in oweight's dtype; only float32 is ours
    q, scale, oweight, oindex = ops
    # the int8 part reads x with the outlier columns zeroed, so their codes never matter
    return _int8_act_kernel(op.name, q, scale, (oweight, oindex), int8_isa(target))


def _build_w8_split(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    ops = _split_operands(w)
    if ops is None or not ops[2].is_floating_point():
        return None
    q, scale, oweight, oindex = ops
    oweight, oindex = _dedupe_last(oweight, oindex)
    # split_weight overwrites the outlier columns of the dequantized weight: zero them in
    # the int8 part and add x[:, oindex] @ oweight^T in the epilogue
    q = q.clone()
    q[:, oindex] = 0
    isa = weight_only_isa(target)
    n, k = q.shape
    return _weight_only_kernel(op.name, "w8", "", _per_channel_base(q, scale, "w8", isa), n, k, isa,
                               (oweight, oindex), "w8split")


_BUILDERS = {
    "spk.linear_w8": _build_w8,
    "spk.linear_w8a8": _build_w8a8,
    "spk.linear_fp8": _build_fp8,
    "spk.linear_w4g": _build_w4g,
    "spk.linear_sparse24": _build_sparse24,
    "spk.linear_w8a8_split": _build_w8a8_split,
    "spk.linear_w8_split": _build_w8_split,
}

SUPPORTED_OPS = tuple(_BUILDERS)


def gemm_kernel(op: Op, weights: list[torch.Tensor], target: Target) -> GemmKernel | None:
    """The kernel for compressed linear `op` with its weight-role tensors `weights` (operand
    order, bias excluded: its pointer is passed at run time), generated for `target`.

    None when there is no kernel (an op without one, a non-f32 input or bias, a weight of
    an unexpected dtype or shape): the caller then falls back to the reference path."""
    build = _BUILDERS.get(op.name)
    d = op_def(op.name)
    if build is None or d is None or not op.operands:
        return None
    x = op.operands[0].type
    if not isinstance(x, TensorType) or x.dtype != "f32":
        return None
    try:
        bound = d.bind(op)
    except Exception:  # an op that does not fit its record is not ours to compile
        return None
    if len(bound.positions_of(WEIGHT)) != len(weights):
        return None
    for i in bound.positions_of("bias"):
        b = op.operands[i].type
        if not isinstance(b, TensorType) or b.dtype != "f32":
            return None
    weights = [t.detach().cpu() for t in weights]
    if weights[0].dim() != 2 or 0 in weights[0].shape:
        return None
    return build(op, weights, target)
