"""What a compiled function accepts: one `InputSpec` per user input, with the ranges of its
dynamic dims, and the check every call and calibration batch goes through.

    specs = specs_from_program(ep)     # from torch.export: symbols and their value ranges
    specs = specs_from_function(func)  # from IR alone: `?` dims, unbounded
    check_inputs(flat, specs, "call")  # SpokeshaveError naming the input, the dim and the bound

A dynamic dim is a `SymDim`: a symbol (dims that share one must be equal in a call: an
`input_ids` and its `attention_mask` share the sequence length) and a closed range. torch
reports a lower bound of 2 for every unbacked-by-example dim because it specialises sizes 0
and 1 while tracing, not because the model needs two rows; the generated code is
size-generic, so such a bound is read as 1 (a batch of one is the most common call). Specs
are plain data (`to_json`/`from_json`), so an artifact's manifest can carry them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import SpokeshaveError
from .ir import Function, TensorType, dtype_name, torch_dtype


@dataclass(frozen=True)
class SymDim:
    """A dynamic dim: `symbol` names it (equal symbols, equal sizes), `lo..hi` bounds it."""

    symbol: str
    lo: int = 1
    hi: int | None = None  # None: no upper bound

    def __str__(self) -> str:
        return f"{self.symbol} in {self.lo}..{'' if self.hi is None else self.hi}"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str                                  # IR element type (`f32`, `i64`)
    shape: tuple[int | SymDim, ...] | None      # None: not a tensor (a scalar input)

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.dtype}"
        dims = ", ".join(str(d) if isinstance(d, int) else f"?{d}" for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def to_json(self) -> dict[str, Any]:
        shape = None if self.shape is None else [
            d if isinstance(d, int) else {"symbol": d.symbol, "min": d.lo, "max": d.hi}
            for d in self.shape]
        return {"name": self.name, "dtype": self.dtype, "shape": shape}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "InputSpec":
        shape = data["shape"]
        if shape is not None:
            shape = tuple(d if isinstance(d, int) else SymDim(str(d["symbol"]), int(d["min"]),
                                                              None if d["max"] is None else int(d["max"]))
                          for d in shape)
        return cls(str(data["name"]), str(data["dtype"]), shape)


def _lower_bound(lo: int) -> int:
    return 1 if lo == 2 else max(lo, 0)


def _finite(bound: Any) -> int | None:
    """A sympy range bound as an int; None for torch's int_oo (which claims to be finite)."""
    try:
        text = str(bound)
        return None if "oo" in text else int(text)
    except (TypeError, ValueError):
        return None


def static_size(d: Any) -> int | None:
    """A traced dim's size if it is a constant: an int, or a SymInt torch replaced by one."""
    if isinstance(d, int):
        return d
    expr = d.node.expr
    return int(expr) if expr.is_number else None


def specs_from_program(ep: torch.export.ExportedProgram) -> list[InputSpec]:
    """The user inputs of an exported program, with the value ranges torch inferred."""
    ranges = ep.range_constraints
    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    specs = []
    for n in ep.graph.nodes:
        if n.op != "placeholder" or n.name not in user:
            continue
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            specs.append(InputSpec(n.name, type(val).__name__, None))
            continue
        dims: list[int | SymDim] = []
        for d in val.shape:
            if static_size(d) is not None:
                dims.append(static_size(d))
                continue
            expr = d.node.expr
            vr = ranges.get(expr)
            lo = _finite(vr.lower) if vr is not None else None
            hi = _finite(vr.upper) if vr is not None else None
            lo = 2 if lo is None else lo
            dims.append(SymDim(str(expr), _lower_bound(lo), hi))
        specs.append(InputSpec(n.name, dtype_name(val.dtype), tuple(dims)))
    return specs


def specs_from_function(func: Function) -> list[InputSpec]:
    """The user inputs of IR with no export behind it: each `?` its own unbounded symbol."""
    specs = []
    for i, v in enumerate(func.user_inputs()):
        t = v.type
        name = v.name_hint or f"arg{i}"
        if not isinstance(t, TensorType):
            specs.append(InputSpec(name, str(t), None))
            continue
        shape = tuple(SymDim(f"{name}.{k}", 0) if d is None else d for k, d in enumerate(t.shape))
        specs.append(InputSpec(name, t.dtype, shape))
    return specs


def check_inputs(flat: Sequence[Any], specs: Sequence[InputSpec], what: str) -> None:
    """Raise one SpokeshaveError naming the first input outside what was compiled."""
    def fail(i: int, x: Any, why: str) -> None:
        got = (f"{tuple(x.shape)} {dtype_name(x.dtype)}" if isinstance(x, torch.Tensor)
               else type(x).__name__)
        raise SpokeshaveError(f"{what}: input {i} ('{specs[i].name}') is {got}, but the model was "
                              f"compiled for {specs[i]}: {why}")

    if len(flat) != len(specs):
        raise SpokeshaveError(f"{what}: got {len(flat)} inputs; the model was compiled for "
                              f"{len(specs)}: {', '.join(str(s) for s in specs)}")
    bound: dict[str, tuple[int, int, int]] = {}  # symbol -> (size, input, dim) where first seen
    for i, (x, spec) in enumerate(zip(flat, specs)):
        if spec.shape is None:
            continue
        if not isinstance(x, torch.Tensor):
            fail(i, x, "expected a tensor")
        if x.dtype != torch_dtype(spec.dtype):
            fail(i, x, f"its dtype must be {torch_dtype(spec.dtype)}")
        if x.dim() != len(spec.shape):
            fail(i, x, f"it must have {len(spec.shape)} dims")
        for k, (n, d) in enumerate(zip(x.shape, spec.shape)):
            if isinstance(d, int):
                if n != d:
                    fail(i, x, f"dim {k} must be {d} (it is static in the compiled model)")
                continue
            if n < d.lo or (d.hi is not None and n > d.hi):
                limit = f"at least {d.lo}" if n < d.lo else f"at most {d.hi}"
                fail(i, x, f"dim {k} is {n}, but it must be {limit}")
            first = bound.setdefault(d.symbol, (n, i, k))
            if first[0] != n:
                fail(i, x, f"dim {k} is {n}, but it must equal dim {first[2]} of input {first[1]} "
                           f"('{specs[first[1]].name}', {first[0]}): both are {d.symbol}")
