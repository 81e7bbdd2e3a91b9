"""Generated Triton GEMMs for the compressed linears: "load compressed, compute dense".

One template, `y[M, N] = x[M, K] @ W^T (+ bias)`, tiled `BM x BN` over the output with a
loop over `K` in `BK` steps; each format only says how its stored weight becomes the
`[BK, BN]` tile handed to `tl.dot` (in registers: no float copy of the weight is ever
written) and what its epilogue multiplies in. Every load is masked, so any M, N and K run
(odd sizes included) without padding the weights.

| op | stored | tile |
| --- | --- | --- |
| `spk.linear_w8` | int8 `[N, K]`, scale `[N]` | codes as float; the scale in the epilogue |
| `spk.linear_w8a8` | same; x quantized per token (torch, the reference function) | int8 `tl.dot` into int32; x and w scales in the epilogue |
| `spk.linear_fp8` | e4m3 bytes `[N, K]`, scale `[N]` | decoded by bit arithmetic (exponent bits built into a float32: exact, and fp8-less GPUs too) |
| `spk.linear_w4g` | two codes per byte `[N, K/2]`, scale/zeros `[N, K/G]` | nibble `k % 2` of byte `k // 2`, minus zero, times its group's scale |
| `spk.linear_sparse24` | values `[N, K/2]`, 2-bit positions `[N, ceil(K/8)]` | each column picks its group's kept value whose position it is, else 0 |
| `spk.linear_w8a8_split`, `_w8_split` | as w8a8 / w8, plus `oweight [N, MO]`, `oindex [MO]` | as w8a8 / w8 on x with its outlier columns zeroed; then their float GEMM |
| `aten.linear` | float32 `[N, K]` | the weight itself (generated only when an epilogue fuses in) |

After the scales and the bias, a step's epilogue (pointwise ops on the result, reading
extra operands per element, column, row or once: `schedule.epilogue_kind`) rewrites the
accumulator tile before the one store.

Only builtins of `triton.language` appear (`tl.full`, not `tl.zeros`): the helpers of
`triton.language.standard` are themselves `@triton.jit` functions, made at triton's import
in one mode, so after inductor has imported triton for the GPU, an interpreted kernel that
called `tl.zeros` would fail ("Cannot call @triton.jit'd outside of the scope of a kernel").

Layout choice (recorded for `w4g`): the kernel reads the IR's own packing (column `2j` in
the low nibble, as `compiler.numerics.quant.pack_int4` writes it). Marlin instead
reshuffles the codes offline so one 32-bit load feeds a tensor-core fragment directly;
that needs a GPU to measure against, and is left for when one is at hand.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from spokeshave.compiler.dialect import BIAS, OPS
from spokeshave.compiler.ir import Op, TensorType, torch_dtype
from spokeshave.compiler.numerics.quant import INT4_SYMMETRIC_ZERO

from .rows import FLOAT_TYPES


@dataclass(frozen=True)
class Format:
    """How one compressed linear's weight enters the template."""

    op: str
    params: str            # kernel parameters for the stored weight tensors
    consts: str            # extra constexpr parameters
    decode: str            # lines computing `w` [BK, BN] (the loop's body, indented 8)
    epilogue: str          # lines scaling `acc` after the loop (indented 4)
    int8: bool = False     # x arrives quantized: an int8 dot into int32
    split: bool = False    # LLM.int8(): x's outlier columns come apart, as a float GEMM


_X_FLOAT = ("        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=xm, other=0.0)"
            ".to(tl.float32)\n")
# Triton's interpreter multiplies bf16 tiles as their uint16 storage (numpy has no bf16), so
# there a bf16 kernel's launcher sets DOT_F32: the same exact products (bf16 x bf16 fits
# float32) and float32 sums as the tensor-core dot a GPU compiles from the other branch
_BF16_DOT = ("        if DOT_F32:\n"
             "            acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision=\"ieee\")\n"
             "        else:\n"
             "            acc += tl.dot(x, w)")
_X_HALF = "        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=xm, other=0.0)\n"
_X_INT8 = "        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=xm, other=0)\n"
_CHANNEL_SCALE = "    acc = acc * tl.load(s_ptr + rn, mask=rn < N, other=0.0)[None, :]\n"

FORMATS = {f.op: f for f in (
    Format("spk.linear_w8", "q_ptr, s_ptr", "",
           "        w = tl.load(q_ptr + rn[None, :] * K + rk[:, None], mask=wm, other=0).to(tl.float32)\n",
           _CHANNEL_SCALE),
    Format("spk.linear_w8a8", "q_ptr, s_ptr, xs_ptr", "",
           "        w = tl.load(q_ptr + rn[None, :] * K + rk[:, None], mask=wm, other=0)\n",
           "    acc = acc.to(tl.float32) * tl.load(xs_ptr + rm, mask=rm < M, other=0.0)[:, None]\n"
           + _CHANNEL_SCALE, int8=True),
    Format("spk.linear_fp8", "q_ptr, s_ptr", "",
           "        b = tl.load(q_ptr + rn[None, :] * K + rk[:, None], mask=wm, other=0).to(tl.int32)\n"
           "        e = (b >> 3) & 0xF\n"
           "        m = (b & 0x7).to(tl.float32)\n"
           "        # 2**(e - 7) with its bits written directly, (1 + m/8) * that; e == 0 is subnormal\n"
           "        p = ((e + 120) << 23).to(tl.float32, bitcast=True)\n"
           "        mag = tl.where(e == 0, m * 0.001953125, (1.0 + m * 0.125) * p)\n"
           "        mag = tl.where((b & 0x7F) == 0x7F, float('nan'), mag)\n"
           "        w = tl.where((b & 0x80) != 0, -mag, mag)\n",
           _CHANNEL_SCALE),
    Format("spk.linear_w4g", "q_ptr, s_ptr, z_ptr", "GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, ",
           "        byte = tl.load(q_ptr + rn[None, :] * (K // 2) + rk[:, None] // 2, mask=wm, other=0)\n"
           "        code = ((byte >> ((rk[:, None] % 2) * 4)) & 0xF).to(tl.float32)\n"
           "        g = rn[None, :] * (K // GROUP) + rk[:, None] // GROUP\n"
           "        s = tl.load(s_ptr + g, mask=wm, other=0.0)\n"
           "        if HAS_ZEROS:\n"
           "            z = tl.load(z_ptr + g, mask=wm, other=0).to(tl.float32)\n"
           "        else:\n"
           f"            z = {float(INT4_SYMMETRIC_ZERO)}\n"
           "        w = (code - z) * s\n",
           ""),
    Format("spk.linear_sparse24", "v_ptr, m_ptr", "MCOLS: tl.constexpr, ",
           "        grp = rk[:, None] // 4\n"
           "        pos = rk[:, None] % 4\n"
           "        nib = (tl.load(m_ptr + rn[None, :] * MCOLS + grp // 2, mask=wm, other=0).to(tl.int32)\n"
           "               >> ((grp % 2) * 4)) & 0xF\n"
           "        v = v_ptr + rn[None, :] * (K // 2) + grp * 2\n"
           "        v0 = tl.load(v, mask=wm, other=0.0).to(tl.float32)\n"
           "        v1 = tl.load(v + 1, mask=wm, other=0.0).to(tl.float32)\n"
           "        w = tl.where(pos == (nib & 3), v0, tl.where(pos == ((nib >> 2) & 3), v1, 0.0))\n",
           ""),
)}

# LLM.int8()'s outlier columns: x arrives with them zeroed (so the int8 part never sees
# them), and their float32 values `xo [M, MO]` times `oweight [N, MO]` join the scaled
# accumulator before the bias, in the reference's order
_OUTLIERS = ("    for o0 in range(0, MO, 16):\n"
             "        ro = o0 + tl.arange(0, 16)\n"
             "        xo = tl.load(xo_ptr + rm[:, None] * MO + ro[None, :],\n"
             "                     mask=(rm[:, None] < M) & (ro[None, :] < MO), other=0.0)\n"
             "        ow = tl.load(ow_ptr + rn[None, :] * MO + ro[:, None],\n"
             "                     mask=(ro[:, None] < MO) & (rn[None, :] < N), other=0.0).to(tl.float32)\n"
             "        acc += tl.dot(xo, ow, input_precision=\"ieee\")\n")
for _base in ("spk.linear_w8a8", "spk.linear_w8"):
    _f = FORMATS[_base]
    FORMATS[_base + "_split"] = Format(_base + "_split", _f.params + ", xo_ptr, ow_ptr, MO", _f.consts,
                                       _f.decode, _f.epilogue + _OUTLIERS, _f.int8, split=True)

_DENSE = Format("aten.linear", "w_ptr", "",
                "        w = tl.load(w_ptr + rn[None, :] * K + rk[:, None], mask=wm, other=0.0)"
                ".to(tl.float32)\n", "")
FORMATS[_DENSE.op] = _DENSE

_TEMPLATE = '''
@triton.jit
def {name}(x_ptr, {params}, b_ptr, {extras}y_ptr, M, N, K, stride_xm, stride_ym,
        HAS_BIAS: tl.constexpr, {consts}{dot_const}BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """{op}: y = {what}, W decoded tile by tile in registers."""
    rm = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    rn = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)
    acc = tl.full((BM, BN), 0, dtype={acc})
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        xm = (rm[:, None] < M) & (rk[None, :] < K)
        wm = (rk[:, None] < K) & (rn[None, :] < N)
{load_x}{decode}{cast_w}{dot_line}
{epilogue}    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0)[None, :]
    ym = (rm[:, None] < M) & (rn[None, :] < N)
{fused}    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc{store_cast}, mask=ym)
'''

HEADER = "import triton\nimport triton.language as tl\n"

# how an epilogue's extra operand is loaded, by `schedule.epilogue_kind`
_EXTRA_LOAD = {
    "one": "tl.load({p})",
    "col": "tl.load({p} + rn, mask=rn < N, other=0.0)[None, :]",
    "row": "tl.load({p} + rm, mask=rm < M, other=0.0)[:, None]",
    "full": "tl.load({p} + rm[:, None] * N + rn[None, :], mask=ym, other=0.0)",
}


def kernel_name(op: str) -> str:
    return "spk_gemm_" + op.removeprefix("spk.linear_").removeprefix("aten.")


def kernel_source(op: str, name: str | None = None, fused: str = "", extras: Sequence[str] = (),
                  dtype: str = "f32") -> str:
    """The Triton source of the GEMM for linear `op` (one `@triton.jit` function) on `dtype`
    activations; `fused` are epilogue lines rewriting `acc` (the linear's exact value, bias
    included), reading the extra operands of kinds `extras` as `e0, e1, ...`.

    16-bit activations (f16, bf16) enter `tl.dot` as they are, the decoded weight tile cast
    to their type (tensor cores; float32 accumulation); f32 ones take an IEEE float32 dot
    (Triton's default TF32 would cost ~1e-3)."""
    f = FORMATS[op]
    half = dtype != "f32" and not f.int8
    up = ".to(tl.float32)" if dtype != "f32" else ""
    loads = "".join(f"    e{i} = {_EXTRA_LOAD[kind].format(p=f'e{i}_ptr')}{up}\n"
                    for i, kind in enumerate(extras))
    what = "x @ W^T + bias" + (", then its epilogue" if fused else "")
    return _TEMPLATE.format(
        name=name or kernel_name(op), params=f.params, consts=f.consts, op=op, what=what,
        extras="".join(f"e{i}_ptr, " for i in range(len(extras))),
        acc="tl.int32" if f.int8 else "tl.float32",
        load_x=_X_INT8 if f.int8 else (_X_HALF if half else _X_FLOAT), decode=f.decode,
        cast_w="        w = w.to(x.dtype)\n" if half else "",
        dot_line=_BF16_DOT if half and dtype == "bf16" else
        "        acc += tl.dot(x, w{})".format(", out_dtype=tl.int32" if f.int8 else
                                              ("" if half else ', input_precision="ieee"')),
        dot_const="DOT_F32: tl.constexpr, " if half and dtype == "bf16" else "",
        epilogue=f.epilogue, fused=loads + fused,
        store_cast=".to(y_ptr.dtype.element_ty)" if dtype != "f32" else "")


@dataclass(frozen=True)
class TritonGemm:
    """A linear's kernel inputs: its weights as the format's parameters take them."""

    op_name: str
    symbol: str
    n: int
    k: int
    weights: tuple[torch.Tensor, ...] = field(repr=False)
    consts: dict = field(default_factory=dict)
    act_row_bytes: int = 0          # w8a8: a row kernel may write its int8 input rows
    library_when_alone: bool = False
    source: str = ""                # instantiated per step, with that step's epilogue


def gemm_kernel(op: Op, weights: list[torch.Tensor]) -> TritonGemm | None:
    """The kernel inputs for linear `op` with its weight-role tensors (None: no kernel)."""
    if op.name not in FORMATS or not weights or weights[0].dim() != 2:
        return None
    try:
        bound = OPS[op.name].bind(op)
    except Exception:  # an op that does not fit its record is not ours to compile
        return None
    x = op.operands[0].type
    if not isinstance(x, TensorType) or x.dtype not in FLOAT_TYPES:
        return None
    for i in bound.positions_of(BIAS):
        b = op.operands[i].type
        if not isinstance(b, TensorType) or b.dtype not in FLOAT_TYPES:
            return None
    w, consts = list(weights), {}
    a = op.attributes
    if op.name == "aten.linear" and w[0].dtype != torch_dtype(x.dtype):
        return None
    if op.name == "spk.linear_fp8":
        w = [w[0].view(torch.uint8), w[1]]
    elif op.name == "spk.linear_w4g":
        sym = a["symmetric"]
        w = [w[0], w[1], w[1] if sym else w[2]]  # a symmetric weight passes no zeros
        consts = {"GROUP": a["group"], "HAS_ZEROS": not sym}
    elif op.name == "spk.linear_sparse24":
        consts = {"MCOLS": w[1].shape[1]}
    elif FORMATS[op.name].split:
        w = [w[0], w[1], w[2].contiguous(), w[3]]  # q, scale, oweight [N, MO], oindex [MO]
    n = w[0].shape[0]
    k = x.shape[-1]
    if not isinstance(k, int):
        return None
    return TritonGemm(op.name, kernel_name(op.name), n, k, tuple(t.contiguous() for t in w), consts,
                      act_row_bytes=k if FORMATS[op.name].int8 else 0,
                      library_when_alone=op.name == "aten.linear")
