"""`spk.linear_w8a8_split` / `spk.linear_w8_split`: LLM.int8()'s mixed-precision
decomposition as one op.

    "spk.linear_w8a8_split"(x, qweight i8 [N, K], scale f32 [N], oweight [N, M], oindex i64 [M], bias?)

computes `linear_w8a8(x', qweight, scale) + x[..., oindex] @ oweight^T (+ bias)` where `x'` is
`x` with the M outlier columns `oindex` set to zero (so they neither enter the int8 GEMM nor
set any token's int8 scale) - the int8 part is exactly `spk.linear_w8a8`'s (`compiler.quant`);
the outlier part is a float GEMM in `oweight`'s dtype (the model's float type). `qweight`'s
outlier columns are stored as zeros. `spk.linear_w8_split` has the same operands and keeps
the activations in float: it is `linear(x, W)` with `W` the int8 weight dequantized and the
outlier columns `oweight` put back (the weight decoder below), so the outlier columns no
longer set the per-row int8 scale of the other weights. Written by `passes/outlier_split.py`.
"""
from __future__ import annotations

import torch

from . import quant
from .quant import weight_decoder
from .ir import Op
from .opdefs import _dim_eq, declare, expect, tensor


def linear_w8a8_split(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
                      oweight: torch.Tensor, oindex: torch.Tensor,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """The reference semantics of `spk.linear_w8a8_split`."""
    xr = x.clone()
    xr[..., oindex] = 0
    y = quant.linear_w8a8(xr, qweight, scale, None).float()
    xo = torch.index_select(x, -1, oindex)
    y = y + torch.nn.functional.linear(xo.to(oweight.dtype), oweight).float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


@weight_decoder("spk.linear_w8a8_split", "spk.linear_w8_split")
def split_weight(op: Op, args: list) -> torch.Tensor:
    """The float32 [N, K] weight of a split linear: int8 part with the outlier columns put back."""
    q, scale, ow, oi = args[:4]
    w = quant.dequantize_int8(q, scale)
    w[:, oi] = ow.float()
    return w


@declare("spk.linear_w8a8_split", "spk.linear_w8_split")
def _linear_split(op: Op):
    """(x, qweight i8 [N, K], scale f32 [N], oweight float [N, M], oindex i64 [M], bias?) -> x[..., N]"""
    n_ops = len(op.operands)
    expect(n_ops in (5, 6), f"expects 5 operands (+ an optional bias), got {n_ops}")
    expect(len(op.results) == 1, f"expects 1 result, got {len(op.results)}")
    x, w = tensor(op, 0, "input"), tensor(op, 1, "qweight")
    expect(x.dtype in ("f32", "f16", "bf16", "f64"), f"input must be a float tensor, got {x}")
    expect(w.rank == 2 and w.dtype == "i8", f"qweight must be a 2-D i8 tensor [out, in], got {w}")
    n, k = w.shape
    expect(_dim_eq(x.shape[-1], k), f"input's last dim {x.shape[-1]} != in-features {k}")
    s = tensor(op, 2, "scale")
    expect(s.rank == 1 and s.dtype == "f32" and _dim_eq(s.shape[0], n),
           f"scale must be tensor<{n}xf32> (one per output channel), got {s}")
    ow, oi = tensor(op, 3, "oweight"), tensor(op, 4, "oindex")
    expect(oi.rank == 1 and oi.dtype == "i64", f"oindex must be a 1-D i64 tensor, got {oi}")
    expect(ow.rank == 2 and ow.dtype in ("f32", "f16", "bf16", "f64") and _dim_eq(ow.shape[0], n)
           and _dim_eq(ow.shape[1], oi.shape[0]),
           f"oweight must be a float tensor [{n}, {oi.shape[0]}] (out, outlier columns), got {ow}")
    if n_ops == 6:
        b = tensor(op, 5, "bias")
        expect(b.rank == 1 and _dim_eq(b.shape[0], n), f"bias must be [{n}], got {b}")
    return [x.with_shape(x.shape[:-1] + (n,))]
