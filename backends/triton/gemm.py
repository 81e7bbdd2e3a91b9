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
| `spk.linear_w4g` | repacked (below): `[ceil(K/32)*16, N]` bytes, scale/zeros `[K/G, N]` | per 32-row block, two 16-row tiles (low and high nibbles), minus zero, times the group's scale; a dot each |
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

Layout choice (recorded for `w4g`): the backend repacks the IR's codes once, at build
(`pack_w4g_halves`). In each 32-row block of K, byte i holds row i in its low nibble and row
16 + i in its high one, and the bytes are stored K-major, `[ceil(K/32) * 16, N]`, N
contiguous, with the scales and zeros transposed to `[K/G, N]`. One coalesced `[16, BN]`
byte load then yields two dense `[16, BN]` code tiles, one AND and one shift apart; each
half lies in one group (groups are multiples of 16), so it takes one scale (and zero) per
column. The IR's own packing (`pack_int4`: columns 2j, 2j+1 in one byte) would instead
need the nibbles interleaved back into rows, a register shuffle per tile, or a byte load
per code and a shift by `k % 2`. As in Marlin, the work moves to an offline reshuffle so
the inner loop does none. Marlin goes further: it orders the codes so that one 32-bit load
feeds a tensor-core fragment directly and converts them with `lop3` bit tricks. Triton
does not expose its fragment layout, so the halves layout is the nearest it allows. It
costs two 16-deep `tl.dot`s per 32 rows of K, and 16 is the MMA instruction's own depth
for 16-bit types. The K tile is therefore a multiple of 32 (`Format.min_block_k`).

Split-K (`SPLIT_K`, chosen by the launch tuner for decode shapes): see `_SPLIT_K`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from spokeshave.compiler.dialect import BIAS, OPS
from spokeshave.compiler.ir import Op, TensorType, torch_dtype
from spokeshave.compiler.numerics.quant import INT4_SYMMETRIC_ZERO, unpack_int4

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
    halves: bool = False   # `decode` gives `wl`, `wh`: the K rows `kl`, `kh` of each 32-row block
    min_block_k: int = 16  # the K tile's least size (tl.dot takes 16 or more)


def _load_x(cols: str, mask: str, kind: str, pad: str) -> str:
    """The line loading the x tile at K columns `cols` (`kind`: f32, half or int8)."""
    other, cast = {"f32": ("0.0", ".to(tl.float32)"), "half": ("0.0", ""), "int8": ("0", "")}[kind]
    return f"{pad}x = tl.load(x_ptr + rm[:, None] * stride_xm + {cols}[None, :], mask={mask}, other={other}){cast}\n"


def _dot(kind: str, dtype: str, pad: str) -> str:
    """The lines adding x @ w into acc: int8 into int32, 16-bit activations on tensor cores
    (w cast to x's type), f32 as an IEEE float32 dot (Triton's default TF32 costs ~1e-3)."""
    if kind == "int8":
        return f"{pad}acc += tl.dot(x, w, out_dtype=tl.int32)\n"
    if kind == "f32":
        return f'{pad}acc += tl.dot(x, w, input_precision="ieee")\n'
    cast = f"{pad}w = w.to(x.dtype)\n"
    if dtype != "bf16":
        return cast + f"{pad}acc += tl.dot(x, w)\n"
    # Triton's interpreter multiplies bf16 tiles as their uint16 storage (numpy has no bf16),
    # so there a bf16 kernel's launcher sets DOT_F32: the same exact products (bf16 x bf16
    # fits float32) and float32 sums as the tensor-core dot a GPU compiles from the other branch
    return (cast + f"{pad}if DOT_F32:\n"
            f'{pad}    acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")\n'
            f"{pad}else:\n{pad}    acc += tl.dot(x, w)\n")


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
           "            byte = tl.load(q_ptr + (kb // 2 + tl.arange(0, 16))[:, None] * N + rn[None, :],\n"
           "                           mask=(kl[:, None] < K) & (rn[None, :] < N), other=0)\n"
           "            lo = (byte & 0xF).to(tl.float32)\n"
           "            hi = (byte >> 4).to(tl.float32)\n"
           "            # a half lies in one group (groups are multiples of 16): a scale per column\n"
           "            gl = (kb // GROUP) * N + rn[None, :]\n"
           "            gh = ((kb + 16) // GROUP) * N + rn[None, :]\n"
           "            ml = rn[None, :] < tl.where(kb < K, N, 0)\n"
           "            mh = rn[None, :] < tl.where(kb + 16 < K, N, 0)\n"
           "            if HAS_ZEROS:\n"
           "                zl = tl.load(z_ptr + gl, mask=ml, other=0).to(tl.float32)\n"
           "                zh = tl.load(z_ptr + gh, mask=mh, other=0).to(tl.float32)\n"
           "            else:\n"
           f"                zl = {float(INT4_SYMMETRIC_ZERO)}\n"
           f"                zh = {float(INT4_SYMMETRIC_ZERO)}\n"
           "            wl = (lo - zl) * tl.load(s_ptr + gl, mask=ml, other=0.0)\n"
           "            wh = (hi - zh) * tl.load(s_ptr + gh, mask=mh, other=0.0)\n",
           "", halves=True, min_block_k=32),
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
def {name}(x_ptr, {params}, b_ptr, {extras}y_ptr, ws_ptr, lock_ptr, M, N, K, stride_xm, stride_ym,
        HAS_BIAS: tl.constexpr, {consts}{dot_const}BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        SPLIT_K: tl.constexpr):
    """{op}: y = {what}, W decoded tile by tile in registers."""
    rm = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    rn = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)
    acc = tl.full((BM, BN), 0, dtype={acc})
    if SPLIT_K > 1:
        k_per = (K + BK * SPLIT_K - 1) // (BK * SPLIT_K) * BK
        k_lo = tl.program_id(2) * k_per
        k_hi = tl.minimum(k_lo + k_per, K)
    else:
        k_lo = 0
        k_hi = K
    for k0 in range(k_lo, k_hi, BK):
{body}    ym = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT_K > 1:
{split_k}{epilogue}    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0)[None, :]
{fused}    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc{store_cast}, mask=ym)
'''

# Split-K for decode shapes (few output tiles, a long K): program (i, j, s) sums the s-th
# slice of K. CUTLASS's "serial" reduction: each slice stores its partial tile in the
# workspace [SPLIT_K, M, N]; the slice that arrives last at the tile's counter (atomics
# order the arrivals; the barrier orders each program's stores before its arrival) sums
# the partials in slice order, so the result does not depend on arrival order, resets the
# counter for the next launch, and alone stores the epilogue's result (`ym` is empty for
# the others). The partials are read past L1 (`.cg`), which other SMs' stores bypass.
_SPLIT_K = ("        part = ws_ptr + (tl.program_id(2) * M + rm[:, None]) * N + rn[None, :]\n"
            "        tl.store(part, acc, mask=ym)\n"
            "        tl.debug_barrier()\n"
            "        tile = lock_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)\n"
            "        arrived = tl.atomic_add(tile, 1)\n"
            "        m_live = tl.where(arrived == SPLIT_K - 1, M, 0)\n"
            "        ym = (rm[:, None] < m_live) & (rn[None, :] < N)\n"
            "        acc = tl.full((BM, BN), 0, dtype={acc})\n"
            "        for s in range(SPLIT_K):\n"
            "            acc += tl.load(ws_ptr + (s * M + rm[:, None]) * N + rn[None, :], mask=ym, other=0,\n"
            "                           cache_modifier=\".cg\")\n"
            "        tl.atomic_xchg(tile, 0, mask=arrived == SPLIT_K - 1)\n")

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
    xkind = "int8" if f.int8 else ("half" if half else "f32")
    acc = "tl.int32" if f.int8 else "tl.float32"
    if f.halves:  # each 32-row block of K as its two 16-row halves, a dot each
        body = ("        for b in tl.static_range(BK // 32):\n"
                "            kb = k0 + b * 32\n"
                "            kl = kb + tl.arange(0, 16)\n"
                "            kh = kl + 16\n" + f.decode)
        for k, w in (("kl", "wl"), ("kh", "wh")):
            body += (_load_x(k, f"(rm[:, None] < M) & ({k}[None, :] < K)", xkind, " " * 12)
                     + f"            w = {w}\n" + _dot(xkind, dtype, " " * 12))
    else:
        body = ("        rk = k0 + tl.arange(0, BK)\n"
                "        xm = (rm[:, None] < M) & (rk[None, :] < K)\n"
                "        wm = (rk[:, None] < K) & (rn[None, :] < N)\n"
                + _load_x("rk", "xm", xkind, " " * 8) + f.decode + _dot(xkind, dtype, " " * 8))
    return _TEMPLATE.format(
        name=name or kernel_name(op), params=f.params, consts=f.consts, op=op, what=what,
        extras="".join(f"e{i}_ptr, " for i in range(len(extras))),
        acc=acc, body=body,
        dot_const="DOT_F32: tl.constexpr, " if half and dtype == "bf16" else "",
        split_k=_SPLIT_K.format(acc=acc),
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


def pack_w4g_halves(packed: torch.Tensor, scale: torch.Tensor, zeros: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The IR's w4g tensors (`pack_int4`'s `[N, K/2]` codes, `[N, K/G]` scales and zeros) in
    the kernel's layout: in each 32-row block of K, byte i holds row i in its low nibble and
    row 16 + i in its high one, K-major (`[ceil(K/32) * 16, N]`, N contiguous), scales and
    zeros `[K/G, N]`. One coalesced `[16, BN]` byte load then gives two dense `[16, BN]` code
    tiles, one AND and one shift away, with no interleaving of registers."""
    codes = unpack_int4(packed)
    n, k = codes.shape
    blocks = -(-k // 32)
    padded = torch.zeros(n, blocks * 32, dtype=torch.uint8, device=codes.device)
    padded[:, :k] = codes
    halves = padded.reshape(n, blocks, 2, 16)
    byte = halves[:, :, 0] | (halves[:, :, 1] << 4)
    return (byte.reshape(n, blocks * 16).t().contiguous(), scale.t().contiguous(),
            zeros.t().contiguous())


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
        if a["group"] % 16:
            return None  # a 16-row half of K would span two groups; `quantize` makes none
        sym = a["symmetric"]
        # a symmetric weight passes no zeros (its scales stand in for the unread pointer)
        w = list(pack_w4g_halves(w[0], w[1], w[1] if sym else w[2]))
        consts = {"GROUP": a["group"], "HAS_ZEROS": not sym}
    elif op.name == "spk.linear_sparse24":
        consts = {"MCOLS": w[1].shape[1]}
    elif FORMATS[op.name].split:
        w = [w[0], w[1], w[2].contiguous(), w[3]]  # q, scale, oweight [N, MO], oindex [MO]
    n = weights[0].shape[0]
    k = x.shape[-1]
    if not isinstance(k, int):
        return None
    return TritonGemm(op.name, kernel_name(op.name), n, k, tuple(t.contiguous() for t in w), consts,
                      act_row_bytes=k if FORMATS[op.name].int8 else 0,
                      library_when_alone=op.name == "aten.linear")
