"""Reference kernels of the quantized linears (`spk.linear_w8`, `_w8a8`, `_w4g`, `_fp8`).

Each follows the format's definition in `compiler.quant` exactly: integer GEMMs accumulate
exactly (int8 x int8 -> int32), int4 codes are unpacked from bytes, fp8 values are widened
exactly, so the numbers are those a real kernel computes (up to float32 summation order in
the weight-only variants, which dequantize then run a float32 GEMM).
"""
from __future__ import annotations

from typing import Any

import torch

from compiler import quant
from compiler.ir import Op

from .reference import kernel


def _bias(args: list[Any], n_fixed: int) -> torch.Tensor | None:
    return args[n_fixed] if len(args) > n_fixed else None


def _float_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = torch.nn.functional.linear(x.float(), w, None if bias is None else bias.float())
    return y.to(x.dtype)


@kernel("spk.linear_w8")
def _linear_w8(op: Op, args: list[Any]) -> torch.Tensor:
    x, q, scale = args[:3]
    return _float_linear(x, quant.dequantize_int8(q, scale), _bias(args, 3))


@kernel("spk.linear_w8a8")
def _linear_w8a8(op: Op, args: list[Any]) -> torch.Tensor:
    x, q, scale = args[:3]
    return quant.linear_w8a8(x, q, scale, _bias(args, 3))


@kernel("spk.linear_fp8")
def _linear_fp8(op: Op, args: list[Any]) -> torch.Tensor:
    x, q, scale = args[:3]
    return _float_linear(x, quant.dequantize_fp8(q, scale), _bias(args, 3))


@kernel("spk.linear_w4g")
def _linear_w4g(op: Op, args: list[Any]) -> torch.Tensor:
    symmetric = op.attributes["symmetric"]
    n_fixed = 3 if symmetric else 4
    x, packed, scale = args[:3]
    zero = None if symmetric else args[3]
    return quant.linear_w4g(x, packed, scale, zero, op.attributes["group"], _bias(args, n_fixed))
