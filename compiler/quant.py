"""Quantization numerics shared by passes and backends, and the quantized linear ops.

One definition of every format, so that what a pass stores is exactly what a backend reads:

* `w8`    int8 weights, symmetric per output channel: `w ~ q * scale[n]`, q in [-127, 127].
* `w8a8`  the same weights, plus activations quantized per token at run time (dynamic,
          symmetric, q in [-127, 127]); the GEMM is int8 x int8 with exact int32
          accumulation, then `float32(acc) * x_scale[token] * w_scale[n] (+ bias)`.
* `w4g`   int4 weights in groups of `group` input columns, per output row. Symmetric:
          codes u in [0, 15] with an implicit zero point of 8, `w ~ (u - 8) * scale`,
          scale = absmax / 7. Asymmetric: `w ~ (u - zero) * scale` with
          scale = (max - min) / 15 over a range that includes 0 and an integer zero point
          in [0, 15]. Codes are packed two per byte (`uint8`): column 2j in the low nibble,
          column 2j+1 in the high nibble, so the packed weight is `[N, K/2]`.
* `fp8`   weights as `float8_e4m3fn` with a per-output-channel float32 scale
          (absmax / 448); computed as `linear(x, float32(w8) * scale)`.

Rounding is round-half-to-even everywhere (`torch.round`, as `rint` in kernels). Scales are
float32. The op declarations below (`spk.linear_w8`, `spk.linear_w8a8`, `spk.linear_w4g`,
`spk.linear_fp8`) give the operand order every backend implements.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .ir import Op, TensorType
from .opdefs import _dim_eq, declare, expect, tensor

INT8_MAX = 127
INT4_LEVELS = 15  # codes 0..15
FP8_MAX = 448.0   # largest finite float8_e4m3fn
_EPS = 1e-12


# ------------------------------------------------------------------ int8 weights / activations


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`w` [N, K] float -> (q int8 [N, K], scale float32 [N]) with `w ~ q * scale[:, None]`."""
    w = w.float()
    scale = int8_channel_scale(w)
    q = torch.round(w / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def int8_channel_scale(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-row scale of an int8 grid: absmax / 127 (1 for an all-zero row)."""
    amax = w.float().abs().amax(dim=1)
    return torch.where(amax > _EPS, amax / INT8_MAX, torch.ones_like(amax))


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


def quantize_per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic activation quantization: every row of the last dim gets its own scale.
    Returns (q int8 like x, scale float32 [..., 1])."""
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > _EPS, amax / INT8_MAX, torch.ones_like(amax))
    q = torch.round(x / scale).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def int8_matmul_exact(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """`xq @ wq.T` for int8 operands with exact int32 accumulation (returned as int32).

    Done as a float64 GEMM of the integer values: every product and partial sum is an
    integer below 2**53, so the result is exact; it is checked to fit int32, as the
    accumulators of real kernels must."""
    acc = torch.matmul(xq.to(torch.float64), wq.to(torch.float64).t())
    if acc.numel() and acc.abs().max() > 2**31 - 1:
        raise OverflowError("int8 GEMM accumulator overflows int32")
    return acc.to(torch.int32)


def linear_w8a8(x: torch.Tensor, wq: torch.Tensor, wscale: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """The reference semantics of `spk.linear_w8a8`."""
    xq, xs = quantize_per_token_int8(x)
    acc = int8_matmul_exact(xq, wq)
    y = acc.to(torch.float32) * xs * wscale.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


# ------------------------------------------------------------------ group-wise int4


@dataclass(frozen=True)
class GroupParams:
    """Scales (and zero points) of a group-wise int4 weight: `[N, K/group]` each."""

    scale: torch.Tensor          # float32
    zero: torch.Tensor | None    # uint8 codes, None when symmetric (implicit 8)
    group: int

    def expand(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column scale and zero `[N, K]` (zero as float)."""
        s = self.scale.repeat_interleave(self.group, dim=1)[:, :k]
        z = (torch.full_like(self.scale, 8.0) if self.zero is None else self.zero.float())
        return s, z.repeat_interleave(self.group, dim=1)[:, :k]


def int4_group_params(w: torch.Tensor, group: int, symmetric: bool) -> GroupParams:
    """Scales/zeros of `w` [N, K] (K divisible by `group`) for round-to-nearest int4."""
    n, k = w.shape
    g = w.float().reshape(n, k // group, group)
    if symmetric:
        amax = g.abs().amax(dim=2)
        scale = torch.where(amax > _EPS, amax / 7.0, torch.ones_like(amax))
        return GroupParams(scale, None, group)
    lo = g.amin(dim=2).clamp(max=0.0)
    hi = g.amax(dim=2).clamp(min=0.0)
    span = hi - lo
    scale = torch.where(span > _EPS, span / INT4_LEVELS, torch.ones_like(span))
    zero = torch.round(-lo / scale).clamp_(0, INT4_LEVELS).to(torch.uint8)
    return GroupParams(scale, zero, group)


def int4_codes(w: torch.Tensor, params: GroupParams) -> torch.Tensor:
    """Integer codes in [0, 15] (uint8, unpacked `[N, K]`) of `w` under `params`."""
    s, z = params.expand(w.shape[1])
    return torch.round(w.float() / s + z).clamp_(0, INT4_LEVELS).to(torch.uint8)


def int4_round_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Round one column (`w`, `scale`, `zero` all `[N]`) to the int4 grid; returns the
    dequantized values. Used by GPTQ's column-by-column solver."""
    u = torch.round(w / scale + zero).clamp_(0, INT4_LEVELS)
    return (u - zero) * scale


def dequantize_int4(codes: torch.Tensor, params: GroupParams) -> torch.Tensor:
    s, z = params.expand(codes.shape[1])
    return (codes.float() - z) * s


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """`[N, K]` codes in [0, 15] -> `[N, K/2]` uint8, column 2j low nibble, 2j+1 high."""
    if codes.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even number of columns, got {codes.shape[-1]}")
    c = codes.to(torch.uint8)
    return (c[..., 0::2] & 0xF) | ((c[..., 1::2] & 0xF) << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: `[N, K/2]` uint8 -> `[N, K]` uint8 codes."""
    lo = packed & 0xF
    hi = (packed >> 4) & 0xF
    return torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


# ------------------------------------------------------------------ fp8


def fp8_channel_scale(w: torch.Tensor) -> torch.Tensor:
    amax = w.float().abs().amax(dim=1)
    return torch.where(amax > _EPS, amax / FP8_MAX, torch.ones_like(amax))


def quantize_fp8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`w` [N, K] -> (float8_e4m3fn [N, K], scale float32 [N]), `w ~ float(q) * scale`."""
    scale = fp8_channel_scale(w)
    q = (w.float() / scale[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def fp8_round(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Round `w` to the fp8 e4m3 grid scaled by `scale` (same shape or broadcastable);
    returns the dequantized values. Used by GPTQ's column-by-column solver."""
    q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float32).to(torch.float8_e4m3fn)
    return q.to(w.dtype) * scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * scale.float()[:, None]


# ------------------------------------------------------------------ op declarations


def _linear_common(op: Op, n_weight_operands: int, weight_dtype: str, what: str
                   ) -> tuple[TensorType, TensorType, int]:
    """Checks x / weight / optional trailing bias; returns (x, weight, N)."""
    lo = 1 + n_weight_operands
    n = len(op.operands)
    expect(n in (lo, lo + 1), f"expects {lo} operands (+ an optional bias), got {n}")
    expect(len(op.results) == 1, f"expects 1 result, got {len(op.results)}")
    x, w = tensor(op, 0, "input"), tensor(op, 1, what)
    expect(x.dtype in ("f32", "f16", "bf16", "f64"), f"input must be a float tensor, got {x}")
    expect(w.rank == 2 and w.dtype == weight_dtype,
           f"{what} must be a 2-D {weight_dtype} tensor [out, in], got {w}")
    if n == lo + 1:
        b = tensor(op, lo, "bias")
        expect(b.rank == 1 and _dim_eq(b.shape[0], w.shape[0]), f"bias must be [{w.shape[0]}], got {b}")
    return x, w, w.shape[0]


def _channel_scale(op: Op, i: int, n: int) -> None:
    s = tensor(op, i, "scale")
    expect(s.rank == 1 and s.dtype == "f32" and _dim_eq(s.shape[0], n),
           f"scale must be tensor<{n}xf32> (one per output channel), got {s}")


@declare("spk.linear_w8", "spk.linear_w8a8")
def _linear_w8(op: Op):
    """(x, qweight i8 [N, K], scale f32 [N], bias?) -> x[..., N]"""
    x, w, n = _linear_common(op, 2, "i8", "qweight")
    _channel_scale(op, 2, n)
    expect(_dim_eq(x.shape[-1], w.shape[1]), f"input's last dim {x.shape[-1]} != in-features {w.shape[1]}")
    return [x.with_shape(x.shape[:-1] + (n,))]


@declare("spk.linear_fp8")
def _linear_fp8(op: Op):
    """(x, qweight f8E4M3FN [N, K], scale f32 [N], bias?) -> x[..., N]"""
    x, w, n = _linear_common(op, 2, "f8E4M3FN", "qweight")
    _channel_scale(op, 2, n)
    expect(_dim_eq(x.shape[-1], w.shape[1]), f"input's last dim {x.shape[-1]} != in-features {w.shape[1]}")
    return [x.with_shape(x.shape[:-1] + (n,))]


@declare("spk.linear_w4g")
def _linear_w4g(op: Op):
    """(x, qweight ui8 [N, K/2], scale f32 [N, K/group], zeros ui8 [N, K/group] if not
    symmetric, bias?) {group = G, symmetric = true|false} -> x[..., N]"""
    group = op.attributes.get("group")
    sym = op.attributes.get("symmetric")
    expect(isinstance(group, int) and not isinstance(group, bool) and group > 0 and group % 2 == 0,
           f"group must be a positive even integer, got {group!r}")
    expect(isinstance(sym, bool), f"symmetric must be true or false, got {sym!r}")
    x, w, n = _linear_common(op, 2 if sym else 3, "ui8", "qweight")
    k = w.shape[1] * 2
    expect(_dim_eq(x.shape[-1], k), f"input's last dim {x.shape[-1]} != in-features {k} "
                                    f"(qweight packs two int4 per byte)")
    expect(k % group == 0, f"in-features {k} are not divisible by group {group}")
    s = tensor(op, 2, "scale")
    expect(s.dtype == "f32" and s.shape == (n, k // group),
           f"scale must be tensor<{n}x{k // group}xf32>, got {s}")
    if not sym:
        z = tensor(op, 3, "zeros")
        expect(z.dtype == "ui8" and z.shape == (n, k // group),
               f"zeros must be tensor<{n}x{k // group}xui8>, got {z}")
    return [x.with_shape(x.shape[:-1] + (n,))]


QUANT_OPS = ("spk.linear_w8", "spk.linear_w8a8", "spk.linear_w4g", "spk.linear_fp8")


# ------------------------------------------------------------------ weight decoders

# A compressed linear's decoder: (op, its operand values after the input) -> the float32
# [N, K] weight it multiplies by. One definition serves the reference kernels and the passes
# that measure compression error (`lorc`), so both see exactly the stored numbers.
WeightDecoder = Callable[[Op, list], torch.Tensor]
_DECODERS: dict[str, WeightDecoder] = {}


def weight_decoder(*op_names: str) -> Callable[[WeightDecoder], WeightDecoder]:
    def register(fn: WeightDecoder) -> WeightDecoder:
        for name in op_names:
            _DECODERS[name] = fn
        return fn
    return register


def decoder_of(op_name: str) -> WeightDecoder | None:
    return _DECODERS.get(op_name)


def n_weight_operands(op: Op) -> int:
    """How many operands after the input hold the weight (the rest is an optional bias)."""
    if op.name == "spk.linear_w4g":
        return 2 if op.attributes["symmetric"] else 3
    if op.name in ("spk.linear_w8_split", "spk.linear_w8a8_split"):
        return 4  # qweight, scale, oweight, oindex
    return 2


@weight_decoder("spk.linear_w8", "spk.linear_w8a8")
def _decode_int8(op: Op, args: list) -> torch.Tensor:
    return dequantize_int8(args[0], args[1])


@weight_decoder("spk.linear_fp8")
def _decode_fp8(op: Op, args: list) -> torch.Tensor:
    return dequantize_fp8(args[0], args[1])


@weight_decoder("spk.linear_w4g")
def _decode_w4g(op: Op, args: list) -> torch.Tensor:
    zero = None if op.attributes["symmetric"] else args[2]
    return dequantize_int4(unpack_int4(args[0]), GroupParams(args[1].float(), zero, op.attributes["group"]))


def bits_per_weight(op_name: str, k: int, group: int = 0, symmetric: bool = True) -> float:
    """Stored bits per weight, scales and zero points included."""
    if op_name in ("spk.linear_w8", "spk.linear_w8a8", "spk.linear_fp8"):
        return 8.0 + 32.0 / k
    if op_name == "spk.linear_w4g":
        return 4.0 + (32.0 + (0.0 if symmetric else 8.0)) / group
    return 32.0
