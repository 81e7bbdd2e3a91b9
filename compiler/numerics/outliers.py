"""The numbers of `spk.linear_w8a8_split` / `spk.linear_w8_split` (declared in
`compiler.dialect.spk`): LLM.int8()'s mixed-precision decomposition as one op.

    "spk.linear_w8a8_split"(x, qweight i8 [N, K], scale f32 [N], oweight [N, M], oindex i64 [M], bias?)

computes `linear_w8a8(x', qweight, scale) + x[..., oindex] @ oweight^T (+ bias)` where `x'` is
`x` with the M outlier columns `oindex` set to zero (so they neither enter the int8 GEMM nor
set any token's int8 scale) - the int8 part is exactly `spk.linear_w8a8`'s (`compiler.numerics.quant`);
the outlier part is a float GEMM in `oweight`'s dtype (the model's float type). `qweight`'s
outlier columns are stored as zeros. `spk.linear_w8_split` has the same operands and keeps
the activations in float: it is `linear(x, W)` with `W` the int8 weight dequantized and the
outlier columns `oweight` put back (`split_weight`), so the outlier columns no
longer set the per-row int8 scale of the other weights. Written by `passes/outlier_split.py`.
"""
from __future__ import annotations

import torch

from . import quant


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


def split_weight(qweight: torch.Tensor, scale: torch.Tensor, oweight: torch.Tensor,
                 oindex: torch.Tensor) -> torch.Tensor:
    """The float32 [N, K] weight of a split linear: int8 part with the outlier columns put back."""
    w = quant.dequantize_int8(qweight, scale)
    w[:, oindex] = oweight.float()
    return w
