"""Declared op kinds: the invariants and result-type rules of ops the passes rely on.

Any ATen op is representable without a declaration (see `compiler.aten`); declaring one adds
verification. A declaration is a function registered with `@declare("name")` that checks an
op and, where it can, returns the result types it expects (the verifier compares them with
the op's, dynamic dims agreeing with anything). Later issues add `spk.*` compression ops here.
"""
from __future__ import annotations

from typing import Callable

from .ir import NONE, Op, ScalarType, TensorType, Type, TypeAttr

Verify = Callable[[Op], "list[Type] | None"]
DECLARED: dict[str, Verify] = {}


class OpInvalid(Exception):
    """Raised by a declaration; the verifier adds the op, its location and the pass."""


def declare(*names: str):
    def deco(fn: Verify) -> Verify:
        for n in names:
            DECLARED[n] = fn
        return fn
    return deco


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise OpInvalid(message)


def tensor(op: Op, i: int, what: str) -> TensorType:
    expect(i < len(op.operands), f"missing operand #{i} ({what})")
    t = op.operands[i].type
    expect(isinstance(t, TensorType), f"{what} must be a tensor, got {t}")
    return t


def arity(op: Op, lo: int, hi: int | None = None, results: int = 1) -> None:
    hi = lo if hi is None else hi
    n = len(op.operands)
    expect(lo <= n <= hi, f"expects {lo if lo == hi else f'{lo} to {hi}'} operands, got {n}")
    expect(len(op.results) == results, f"expects {results} result(s), got {len(op.results)}")


def _dim_eq(a, b) -> bool:
    return a is None or b is None or a == b


@declare("aten.linear")
def _linear(op: Op):
    arity(op, 2, 3)
    x, w = tensor(op, 0, "input"), tensor(op, 1, "weight")
    expect(w.rank == 2, f"weight must be 2-D [out, in], got {w}")
    expect(x.rank >= 1, "input must have at least one dim")
    expect(_dim_eq(x.shape[-1], w.shape[1]),
           f"input's last dim {x.shape[-1]} != weight's in-features {w.shape[1]}")
    if len(op.operands) == 3:
        b = tensor(op, 2, "bias")
        expect(b.rank == 1 and _dim_eq(b.shape[0], w.shape[0]),
               f"bias must be [{w.shape[0]}], got {b}")
    return [x.with_shape(x.shape[:-1] + (w.shape[0],))]


@declare("aten.layer_norm")
def _layer_norm(op: Op):
    arity(op, 1, 3)
    x = tensor(op, 0, "input")
    shape = op.attributes.get("normalized_shape")
    expect(isinstance(shape, list) and all(isinstance(d, int) for d in shape),
           "normalized_shape must be a list of ints")
    expect(len(shape) <= x.rank and all(_dim_eq(a, b) for a, b in zip(x.shape[-len(shape):], shape)),
           f"normalized_shape {shape} does not match the trailing dims of {x}")
    for i in range(1, len(op.operands)):
        p = tensor(op, i, "weight/bias")
        expect(list(p.shape) == shape, f"weight/bias must have shape {shape}, got {p}")
    return [x]


@declare("aten.gelu")
def _gelu(op: Op):
    arity(op, 1)
    approx = op.attributes.get("approximate", "none")
    expect(approx in ("none", "tanh"), f"approximate must be \"none\" or \"tanh\", got {approx!r}")
    return [tensor(op, 0, "input")]


@declare("aten.relu", "aten.silu", "aten.tanh", "aten.sigmoid", "aten.neg", "aten.rsqrt",
         "aten.exp", "aten.clone")
def _unary_same(op: Op):
    arity(op, 1)
    return [tensor(op, 0, "input")]


@declare("aten.softmax.int", "aten._softmax")
def _softmax(op: Op):
    arity(op, 1)
    x = tensor(op, 0, "input")
    dim = op.attributes.get("dim")
    expect(isinstance(dim, int) and -max(x.rank, 1) <= dim < max(x.rank, 1),
           f"dim {dim} out of range for {x}")
    return None  # the dtype argument may change the element type


@declare("spk.constant")
def _constant(op: Op):
    arity(op, 0)
    v = op.attributes.get("value")
    t = op.result.type
    expect(isinstance(t, ScalarType), f"spk.constant yields a scalar type, got {t}")
    kinds = {"i1": bool, "i64": int, "f64": float}
    want = kinds.get(t.name)
    expect(want is not None and type(v) is want, f"value {v!r} does not fit type {t}")
    return None


@declare("spk.none")
def _none(op: Op):
    arity(op, 0)
    return [NONE]


@declare("spk.fused")
def _fused(op: Op):
    expect(len(op.regions) == 1 and len(op.regions[0].blocks) == 1,
           "spk.fused has exactly one region with one block")
    block = op.regions[0].block
    expect([a.type for a in block.args] == [v.type for v in op.operands],
           "the region's arguments must have the operand types")
    expect(block.ops and block.ops[-1].name == "spk.yield", "the region must end with spk.yield")
    got = [v.type for v in block.ops[-1].operands]
    expect(got == [r.type for r in op.results],
           f"spk.yield gives ({', '.join(map(str, got))}) but the op returns "
           f"({', '.join(str(r.type) for r in op.results)})")
    return None


@declare("spk.yield")
def _yield(op: Op):
    expect(not op.results, "spk.yield has no results")
    parent = op.parent.parent.parent if op.parent and op.parent.parent else None
    expect(parent is not None and parent.name == "spk.fused", "spk.yield only ends a spk.fused region")
    return None


def dtype_attr_ok(v) -> bool:
    return isinstance(v, TypeAttr)


# The compression ops are declared beside their numerics; importing registers them.
from . import quant  # noqa: E402,F401
from . import sparse  # noqa: E402,F401
from . import outliers  # noqa: E402,F401
