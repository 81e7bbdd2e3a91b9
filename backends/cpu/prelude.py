"""The C++ prelude every generated translation unit starts with.

Transcendentals are written out as branch-free polynomials (`spk_exp` is Cephes' expf,
`spk_erf` the rational minimax form of Eigen's and XLA's float erf), so GCC and Clang
vectorise the loops that call them; `std::exp`/`erff` calls would keep every fused loop
scalar (glibc's vector math needs -ffast-math, which would break IEEE semantics elsewhere).
Their error is ~1 ulp for exp and below 3.7e-7 absolute for erf (torch's vectorised CPU
erf, Abramowitz-Stegun 7.1.26 through an exp, is within 5e-7 and costs three times as much
in a GEMM's GELU epilogue), inside the 1e-5 relative tolerance the differential tests state
for float paths.
"""
from __future__ import annotations

PRELUDE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <omp.h>
#ifndef SPK_PRELUDE
#define SPK_PRELUDE
static inline float spk_bits_to_float(int32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline float spk_exp(float x) {
  // Cephes expf: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n by bits.
  // clamps as selects: fminf/fmaxf (NaN rules) keep GCC from vectorising the loop
  float xc = x < -87.33654f ? -87.33654f : (x > 88.37626f ? 88.37626f : x);
  float n = rintf(xc * 1.44269504088896341f);
  float r = fmaf(n, -0.693359375f, xc);
  r = fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  float y = fmaf(p, r * r, r) + 1.0f;
  y *= spk_bits_to_float(((int32_t)n + 127) << 23);
  y = x > 88.72283f ? INFINITY : y;
  y = x < -87.33654f ? 0.0f : y;
  return x != x ? x : y;
}
static inline float spk_erf(float x) {
  // x P(x^2) / Q(x^2), the minimax form of Eigen's and XLA's float erf (signs flipped so
  // Q > 0 and erf(+-0) = +-0): no exp, 12 FMAs and a division, a third of the cost of
  // Abramowitz-Stegun's exp-based form. The input is clamped where the form first reaches
  // 1.0f (it overshoots to 1 + 4e-7 beyond), so |erf| <= 1 and erf is exactly +-1 from
  // there; a NaN passes through. |error| < 3.7e-7 absolute.
  const float c = x < -3.6164465f ? -3.6164465f : (x > 3.6164465f ? 3.6164465f : x);
  const float c2 = c * c;
  float p = fmaf(c2, 2.72614225801306e-10f, -2.77068142495902e-08f);
  p = fmaf(c2, p, 2.10102402082508e-06f);
  p = fmaf(c2, p, 5.69250639462346e-05f);
  p = fmaf(c2, p, 7.34990630326855e-04f);
  p = fmaf(c2, p, 2.95459980854025e-03f);
  p = fmaf(c2, p, 1.60960333262415e-02f);
  float q = fmaf(c2, 1.45660718464996e-05f, 2.13374055278905e-04f);
  q = fmaf(c2, q, 1.68282697438203e-03f);
  q = fmaf(c2, q, 7.37332916720468e-03f);
  q = fmaf(c2, q, 1.42647390514189e-02f);
  return (c * p) / q;
}
static inline float spk_tanh(float x) {
  // 1 - 2/(e^2|x| + 1) loses relative precision near 0: a Taylor polynomial there.
  float a = fabsf(x);
  float big = 1.0f - 2.0f / (spk_exp(2.0f * a) + 1.0f);
  float x2 = a * a;
  float small = a * fmaf(x2, fmaf(x2, fmaf(x2, -0.053968254f, 0.13333334f), -0.33333334f), 1.0f);
  return copysignf(a < 0.25f ? small : big, x);
}
static inline float spk_sigmoid(float x) { return 1.0f / (1.0f + spk_exp(-x)); }
static inline float spk_max(float a, float b) { return (a != a || a > b) ? a : b; }  // NaN-propagating, as torch.maximum
static inline float spk_min(float a, float b) { return (a != a || a < b) ? a : b; }
static inline float spk_relu(float x) { return x < 0.0f ? 0.0f : x; }
static inline void* spk_scratch(int64_t bytes) {
  void* p = aligned_alloc(64, (size_t)((bytes + 63) / 64 * 64 + 64));
  return p;
}
// The replay runtime's loop (`backends/cpu/replay.py`): a recorded run of step calls as one
// call from Python. Weak, so every unit may carry it and the link keeps one.
extern "C" __attribute__((weak)) void spk_replay(int64_t n, void* const* fns,
                                                 const int64_t* const* metas,
                                                 void* const* const* ptrs) {
  typedef void (*spk_step_fn)(const int64_t*, void* const*);
  for (int64_t i = 0; i < n; ++i) ((spk_step_fn)fns[i])(metas[i], ptrs[i]);
}
#endif
"""
