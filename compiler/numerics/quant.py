"""Quantization numerics shared by passes and backends, and the quantized linear ops.

One definition of every format, so that what a pass stores is exactly what a backend reads:

* `w8`    int8 weights, symmetric per output channel: `w ~ q * scale[n]`, q in [-127, 127].
* `w8a8`  the same weights, plus activations quantized per token at run time (dynamic,
          symmetric, q in [-127, 127]); the GEMM is int8 x int8 with exact int32
          accumulation, then `float32(acc) * x_scale[token] * w_scale[n] (+ bias)`.
* `w8a8g` the same weights; activations quantized per token in groups of `group` input
          columns, asymmetric (`x ~ (q - zero) * scale` over a range that includes 0,
          q in [-127, 127], zero an integer in [-127, 127]): finer and one bit better
          used than per-token symmetric codes for the skewed inputs of FFN-down (GELU
          outputs) and massive-activation tokens. Each group's int32 partial sum is
          exact; groups combine in float32 (see `linear_w8a8g`).
* `w4g`   int4 weights in groups of `group` input columns, per output row. Symmetric:
          codes u in [0, 15] with an implicit zero point of 8, `w ~ (u - 8) * scale`,
          scale = absmax / 7. Asymmetric: `w ~ (u - zero) * scale` with
          scale = (max - min) / 15 over a range that includes 0 and an integer zero point
          in [0, 15]. Codes are packed two per byte (`uint8`): column 2j in the low nibble,
          column 2j+1 in the high nibble, so the packed weight is `[N, K/2]`.
* `fp8`   weights as `float8_e4m3fn` with a per-output-channel float32 scale
          (absmax / 448); computed as `linear(x, float32(w8) * scale)`.

Rounding is round-half-to-even everywhere (`torch.round`, as `rint` in kernels). Scales are
float32. The ops that store these formats (`spk.linear_w8`, `spk.linear_w8a8`,
`spk.linear_w4g`, `spk.linear_fp8`) are declared in `compiler.dialect.spk`; this module holds
only the numbers, so passes (which encode) and kernels (which decode) share one definition.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

INT8_MAX = 127
INT4_LEVELS = 15  # codes 0..15
INT4_SYMMETRIC_ZERO = 8  # the implicit zero point of symmetric codes
FP8_MAX = 448.0   # largest finite float8_e4m3fn
# A range below this is treated as all-zero and gets scale 1: dividing by a denormal scale
# would turn rounding noise into huge codes.
ZERO_RANGE = 1e-12


# ------------------------------------------------------------------ int8 weights / activations


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`w` [N, K] float -> (q int8 [N, K], scale float32 [N]) with `w ~ q * scale[:, None]`."""
    w = w.float()
    scale = int8_channel_scale(w)
    return int8_codes(w, scale), scale


def int8_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The int8 codes of `w` [N, K] on the per-row grid `scale` [N] (computed in `w`'s dtype)."""
    # in place on the one quotient: a weight-sized temporary, not three
    return (w / scale[:, None]).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)


def int8_round(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Round `w` to the int8 grid `scale` (same shape or broadcastable); returns the
    dequantized values. GPTQ's column-by-column solver rounds with it."""
    return torch.round(w / scale).clamp(-INT8_MAX, INT8_MAX) * scale


def int8_channel_scale(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-row scale of an int8 grid: absmax / 127 (1 for an all-zero row)."""
    amax = w.float().abs().amax(dim=1)
    return torch.where(amax > ZERO_RANGE, amax / INT8_MAX, torch.ones_like(amax))


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float().mul_(scale.float()[:, None])


def quantize_per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic activation quantization: every row of the last dim gets its own scale.
    Returns (q int8 like x, scale float32 [..., 1])."""
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > ZERO_RANGE, amax / INT8_MAX, torch.ones_like(amax))
    q = (x / scale).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


# K-chunk of the float32 form of `int8_matmul_exact`: 1024 products of int8 values are at
# most 128 * 128 * 1024 = 2**24 in magnitude, so every partial sum, in any order an
# implementation adds them (FMA or not), is an integer float32 represents exactly.
_EXACT_F32_K = 1024


def int8_matmul_exact(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """`xq @ wq.T` for int8 operands with exact int32 accumulation (returned as int32).

    Done as float32 GEMMs of the integer values over chunks of 1024 columns (each chunk's
    sums are exact, see `_EXACT_F32_K`), the chunks added in float64 (integers below
    2**53: exact); the result is checked to fit int32, as the accumulators of real kernels
    must. A block of weight rows at a time: a whole float copy of the weight is 4x its
    bytes, which was the peak of a streaming compile's calibration run. (Float32 rather
    than one float64 GEMM: on AVX2 about twice the rate, and half the bytes.)"""
    x = xq.to(torch.float32)
    n, k = wq.shape
    acc = torch.empty((*xq.shape[:-1], n), dtype=torch.int32)
    rows = max(1, (1 << 20) // max(k, 1))
    for i in range(0, n, rows):
        wb = wq[i:i + rows].to(torch.float32)
        part = None
        for k0 in range(0, k, _EXACT_F32_K):
            chunk = torch.matmul(x[..., k0:k0 + _EXACT_F32_K], wb[:, k0:k0 + _EXACT_F32_K].t())
            part = chunk.double() if part is None else part.add_(chunk)
        if part is None:   # k == 0
            part = torch.zeros((*xq.shape[:-1], wb.shape[0]), dtype=torch.float64)
        if part.numel() and part.abs().max() > 2**31 - 1:
            raise OverflowError("int8 GEMM accumulator overflows int32")
        acc[..., i:i + rows] = part  # integers, so the cast is exact
    return acc


def linear_w8a8(x: torch.Tensor, wq: torch.Tensor, wscale: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """The reference semantics of `spk.linear_w8a8`."""
    xq, xs = quantize_per_token_int8(x)
    acc = int8_matmul_exact(xq, wq)
    y = acc.to(torch.float32) * xs * wscale.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


# Groups of at most this many columns keep every int32 partial sum of `linear_w8a8g`
# (and of its kernels, whose u8 codes add 128 * colsum) below 2**24, so the partial sums,
# their zero-point corrections and the kernels' float conversions of them are all exact.
W8A8G_MAX_GROUP = 512
W8A8G_LEVELS = 254   # codes -127..127


def quantize_token_groups_int8(x: torch.Tensor, group: int
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic asymmetric activation quantization, one (scale, zero) per token and group of
    `group` columns: `lo = min(min x, 0)`, `hi = max(max x, 0)`, `scale = (hi - lo) / 254`
    (1 when the range is <= 1e-12), `zero = round(-lo / scale) - 127`,
    `q = clamp(round(x / scale) + zero, -127, 127)`. Returns (q int8 like x, scale float32
    [..., K/group], zero float32 [..., K/group], integer-valued)."""
    x = x.float()
    k = x.shape[-1]
    xg = x.reshape(*x.shape[:-1], k // group, group)
    lo = xg.amin(dim=-1).clamp(max=0.0)
    hi = xg.amax(dim=-1).clamp(min=0.0)
    rng = hi - lo
    scale = torch.where(rng > ZERO_RANGE, rng / W8A8G_LEVELS, torch.ones_like(rng))
    zero = torch.round(-lo / scale) - INT8_MAX
    q = (torch.round(xg / scale[..., None]) + zero[..., None]).clamp_(-INT8_MAX, INT8_MAX)
    return q.reshape(x.shape).to(torch.int8), scale, zero


def linear_w8a8g(x: torch.Tensor, wq: torch.Tensor, wscale: torch.Tensor,
                 bias: torch.Tensor | None, group: int) -> torch.Tensor:
    """The reference semantics of `spk.linear_w8a8g`: per group g the exact integer
    `a_g = sum_k q[k] w[n, k] - zero_g * sum_k w[n, k]` (k in g), then in float32,
    rounding each step in this order: `t = a_0 * s_0`, `t = t + a_g * s_g` for g = 1.., then
    `t * w_scale[n] (+ bias)`."""
    q, s, z = quantize_token_groups_int8(x, group)
    n, k = wq.shape
    t = None
    for g in range(k // group):
        cols = slice(g * group, (g + 1) * group)
        acc = int8_matmul_exact(q[..., cols], wq[:, cols]).to(torch.int64)
        colsum = wq[:, cols].to(torch.int64).sum(dim=1)
        part = (acc - z[..., g:g + 1].to(torch.int64) * colsum).to(torch.float32) * s[..., g:g + 1]
        t = part if t is None else t + part
    y = t * wscale.float()
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
        z = (torch.full_like(self.scale, float(INT4_SYMMETRIC_ZERO)) if self.zero is None
             else self.zero.float())
        return s, z.repeat_interleave(self.group, dim=1)[:, :k]


def int4_group_params(w: torch.Tensor, group: int, symmetric: bool) -> GroupParams:
    """Scales/zeros of `w` [N, K] (K divisible by `group`) for round-to-nearest int4."""
    n, k = w.shape
    g = w.float().reshape(n, k // group, group)
    if symmetric:
        amax = g.abs().amax(dim=2)
        scale = torch.where(amax > ZERO_RANGE, amax / 7.0, torch.ones_like(amax))
        return GroupParams(scale, None, group)
    lo = g.amin(dim=2).clamp(max=0.0)
    hi = g.amax(dim=2).clamp(min=0.0)
    span = hi - lo
    scale = torch.where(span > ZERO_RANGE, span / INT4_LEVELS, torch.ones_like(span))
    zero = torch.round(-lo / scale).clamp_(0, INT4_LEVELS).to(torch.uint8)
    return GroupParams(scale, zero, group)


def int4_codes(w: torch.Tensor, params: GroupParams) -> torch.Tensor:
    """Integer codes in [0, 15] (uint8, unpacked `[N, K]`) of `w` under `params`."""
    s, z = params.expand(w.shape[1])
    return torch.round(w.float() / s + z).clamp_(0, INT4_LEVELS).to(torch.uint8)


def int4_round_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Round one column (`w`, `scale`, `zero` all `[N]`) to the int4 grid: (codes in [0, 15]
    as floats, dequantized values). GPTQ's column-by-column solver rounds with it."""
    u = torch.round(w / scale + zero).clamp_(0, INT4_LEVELS)
    return u, (u - zero) * scale


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
    return torch.where(amax > ZERO_RANGE, amax / FP8_MAX, torch.ones_like(amax))


def quantize_fp8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`w` [N, K] -> (float8_e4m3fn [N, K], scale float32 [N]), `w ~ float(q) * scale`."""
    scale = fp8_channel_scale(w)
    return fp8_codes(w.float(), scale), scale


def fp8_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`w` [N, K] as float8_e4m3fn on the per-row scale `scale` [N] (divided in `w`'s dtype)."""
    return (w / scale[:, None]).float().clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def fp8_round(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Round `w` to the fp8 e4m3 grid scaled by `scale` (same shape or broadcastable);
    returns the dequantized values. Used by GPTQ's column-by-column solver."""
    q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float32).to(torch.float8_e4m3fn)
    return q.to(w.dtype) * scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * scale.float()[:, None]
