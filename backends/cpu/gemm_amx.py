"""C++ text of the AMX (`tdpbusd`) int8 GEMMs: Intel's tile unit for w8a8 and w8a8g.

Data for `gemm.py`, appended to the zmm VNNI blocks of `gemm_int8.py`, whose weight panels
(`[N/64][K/4][64][4]`), column sums, activation rows and quantizers they reuse unchanged: a
B tile is 16 columns of a panel read at the panel's row stride, an A tile is 16 activation
rows read at theirs, so nothing is repacked and the results are bit-identical to the zmm
kernels' (the same exact int32 sums, scaled in the same order). Only the GEMM loop differs.
A process that the OS refuses the tile state, a call with fewer rows than one tile, a
w8a8 K that is no multiple of 64 and a w8a8g group past 128 run the zmm kernel instead.

Measured on a 2-core AVX-512 / AMX Xeon (`benchmarks/gemm_cpu.py`-style, M = 1024, two
threads): w8a8g 800-1100 GMAC/s against zmm VNNI's 550-650. Each tile instruction
serialises on the tile unit, and w8a8g must store and rescale every group's accumulators
(every 128 codes), which bounds it; w8a8 stores once per K.
"""
from .gemm_int8 import float_entry, grouped_entry

I8Z_AMX = r"""
#ifndef SPK_GEMM_I8Z_AMX
#define SPK_GEMM_I8Z_AMX
#if !defined(__AMX_TILE__) || !defined(__AMX_INT8__)
#error "spokeshave int8 kernel (isa amx) needs -mamx-tile -mamx-int8"
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
namespace spk_gemm {
namespace i8z {
// Linux grants the 8 KB tile state (XFEATURE_XTILEDATA = 18) only to a process that asks
// (arch_prctl ARCH_REQ_XCOMP_PERM = 0x1023); the grant covers every thread of the process.
static inline bool amx_ready() {
#if defined(__linux__)
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
#else
  return false;
#endif
}

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// A configuration is built once, in static storage: GCC does not treat ldtilecfg as a read
// of the 64 bytes it loads, and dropped the stores of a stack copy once the configuring
// function was called rather than inlined (ldtilecfg then faulted on an invalid config).
static inline TileConfig tile_config(int acc_tiles, int a_tiles, int ks) {
  TileConfig c;
  memset(&c, 0, sizeof c);
  c.palette = 1;
  int i = 0;
  for (; i < acc_tiles; ++i) { c.rows[i] = 16; c.colsb[i] = 64; }
  for (const int a = i + a_tiles; i < a; ++i) { c.rows[i] = 16; c.colsb[i] = (uint16_t)ks; }
  for (; i < 8; ++i) { c.rows[i] = (uint8_t)(ks / 4); c.colsb[i] = 64; }
  return c;
}

// w8a8 (per token): the accumulators run over all K, so 2 x 2 of them (32 rows x 32
// columns) share two A and two B tiles per 64 codes (a tile load per tdpbusd), and are
// stored once. Tiles 0-3: accumulators; 4-5: A; 6-7: B.
static inline void amx_configure_2x2() {
  static const TileConfig c = tile_config(4, 2, 64);
  _tile_loadconfig(&c);
}

// Rows of a tile that the caller's array lacks are read from a zero-padded copy.
static inline const uint8_t* amx_rows(const uint8_t* x, int64_t rows, int64_t want, int64_t rb, int slot) {
  if (rows >= want) return x;
  uint8_t* pad = (uint8_t*)scratch((size_t)(want * rb), slot);
  memcpy(pad, x, (size_t)(rows * rb));
  memset(pad + rows * rb, 0, (size_t)((want - rows) * rb));
  return pad;
}

// The zmm family's gemm_q signature, so its float entry serves (`float_entry`); VNNI is
// true and MO 0 (the split op stays on zmm).
template <bool VNNI, int64_t N, int64_t K, int MO, class Epi>
static void gemm_q_amx(const uint8_t* xq, const float* xs, const float* x, int64_t M, int64_t ldx,
                       float* y, int64_t ldy, void* const* w, const float* bias, const Epi& epi) {
  constexpr int64_t MR = 32, PW = 64, K4 = K / 4, NP = (N + PW - 1) / PW, NPAD = NP * PW;
  static_assert(VNNI && MO == 0, "the AMX kernel reads the zmm VNNI rows of w8a8");
  static_assert(Cfg<true>::PW == PW, "the AMX kernel reads the zmm VNNI panels");
  if (M <= 0) return;
  if (K % 64 || M < 16 || !amx_ready()) {
    gemm_q<true, N, K, 0>(xq, xs, x, M, ldx, y, ldy, w, bias, epi);
    return;
  }
  const int8_t* wq = (const int8_t*)w[0];
  const float* ws = (const float*)w[1];
  const int32_t* comp = (const int32_t*)w[2];
  const int64_t mb = (M + MR - 1) / MR, total = NP * mb;
#pragma omp parallel if (total > 1 && M * NPAD * K >= (1 << 17))
  {
    amx_configure_2x2();
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < total; ++tile) {
      const int64_t p = tile / mb, mt = (tile % mb) * MR, rows = min64(MR, M - mt), n0 = p * PW;
      const uint8_t* xr = amx_rows(xq + mt * K, rows, MR, K, 3);
      const int8_t* wp = wq + p * (K4 * PW * 4);
      alignas(64) int32_t c[MR][32];
      alignas(64) float t[MR][PW];
      for (int h = 0; h < 2; ++h) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t k = 0; k < K; k += 64) {
          const int8_t* wk = wp + (k / 4) * (PW * 4) + 128 * h;
          _tile_loadd(4, xr + k, K);
          _tile_loadd(5, xr + 16 * K + k, K);
          _tile_loadd(6, wk, PW * 4);
          _tile_loadd(7, wk + 64, PW * 4);
          _tile_dpbusd(0, 4, 6);
          _tile_dpbusd(1, 4, 7);
          _tile_dpbusd(2, 5, 6);
          _tile_dpbusd(3, 5, 7);
        }
        _tile_stored(0, &c[0][0], 128);
        _tile_stored(1, &c[0][16], 128);
        _tile_stored(2, &c[16][0], 128);
        _tile_stored(3, &c[16][16], 128);
        for (int64_t i = 0; i < rows; ++i) SPK_UNROLL for (int j = 0; j < 2; ++j) {
          const int64_t n = n0 + 32 * h + 16 * j;
          // exact int32 result: the +128 shift of the activations contributed 128 * colsum
          const __m512i a = _mm512_sub_epi32(_mm512_load_si512((const void*)&c[i][16 * j]), _mm512_loadu_si512((const void*)(comp + n)));
          const __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(xs[mt + i])), _mm512_loadu_ps(ws + n));
          _mm512_store_ps(&t[i][32 * h + 16 * j], opaque(f));
        }
      }
      store_rows<PW>(&t[0][0], (int)rows, mt, n0, min64(PW, N - n0), bias, y, ldy, epi);
    }
    _tile_release();
  }
}

$FLOAT_ENTRY
}  // namespace i8z
}  // namespace spk_gemm
#endif  // SPK_GEMM_I8Z_AMX
"""

# w8a8g: after I8Z_G (its zmm fallback) and I8Z_AMX (the tile state and configuration).
I8Z_AMX_G = r"""
#ifndef SPK_GEMM_I8Z_AMX_G
#define SPK_GEMM_I8Z_AMX_G
namespace spk_gemm {
namespace i8z {
// The tile configuration is per thread, and other libraries in the process (oneDNN) load
// their own, so every kernel call loads ours in each thread. Tiles 0-1 and 2-3: two sets of
// 16 x 32 int32 accumulators (16 rows, two 16-column tiles); 4: the A tile (16 rows x KS
// codes); 5-6: two B tiles (KS / 4 rows of 16 columns x 4 codes).
template <int KS> static inline void amx_configure() {
  static const TileConfig c = tile_config(4, 1, KS);   // tile 7 unused: its config is harmless
  _tile_loadconfig(&c);
}

// One unit of work: group g of 16 rows x 32 columns (half h of the panel) into accumulator
// set S (tiles 2S, 2S + 1), restarted at zero. Tile operands are immediates, spelled out.
template <int S, int64_t K, int64_t G, int KS>
static inline void amx_issue(const uint8_t* xr, const int8_t* wp, int64_t g, int h) {
  constexpr int64_t RB = K + 8 * (K / G), PW = 64;
  if (S == 0) { _tile_zero(0); _tile_zero(1); } else { _tile_zero(2); _tile_zero(3); }
  for (int64_t k = g * G; k < (g + 1) * G; k += KS) {
    const int8_t* wk = wp + (k / 4) * (PW * 4) + 128 * h;
    _tile_loadd(4, xr + k, RB);
    _tile_loadd(5, wk, PW * 4);
    _tile_loadd(6, wk + 64, PW * 4);
    if (S == 0) { _tile_dpbusd(0, 4, 5); _tile_dpbusd(1, 4, 6); }
    else { _tile_dpbusd(2, 4, 5); _tile_dpbusd(3, 4, 6); }
  }
}

template <int S> static inline void amx_store(int32_t (*c)[32]) {
  if (S == 0) { _tile_stored(0, &c[0][0], 128); _tile_stored(1, &c[0][16], 128); }
  else { _tile_stored(2, &c[0][0], 128); _tile_stored(3, &c[0][16], 128); }
}

// Adds unit (g, h)'s exact partial sums c, less the zero points' correction and scaled,
// into the float tile t (in L1), as the zmm kernel's micro_groups adds them.
template <int64_t K, int64_t G, int64_t NPAD>
static inline void amx_flush(const uint8_t* xr, const float* cs, const int32_t (*c)[32], int64_t g, int h, float (*t)[64]) {
  constexpr int64_t NG = K / G, RB = K + 8 * NG;
  const __m512 c0 = _mm512_loadu_ps(cs + g * NPAD + 32 * h), c1 = _mm512_loadu_ps(cs + g * NPAD + 32 * h + 16);
  for (int i = 0; i < 16; ++i) {
    const float* gs = (const float*)(xr + i * RB + K);
    const __m512 zc = _mm512_set1_ps(gs[NG + g]), sc = _mm512_set1_ps(gs[g]);
    SPK_UNROLL for (int j = 0; j < 2; ++j) {
      // the exact partial sum sum (q - z) w: the u8 codes' +128 is in zc
      const __m512 a = exact_sub_mul(_mm512_cvtepi32_ps(_mm512_load_si512((const void*)&c[i][16 * j])), zc, j ? c1 : c0);
      __m512 f = opaque(_mm512_mul_ps(a, sc));
      if (g) f = _mm512_add_ps(_mm512_load_ps(&t[i][32 * h + 16 * j]), f);
      _mm512_store_ps(&t[i][32 * h + 16 * j], f);
    }
  }
}

// 16 rows x 64 columns (one panel) over all K, as U = 2 x NG units (half of the columns,
// one group; the group varies fastest), with two accumulator sets: the tile unit runs
// unit u + 1 while unit u is stored and unit u - 1 is flushed by the vector units. (On a
// 2-core Xeon this measured as fast as 32 x 32 blocks with four accumulators and no
// overlap, and as keeping a group's B tiles resident across row blocks; 16-row tiles pad
// a 16-row call least.)
template <int64_t K, int64_t G, int64_t NPAD, int KS>
static inline void amx_panel_groups(const uint8_t* xr, const int8_t* wp, const float* cs, float (*t)[64]) {
  constexpr int64_t NG = K / G, U = 2 * NG;
  alignas(64) int32_t c[2][16][32];
  amx_issue<0, K, G, KS>(xr, wp, 0, 0);
  for (int64_t u = 0; u < U; ++u) {
    if (u % 2 == 0) {
      if (u + 1 < U) amx_issue<1, K, G, KS>(xr, wp, (u + 1) % NG, (int)((u + 1) / NG));
      amx_store<0>(c[0]);
    } else {
      if (u + 1 < U) amx_issue<0, K, G, KS>(xr, wp, (u + 1) % NG, (int)((u + 1) / NG));
      amx_store<1>(c[1]);
    }
    if (u) amx_flush<K, G, NPAD>(xr, cs, c[(u - 1) % 2], (u - 1) % NG, (int)((u - 1) / NG), t);
  }
  amx_flush<K, G, NPAD>(xr, cs, c[(U - 1) % 2], (U - 1) % NG, (int)((U - 1) / NG), t);
}

// The zmm family's gemm_qg signature, so its float entry serves (`grouped_entry`).
template <bool VNNI, int64_t N, int64_t K, int64_t G, class Epi>
static void gemm_qg_amx(const uint8_t* xq, int64_t M, float* y, int64_t ldy, void* const* w,
                        const float* bias, const Epi& epi) {
  static_assert(VNNI, "the AMX kernel reads the zmm VNNI records");
  constexpr int MR = 16, PW = 64;
  // the largest tile depth dividing the group (groups are multiples of 16)
  constexpr int KS = G % 64 == 0 ? 64 : (G % 32 == 0 ? 32 : 16);
  constexpr int64_t K4 = K / 4, NG = K / G, RB = K + 8 * NG;
  constexpr int64_t NP = (N + PW - 1) / PW, NPAD = NP * PW;
  static_assert(Cfg<true>::PW == PW, "the AMX kernel reads the zmm VNNI panels");
  if (M <= 0) return;
  if (M < 16 || !amx_ready()) {
    gemm_qg<true, N, K, G>(xq, M, y, ldy, w, bias, epi);
    return;
  }
  const int8_t* wq = (const int8_t*)w[0];
  const float* ws = (const float*)w[1];
  const float* cs = (const float*)w[2];
  const int64_t mb = (M + MR - 1) / MR, total = NP * mb;
#pragma omp parallel if (total > 1 && M * NPAD * K >= (1 << 17))
  {
    amx_configure<KS>();
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < total; ++tile) {
      const int64_t p = tile / mb, mt = (tile % mb) * MR, rows = min64(MR, M - mt), n0 = p * PW;
      const uint8_t* xr = amx_rows(xq + mt * RB, rows, MR, RB, 3);
      alignas(64) float t[MR][PW];
      amx_panel_groups<K, G, NPAD, KS>(xr, wq + p * (K4 * PW * 4), cs + n0, t);
      for (int64_t i = 0; i < rows; ++i) SPK_UNROLL for (int j = 0; j < 4; ++j)
        _mm512_store_ps(&t[i][16 * j], opaque(_mm512_mul_ps(_mm512_load_ps(&t[i][16 * j]), _mm512_loadu_ps(ws + n0 + 16 * j))));
      store_rows<PW>(&t[0][0], (int)rows, mt, n0, min64(PW, N - n0), bias, y, ldy, epi);
    }
    _tile_release();
  }
}

$GROUPED_ENTRY
}  // namespace i8z
}  // namespace spk_gemm
#endif  // SPK_GEMM_I8Z_AMX_G
"""

I8Z_AMX = I8Z_AMX.replace("$FLOAT_ENTRY", float_entry(True, "gemm_amx", "gemm_q_amx"))
I8Z_AMX_G = I8Z_AMX_G.replace("$GROUPED_ENTRY", grouped_entry(True, "gemm_g_amx", "gemm_qg_amx"))
