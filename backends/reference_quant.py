"""Reference kernels of the quantized linears (`spk.linear_w8`, `_w8a8`, `_w4g`, `_fp8`).

Each follows the format's definition in `compiler.quant` exactly: integer GEMMs accumulate
exactly (int8 x int8 -> int32), int4 codes are unpacked from bytes, fp8 values are widened
exactly, so the numbers are those a real kernel computes (up to float32 summation order in
the weight-only variants, which dequantize then run a float32 GEMM).
"""
from __future__ import annotations

from typing import Any

import torch

from spokeshave.compiler import quant
from spokeshave.compiler.ir import Op

from .reference import kernel


def _float_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = torch.nn.functional.linear(x.float(), w, None if bias is None else bias.float())
    return y.to(x.dtype)


def _bias(args: list[Any], op: Op) -> torch.Tensor | None:
    n_fixed = 1 + quant.n_weight_operands(op)
    return args[n_fixed] if len(args) > n_fixed else None


@kernel("spk.linear_w8", "spk.linear_fp8", "spk.linear_w4g", "spk.linear_w8_split")
def _linear_weight_only(op: Op, args: list[Any]) -> torch.Tensor:
    """Weight-only formats: decode the stored weight exactly, then a float32 GEMM."""
    w = quant.decoder_of(op.name)(op, args[1:1 + quant.n_weight_operands(op)])
    return _float_linear(args[0], w, _bias(args, op))


@kernel("spk.linear_w8a8")
def _linear_w8a8(op: Op, args: list[Any]) -> torch.Tensor:
    x, q, scale = args[:3]
    return quant.linear_w8a8(x, q, scale, _bias(args, op))
