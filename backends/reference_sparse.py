"""Reference kernel of `spk.linear_sparse24`: decompress the 2:4 weight exactly, then a dense
linear ("load compressed, compute dense", as the GPU kernel does)."""
from __future__ import annotations

from typing import Any

import torch

from spokeshave.compiler.ir import Op
from spokeshave.compiler.sparse import decompress_24

from .reference import kernel


@kernel("spk.linear_sparse24")
def _linear_sparse24(op: Op, args: list[Any]) -> torch.Tensor:
    x, values, meta, *bias = args
    w = decompress_24(values, meta)
    return torch.nn.functional.linear(x, w, bias[0] if bias else None)
