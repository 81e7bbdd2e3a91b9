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
* w8a8g: per-token-group asymmetric quantization bit for bit
  (`quant.quantize_token_groups_int8`), each group's int32 partial sum exact, its
  zero-point correction `zc * colsum_g` exact in float32 (integers below 2^24), then
  `t = a_0 * s_0`, `t = t + a_g * s_g`, `t * wscale[n] (+ bias)`, rounded in that order:
  bit-identical to `quant.linear_w8a8g`. Its quantized row is one record of
  `act_row_bytes` = K + 8 * K/G bytes: the codes, then the row's group scales and zero
  points (floats); `xscale` is unused.
* weight-only ops (w8, fp8, w4g, 2:4, w8_split) decode the stored weight in registers and
  accumulate in float32: "decode, then a float GEMM" up to float rounding order. Per-column
  scales multiply the finished sum; the zmm w4g kernel also takes each group's zero point
  and scale out of the inner loop, `s * (sum x u - z * sum x)` (well within the 1e-5
  relative tolerance the tests hold every weight-only path to).

ISA selection reads `target.features`, never the host (a kernel is generated for the
machine that will run it). int8 activations: `amx` (tile `tdpbusd`, `gemm_amx.py`, for
w8a8 with K % 64 == 0 and w8a8g; packed as `avx512_vnni`), `avx512_vnni` (zmm
`vpdpbusd`), `avx_vnni` (ymm `vpdpbusd`), `avx2` (`vpmaddubsw`, exact by the sign trick
below), `scalar`.
Weight-only: `avx512` (zmm), `avx2` (ymm + FMA), `scalar`. The text `#error`s when compiled
without the flags its ISA needs, and must not be compiled with `-ffast-math` (the int8
paths rely on IEEE division and on no reassociation).

Layouts (PW = panel width in columns, a multiple of the vector width; N is zero-padded to
whole panels so tiles never need a column tail in the inner loop):

* int8 x int8: `[N/PW][K/4][PW][4]` int8 (4 consecutive k of one column form the 32-bit
  lane `vpdpbusd` reduces), per-column scales, and for VNNI the per-column `128 * colsum`
  (activations are shifted to u8 by +128; the shift is subtracted exactly in int32);
  w8a8g instead has per-group column sums, float `[K/G][NPAD]`, for every ISA.
* weight-only: `[N/PW][K][PW]` (w8, fp8 bytes), `[N/PW][K/2][PW]` (w4g: the stored bytes,
  column-blocked, so the low nibble is still the even k), `[N/PW][K/4]{v0,v1}[PW]` floats
  plus `[N/PW][K/4][PW]` position bytes (2:4). Scalar kernels read the stored layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...compiler.dialect import WEIGHT, op_def
from ...compiler.ir import Op, TensorType
from ...compiler.dialect.spk import activation_group_error
from ...compiler.target import Target
from .gemm_float import WOS as _WOS
from .gemm_float import WOY as _WOY
from .gemm_float import WOZ as _WOZ
from .gemm_float import fp8_table as _fp8_table
from .gemm_amx import I8Z_AMX as _I8Z_AMX
from .gemm_amx import I8Z_AMX_G as _I8Z_AMX_G
from .gemm_int8 import I8S as _I8S
from .gemm_int8 import I8Y as _I8Y
from .gemm_int8 import I8Y_VNNI as _I8Y_VNNI
from .gemm_int8 import I8S_G as _I8S_G
from .gemm_int8 import I8Y_G as _I8Y_G
from .gemm_int8 import I8Z as _I8Z
from .gemm_int8 import I8Z_G as _I8Z_G
from .gemm_int8 import PRELUDE as _PRELUDE


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


_PW = {
    ("i8", "amx"): 64, ("i8", "avx512_vnni"): 64, ("i8", "avx_vnni"): 24, ("i8", "avx2"): 16,
    ("w8", "avx512"): 48, ("fp8", "avx512"): 48, ("w4g", "avx512"): 32, ("s24", "avx512"): 32,
    ("w8", "avx2"): 16, ("fp8", "avx2"): 16, ("w4g", "avx2"): 16, ("s24", "avx2"): 16,
}

_I8_NS = {"amx": ("spk_gemm::i8z", "true, ", "spk_gemm::i8z::Cfg<true>::PW"),
          "avx512_vnni": ("spk_gemm::i8z", "true, ", "spk_gemm::i8z::Cfg<true>::PW"),
          "avx_vnni": ("spk_gemm::i8y", "true, ", "spk_gemm::i8y::Cfg<true>::PW"),
          "avx2": ("spk_gemm::i8y", "false, ", "spk_gemm::i8y::Cfg<false>::PW"),
          "scalar": ("spk_gemm::i8s", "", None)}
_I8_BLOCKS = {"amx": (_PRELUDE, _I8Z, _I8Z_AMX), "avx512_vnni": (_PRELUDE, _I8Z), "avx_vnni": (_PRELUDE, _I8Y, _I8Y_VNNI),
              "avx2": (_PRELUDE, _I8Y), "scalar": (_PRELUDE, _I8S)}
_I8_GROUP_BLOCK = {"amx": _I8Z_G + _I8Z_AMX_G, "avx512_vnni": _I8Z_G, "avx_vnni": _I8Y_G, "avx2": _I8Y_G, "scalar": _I8S_G}
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


def has_amx(target: Target) -> bool:
    """Whether `target` has AMX int8 tiles beside zmm VNNI (whose panels the tile kernels
    read; they fall back to zmm at run time if the OS refuses the tile state)."""
    return target.arch == "x86_64" and {"amx_tile", "amx_int8"} <= target.features and int8_isa(target) == "avx512_vnni"


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
        if isa in ("amx", "avx512_vnni", "avx_vnni"):
            # activations enter vpdpbusd as u8 = q + 128; subtract 128 * colsum(w) in int32
            packed.append(_padded_vec(128 * q.to(torch.int32).sum(dim=1), npad, torch.int32))
    mo = 0
    if extras is not None:
        mo = int(extras[1].numel())
        if mo:
            packed += _split_extras(extras[0], extras[1], n, k, npad, with_keep=True)
    ns, tmpl, pw_expr = _I8_NS[isa]
    tag = "w8a8" if extras is None else "w8a8split"
    # amx (w8a8 only, `_build_w8a8`): the tile GEMM on the zmm family's rows, same signature
    gemm_q, gemm = ("gemm_q_amx", "gemm_amx") if isa == "amx" else ("gemm_q", "gemm")
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
        f"  {ns}::{gemm_q}<{tmpl}{n}, {k}, {mo}>((const uint8_t*)xq, xscale, x, M, ldx, y, ldy, w, bias, epi);\n}}\n"
        f"template <class Epi>\nstatic void {symbol}({_SIG}) {{\n"
        f"  {ns}::{gemm}<{tmpl}{n}, {k}, {mo}>({_ARGS});\n}}\n")
    source = "".join(_I8_BLOCKS[isa]) + _guarded(symbol, body)
    return GemmKernel(op_name, symbol, source, isa, tuple(packed), n, k, kp)


def _int8_group_kernel(op_name: str, qweight: torch.Tensor, scale: torch.Tensor, group: int,
                       isa: str) -> GemmKernel:
    """w8a8g: the int8 panels of w8a8, per-column scales, and each group's column sums
    (float [NG][NPAD]: the zero points' correction, exact in float32). `amx` packs as
    `avx512_vnni` does."""
    n, k = qweight.shape
    q = qweight.contiguous()
    pw = _PW.get(("i8", isa), 1)
    npad = n if isa == "scalar" else -(-n // pw) * pw
    colsum = q.to(torch.int32).reshape(n, k // group, group).sum(dim=2).t().float()
    colsums = torch.zeros((k // group, npad), dtype=torch.float32)
    colsums[:, :n] = colsum
    if isa == "scalar":
        packed = [q, scale.float().contiguous(), colsums]
    else:
        packed = [_pack_k4(q, pw), _padded_vec(scale, npad, torch.float32), colsums]
    ns, tmpl, pw_expr = _I8_NS[isa]
    symbol = f"spk_gemm_w8a8g{group}_{isa}_n{n}_k{k}"
    row_bytes = k + 8 * (k // group)
    body = ""
    if pw_expr is not None:
        body += f"static_assert({pw_expr} == {pw}, \"panel width out of sync with gemm.py\");\n"
    qrow = f"{ns}::quantize_row_g<{tmpl}{k}, {group}>(x_row, (uint8_t*)q_row, xscale);"
    # the AMX GEMM takes the zmm VNNI family's records, with the same signature
    gemm_qg, gemm_g = ("gemm_qg_amx", "gemm_g_amx") if isa == "amx" else ("gemm_qg", "gemm_g")
    body += (
        f"// {op_name}, N={n}, K={k}, activation group {group}, isa {isa}; quantized rows are {row_bytes} bytes\n"
        f"static inline void {symbol}_quantize_row(const float* x_row, void* q_row, float* xscale, void* const* w) {{\n"
        f"  (void)w;\n  {qrow}\n}}\n"
        f"static inline void {symbol}_quantize_row(const float* x_row, void* q_row, float* xscale) {{\n"
        f"  {qrow}\n}}\n"
        f"template <class Epi>\nstatic void {symbol}_q(const void* xq, const float* xscale, const float* x, int64_t M, "
        f"int64_t ldx, float* y, int64_t ldy, void* const* w, const float* bias, Epi epi) {{\n"
        f"  (void)xscale; (void)x; (void)ldx;\n"
        f"  {ns}::{gemm_qg}<{tmpl}{n}, {k}, {group}>((const uint8_t*)xq, M, y, ldy, w, bias, epi);\n}}\n"
        f"template <class Epi>\nstatic void {symbol}({_SIG}) {{\n"
        f"  {ns}::{gemm_g}<{tmpl}{n}, {k}, {group}>({_ARGS});\n}}\n")
    source = "".join(_I8_BLOCKS[isa]) + _I8_GROUP_BLOCK[isa] + _guarded(symbol, body)
    return GemmKernel(op_name, symbol, source, isa, tuple(packed), n, k, row_bytes)


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
    # the tile kernel steps K by 64 codes (a tail would need tiles of a second shape)
    amx = has_amx(target) and q.shape[1] % 64 == 0
    return _int8_act_kernel(op.name, q, scale, None, "amx" if amx else int8_isa(target))


def _build_w8a8g(op: Op, w: list[torch.Tensor], target: Target) -> GemmKernel | None:
    q, scale = w
    group = op.attributes.get("group")
    if q.dtype != torch.int8 or activation_group_error(group) is not None or q.shape[1] % group:
        return None
    return _int8_group_kernel(op.name, q, scale, group, "amx" if has_amx(target) else int8_isa(target))


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
    "spk.linear_w8a8g": _build_w8a8g,
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
