"""A generated flash-style attention kernel: `scaled_dot_product_attention` in C++.

One function per (head dim, scale, mask kind, causal) runs an OpenMP loop over (batch,
head, block of 32 query rows), flash attention's way: per head, each thread packs the
keys, transposed, into blocks of KC = KV x L keys (KV = 4 or 8 vectors; `[Sk / KC][D][KC]`,
zero-padded) and the values into `[Sk][D]` (rows of a permuted `[B, S, H, D]` tensor are
`H * D` floats apart, a stride that maps them onto a few L1 sets: read in place they evict
each other);
then for each key block, for each pair of query rows, 2 x KC scores in 2 x KV vector
registers (every key vector loaded feeds both rows), the mask, and an online softmax: the
row's running max, sum and output are rescaled by `exp(old max - new max)` and the block's
weighted values added (in registers, D / L vectors per row and residue of the key mod PAR).
The vector width L is the target's: 16 floats (zmm, KC = 64, PAR = 2) with AVX-512, else
8 (ymm, KC = 32, PAR = 1); the value pass takes the output columns in slices whose chains
fit the registers (`value_slice`). AVX2 has 16 registers: 16-float vectors there are
lowered to ymm pairs whose 16 score chains spill, 4.3x slower than the 8-lane form on
MiniLM's 8 x 12 x 128 x 32 (16.3 against 3.7 ms on a Zen 3 EPYC). A key block that masks
both rows whole is skipped (half of a causal mask's). The output is divided by the sum
once at the end. The head dim is a compile-time constant; sizes and strides are run-time
arguments; the last dim of q, k, v and the mask must be contiguous (the step copies one
that is not). The hot working set is one key block and the unit's running outputs, sized
for L1 (`working_set`).

Semantics are torch's (`aten.scaled_dot_product_attention`, no dropout): scores
`q . k * scale` (`scale` defaults to 1/sqrt(D)); a bool mask keeps True, a float mask is
added; `is_causal` keeps key j <= query i (top-left aligned, as torch); a query row with
no key left gives zeros, as torch's CPU kernels do. With `enable_gqa` query head h reads
key/value head h // (Hq / Hkv), the same values a repeated K/V puts there, in the same
order: the two forms give the same bits. Dropout takes the library path. The output is
allocated `[B, Sq, H, D]` and returned as its `[B, H, Sq, D]` view, as torch's CPU kernel
lays it out when q is a permuted view: the head-merging permute and view after attention
then move no data.

Numerics: float32 throughout, sums in a different order than torch's and our `spk_exp`;
the differential tests hold it to 1e-5 of the output's scale like every float path.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
from typing import Any

import torch
from spokeshave.compiler.ir import Op, TensorType

from ..schedule import Step
from .replay import invoke
from .rows import c_float

ROWS = 32     # query rows per parallel unit
# vectors of keys per register block of scores (KC = KV x the target's float width): 4,
# or 8 where 32 registers hold the 2 x 8 score chains and the larger block fits L1 (half
# the blocks, so half the per-row softmax bookkeeping: MiniLM's 8 x 12 x 128 x 32 on a
# 2-core AVX-512 Xeon, 2.07 -> 1.78 ms standalone, torch's SDPA 1.21; in the w8a8g model
# 32.8 -> 31.6 ms against 31.9 with torch's SDPA in its place)
KEY_VECTORS = (4, 8)

_TEMPLATE = r"""
#ifndef SPK_VF
#define SPK_VF
// vectors of 16 floats (one zmm) and 8 (one ymm): a kernel uses the target's width; a
// 16-float vector on an AVX2 target is lowered to ymm pairs that spill (16 registers)
typedef float spk_v16 __attribute__((vector_size(64)));
typedef float spk_v8 __attribute__((vector_size(32)));
static inline spk_v16 spk_ld16(const float* p) { spk_v16 r; memcpy(&r, p, 64); return r; }
static inline void spk_st16(float* p, spk_v16 v) { memcpy(p, &v, 64); }
static inline spk_v16 spk_splat16(float x) {   // one broadcast (`v16{} + x` adds a 0 first)
  return spk_v16{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}
static inline spk_v8 spk_ld8(const float* p) { spk_v8 r; memcpy(&r, p, 32); return r; }
static inline void spk_st8(float* p, spk_v8 v) { memcpy(p, &v, 32); }
static inline spk_v8 spk_splat8(float x) { return spk_v8{x, x, x, x, x, x, x, x}; }
#endif
extern "C" void $symbol(const int64_t* meta, void* const* ptrs) {
  constexpr int64_t D = $D, RB = $ROWS, L = $L, KV = $KV, KC = KV * L, PAR = $PAR, DS = $DS;
  const int64_t B = meta[0], H = meta[1], SQ = meta[2], SK = meta[3];
  const int64_t REP = meta[4];    // query heads per key/value head (1 unless grouped)
  const int64_t* st = meta + 5;   // strides (batch, head, row) of q, k, v, out, mask
  const float* q = (const float*)ptrs[0];
  const float* k = (const float*)ptrs[1];
  const float* v = (const float*)ptrs[2];
  float* o = (float*)ptrs[3];
  const $MASK_T* mask = (const $MASK_T*)ptrs[4];
  (void)mask;
  const int64_t SKP = (SK + KC - 1) / KC * KC;
  const int64_t NRB = (SQ + RB - 1) / RB;
  const float scale = $SCALE;
  #pragma omp parallel if (B * H * NRB > 1)
  {
    // per thread: the head's keys transposed in 64-key blocks ([SKP / 64][D][64], each
    // block contiguous), its values packed ([SKP][D]), the scores of a row pair, and the
    // running max, sum and output of the unit's rows (online softmax, as flash attention)
    float* kt = (float*)spk_scratch(D * SKP * 4);
    float* vp = (float*)spk_scratch(D * SKP * 4);
    float* s = (float*)spk_scratch(2 * KC * 4);
    float* mrow = (float*)spk_scratch(RB * 4);
    float* zrow = (float*)spk_scratch(RB * 4);
    float* orow = (float*)spk_scratch(RB * D * 4);
    int64_t cur = -1;
    #pragma omp for schedule(static)
    for (int64_t u = 0; u < B * H * NRB; ++u) {
      const int64_t bh = u / NRB, b = bh / H, h = bh % H, i0 = (u % NRB) * RB;
      const int64_t kvh = bh / REP;   // grouped heads share one key/value head: its panels
      const float* kb = k + b * st[3] + (h / REP) * st[4];
      const float* vb = v + b * st[6] + (h / REP) * st[7];
      if (kvh != cur) {
        // Rows of a permuted [B, S, H, D] tensor are H * D floats apart, a stride that maps
        // them to a few L1 sets: read in place, they evict each other on every query row
        // (the keys are packed first, then transposed from the packed copy)
        for (int64_t j = 0; j < SK; ++j) memcpy(vp + j * D, kb + j * st[5], D * 4);
        for (int64_t jb = 0; jb < SKP; jb += KC)
          for (int64_t jj = 0; jj < KC; ++jj)
            for (int64_t d = 0; d < D; ++d)
              kt[jb * D + d * KC + jj] = jb + jj < SK ? vp[(jb + jj) * D + d] : 0.0f;
        for (int64_t j = 0; j < SKP; ++j) {
          if (j < SK) memcpy(vp + j * D, vb + j * st[8], D * 4);
          else memset(vp + j * D, 0, D * 4);
        }
        cur = kvh;
      }
      const int64_t i1 = i0 + RB < SQ ? i0 + RB : SQ;
      for (int64_t r = 0; r < i1 - i0; ++r) {
        mrow[r] = -INFINITY;
        zrow[r] = 0.0f;
        memset(orow + r * D, 0, D * 4);
      }
      for (int64_t jb = 0; jb < SKP; jb += KC) {   // a block of keys against every row
        const float* kblk = kt + jb * D;
        const int64_t jn = SK - jb < KC ? SK - jb : KC;
        // two query rows at a time: each key and value vector loaded feeds both (an odd
        // last row is paired with itself and written once)
        for (int64_t i = i0; i < i1; i += 2) {
          const int64_t rows[2] = {i, i + 1 < i1 ? i + 1 : i};
          const float* qa = q + b * st[0] + h * st[1] + rows[0] * st[2];
          const float* qb = q + b * st[0] + h * st[1] + rows[1] * st[2];
          $SKIP_BLOCK
          spk_v$L a[2][KV] = {};   // 2 x KC scores: 2 x KV independent FMA chains
          for (int64_t d = 0; d < D; ++d) {
            const spk_v$L xa = spk_splat$L(qa[d]), xb = spk_splat$L(qb[d]);
            for (int c = 0; c < KV; ++c) {
              const spk_v$L kv = spk_ld$L(kblk + d * KC + L * c);
              a[0][c] += xa * kv;
              a[1][c] += xb * kv;
            }
          }
          for (int c = 0; c < KV; ++c) {
            spk_st$L(s + L * c, a[0][c] * scale);
            spk_st$L(s + KC + L * c, a[1][c] * scale);
          }
          bool live[2];
          for (int rr = 0; rr < 2; ++rr) {   // mask, then fold the block into the row's softmax
            const int64_t ii = rows[rr], r = ii - i0;
            float* sr = s + rr * KC;
            $MASK_ROW
            for (int64_t j = jn; j < KC; ++j) sr[j] = -INFINITY;
            spk_v$L mv = spk_splat$L(-INFINITY);
            for (int64_t j = 0; j < KC; j += L) { const spk_v$L x = spk_ld$L(sr + j); mv = x > mv ? x : mv; }
            float bm = -INFINITY;
            for (int c = 0; c < L; ++c) bm = mv[c] > bm ? mv[c] : bm;
            live[rr] = bm != -INFINITY;
            if (!live[rr] || (rr == 1 && rows[1] == rows[0])) continue;
            const float mn = bm > mrow[r] ? bm : mrow[r];
            const float alpha = spk_exp(mrow[r] - mn);   // 0 for the first live block
            float z = 0.0f;
            #pragma omp simd reduction(+:z)
            for (int64_t j = 0; j < KC; ++j) { const float e = spk_exp(sr[j] - mn); sr[j] = e; z += e; }
            zrow[r] = zrow[r] * alpha + z;
            mrow[r] = mn;
            float* orr = orow + r * D;
            #pragma omp simd
            for (int64_t d = 0; d < D; ++d) orr[d] *= alpha;
          }
          if (rows[1] == rows[0]) live[1] = false;
          if (!live[0] && !live[1]) continue;
          if (!live[0]) for (int64_t j = 0; j < KC; ++j) s[j] = 0.0f;
          if (!live[1]) for (int64_t j = 0; j < KC; ++j) s[KC + j] = 0.0f;
          // both rows' outputs in slices of DS columns (as many as the registers hold), DS / L
          // vectors each per residue of j mod PAR: independent FMA chains (PAR = 2 where 32
          // registers hold them, 1 on AVX2's 16)
          for (int64_t d0 = 0; d0 < D; d0 += DS) {
            spk_v$L acc[2][PAR][DS / L] = {};
            for (int64_t j = 0; j < jn; j += PAR) {
              for (int e = 0; e < PAR; ++e) {
                const spk_v$L pa = spk_splat$L(s[j + e]), pb = spk_splat$L(s[KC + j + e]);
                const float* vr = vp + (jb + j + e) * D + d0;   // past SK: zero rows, weight 0
                for (int64_t c = 0; c < DS / L; ++c) {
                  const spk_v$L vv = spk_ld$L(vr + L * c);
                  acc[0][e][c] += pa * vv;
                  acc[1][e][c] += pb * vv;
                }
              }
            }
            for (int rr = 0; rr < (rows[1] != rows[0] ? 2 : 1); ++rr) {
              float* orr = orow + (rows[rr] - i0) * D + d0;
              for (int64_t c = 0; c < DS / L; ++c) {
                spk_v$L sum = acc[rr][0][c];
                for (int e = 1; e < PAR; ++e) sum += acc[rr][e][c];
                spk_st$L(orr + L * c, spk_ld$L(orr + L * c) + sum);
              }
            }
          }
        }
      }
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t r = i - i0;
        float* oi = o + b * st[9] + h * st[10] + i * st[11];
        // every key masked: zeros, as torch's CPU kernels give
        const float iz = zrow[r] > 0.0f ? 1.0f / zrow[r] : 0.0f;
        for (int64_t d = 0; d < D; ++d) oi[d] = orow[r * D + d] * iz;
      }
    }
    free(kt);
    free(vp);
    free(s);
    free(mrow);
    free(zrow);
    free(orow);
  }
}
"""

# per mask kind: the row's mask pass (scores of masked keys to -inf), the mask's C type
_MASK = {
    None: ("", "uint8_t"),
    "bool": ("{ const uint8_t* mr = mask + b * st[12] + h * st[13] + ii * st[14] + jb;\n"
             "              for (int64_t j = 0; j < jn; ++j) sr[j] = mr[j] ? sr[j] : -INFINITY; }",
             "uint8_t"),
    "float": ("{ const float* mr = mask + b * st[12] + h * st[13] + ii * st[14] + jb;\n"
              "              #pragma omp simd\n"
              "              for (int64_t j = 0; j < jn; ++j) sr[j] += mr[j]; }", "float"),
}
_CAUSAL = "for (int64_t j = ii + 1 - jb > 0 ? ii + 1 - jb : 0; j < jn; ++j) sr[j] = -INFINITY;"
# a key block that masks both rows of the pair whole is skipped (half of a causal mask's)
_SKIP = {
    "bool": ("{ const uint8_t* ma = mask + b * st[12] + h * st[13] + rows[0] * st[14] + jb;\n"
             "            const uint8_t* mb = mask + b * st[12] + h * st[13] + rows[1] * st[14] + jb;\n"
             "            uint8_t any = 0;\n"
             "            for (int64_t j = 0; j < jn; ++j) any |= ma[j] | mb[j];\n"
             "            if (!any) continue; }"),
    "causal": "if (jb > rows[1]) continue;",
}


def working_set(d: int, lanes: int = 16, key_vectors: int = 4) -> int:
    """Bytes the kernel keeps hot per thread at head dim `d`, `lanes` floats per vector and
    `key_vectors` vectors of keys per block: one key block transposed, its values, and the
    running outputs of a unit's rows."""
    return (2 * d * key_vectors * lanes + ROWS * d) * 4


def key_vectors(d: int, lanes: int, l1_bytes: int) -> int | None:
    """The key block (in vectors) for head dim `d`: the largest of `KEY_VECTORS` whose
    score chains fit the register file (2 rows x KV: 16 registers hold 2 x 4) and whose
    working set fits L1; None when none fits."""
    registers = _register_file(lanes)[1]
    fits = [kv for kv in KEY_VECTORS if 2 * kv + 2 <= registers and working_set(d, lanes, kv) <= l1_bytes]
    return max(fits) if fits else None


def _register_file(lanes: int) -> tuple[int, int]:
    """(value chains per output vector, vector registers) at `lanes` floats a vector:
    32 zmm hold two chains; AVX2's 16 ymm one."""
    return (2, 32) if lanes == 16 else (1, 16)


def value_slice(d: int, lanes: int) -> int:
    """Columns of the output the value pass holds in registers at once: the most whole
    vectors dividing D / lanes whose chains (two rows x PAR) and three operands fit the
    register file (32 zmm, PAR 2; 16 ymm, PAR 1). Past it every key spills them (AVX2 at
    D = 64 unsliced: 1.26 against torch's 1.19 ms on SmolLM2's causal 9 x 256 x 64)."""
    par, registers = _register_file(lanes)
    vectors = d // lanes
    fit = max(1, (registers - 3) // (2 * par))
    return lanes * max(v for v in range(1, vectors + 1) if vectors % v == 0 and v <= fit)


def attention_source(d: int, scale: float, mask: str | None, causal: bool,
                     lanes: int = 16, kv: int = 4) -> tuple[str, str]:
    """(symbol, C++ source) of the kernel for head dim `d`, `scale`, the mask's kind,
    `lanes` floats per vector register (16: AVX-512; 8: AVX2, whose 16 registers hold half
    the FMA chains) and `kv` vectors of keys per block."""
    row, mask_t = _MASK[mask]
    if causal:
        row = (row + "\n            " if row else "") + _CAUSAL
    # $DS before $D, which is its prefix
    text = (_TEMPLATE.replace("$DS", str(value_slice(d, lanes))).replace("$D", str(d))
            .replace("$ROWS", str(ROWS)).replace("$PAR", str(_register_file(lanes)[0]))
            .replace("$KV", str(kv))
            .replace("$L", str(lanes)).replace("$SCALE", c_float(scale))
            .replace("$MASK_ROW", row).replace("$MASK_T", mask_t)
            .replace("$SKIP_BLOCK", _SKIP.get("causal" if causal else mask, "")))
    symbol = "spk_attn_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return symbol, text.replace("$symbol", symbol)


def _static_dim(v, i: int) -> int | None:
    t = v.type
    if isinstance(t, TensorType) and t.rank == 4 and isinstance(t.shape[i], int):
        return t.shape[i]
    return None


def attention_step(op: Op, l1_bytes: int | None, lanes: int = 16) -> Step | None:
    """The generated step for `op` (an `aten.scaled_dot_product_attention`), or None when
    its form takes the library path: dropout, dynamic head counts, a dynamic head dim or
    one not a multiple of `lanes`, a non-float32 tensor, a mask that is not a rank-4 bool
    or float32 tensor, or a working set past the target's L1 data cache (`l1_bytes`;
    None: unknown). The working set is one key block's transposed keys and values and its
    rows' running outputs, `(2 * D * KV * lanes + 32 * D) * 4` bytes (16 lanes, KV = 4: 20
    KiB at D = 32, 40 KiB at D = 64; KV = 8: 36 KiB at D = 32; 8 lanes halve the key
    block), the largest block that fits (`key_vectors`): it is written for L1, and from L2 torch's blocked
    kernel is the better one (measured with whole-head panels: 1.85 against 1.64 ms at
    D 64 x 256 keys)."""
    if not l1_bytes:
        return None
    a = op.attributes
    if a.get("dropout_p", 0.0) != 0.0 or len(op.operands) not in (3, 4):
        return None
    q, k, v = op.operands[:3]
    if any(not isinstance(x.type, TensorType) or x.type.dtype != "f32" or x.type.rank != 4
           for x in (q, k, v)):
        return None
    d, dv = _static_dim(q, 3), _static_dim(v, 3)
    hq, hk, hv = (_static_dim(x, 1) for x in (q, k, v))
    gqa = bool(a.get("enable_gqa", False))
    if (d is None or d != dv or d != _static_dim(k, 3) or d % lanes
            or None in (hq, hk, hv) or hk != hv or hq % hk or (hq != hk and not gqa)):
        return None
    kv = key_vectors(d, lanes, l1_bytes)
    if kv is None:
        return None
    mask = None
    if len(op.operands) == 4:
        t = op.operands[3].type
        if not isinstance(t, TensorType) or t.rank != 4 or t.dtype not in ("i1", "f32"):
            return None
        mask = "bool" if t.dtype == "i1" else "float"
    causal = bool(a.get("is_causal", False))
    if causal and mask is not None:
        return None   # torch refuses both together
    scale = a.get("scale")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    symbol, source = attention_source(d, scale, mask, causal, lanes, kv)
    box: dict[str, Any] = {}

    def call(args: list[Any]) -> list[Any] | None:
        if any(not isinstance(t, torch.Tensor) or t.dtype != torch.float32 for t in args[:3]):
            return None
        qt, kt, vt = (t if t.stride(-1) == 1 else t.contiguous() for t in args[:3])
        bsz, heads_, sq, _ = qt.shape
        sk = kt.shape[2]
        if tuple(kt.shape) != (bsz, hk, sk, d) or tuple(vt.shape) != (bsz, hk, sk, d):
            return None
        out = torch.empty((bsz, sq, heads_, d), dtype=torch.float32)
        view = out.permute(0, 2, 1, 3)
        m_ptr, m_st = 0, (0, 0, 0)
        if mask is not None:
            m = args[3]
            want = torch.bool if mask == "bool" else torch.float32
            if not isinstance(m, torch.Tensor) or m.dtype != want:
                return None
            try:
                m = m.expand(bsz, heads_, sq, sk)
            except RuntimeError:
                return None
            if m.stride(-1) != 1 and sk > 1:
                m = m.contiguous()
            if mask == "bool":
                m = m.view(torch.uint8)
            m_ptr, m_st = m.data_ptr(), m.stride()[:3]
        if out.numel():
            meta = [bsz, heads_, sq, sk, heads_ // hk, *qt.stride()[:3], *kt.stride()[:3],
                    *vt.stride()[:3], *view.stride()[:3], *m_st]
            ptrs = (ctypes.c_void_p * 5)(qt.data_ptr(), kt.data_ptr(), vt.data_ptr(),
                                         out.data_ptr(), m_ptr)
            invoke(box["fn"], (ctypes.c_int64 * len(meta))(*meta), ptrs)
        return [view]

    return Step("attention", (op,), list(op.operands), list(op.results), symbol, source, (), call,
                lambda fn: box.__setitem__("fn", fn))
