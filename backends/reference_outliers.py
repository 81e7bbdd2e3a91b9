"""Reference kernel of `spk.linear_w8a8_split` (LLM.int8() decomposition; `compiler.outliers`)."""
from __future__ import annotations

from typing import Any

import torch

from spokeshave.compiler import outliers
from spokeshave.compiler.ir import Op

from .reference import kernel


@kernel("spk.linear_w8a8_split")
def _linear_w8a8_split(op: Op, args: list[Any]) -> torch.Tensor:
    x, q, scale, ow, oi = args[:5]
    return outliers.linear_w8a8_split(x, q, scale, ow, oi, args[5] if len(args) > 5 else None)
