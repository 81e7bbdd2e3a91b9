"""`canonicalize`: the canonicalization pattern set, applied greedily to a fixpoint.

Every rule here is exact (bit-for-bit the same result), as MLIR asks of canonicalization:
identity views, copies and casts fold to their input; a full slice folds away; permute and
transpose chains compose; view chains collapse; `x*1`, `x/1`, `x-0` (and `x+0` on integers:
on floats `-0.0 + 0` is `+0.0`, so it is not an identity) fold; sizes of static dims become
constants and arithmetic on constant scalars is evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass

from spokeshave.compiler.aten import SEGMENTS
from spokeshave.compiler.dialect import op_def
from spokeshave.compiler.dialect.py import PY_FUNCTIONS
from spokeshave.compiler.ir import Op, ScalarType, TensorType, Value
from spokeshave.compiler.passmanager import Pass, PassContext, Range, option
from spokeshave.compiler.rewrite import PatternSet, Rewriter, apply_patterns_greedily, pattern

INT64_MAX = 2**63 - 1


def _same_type(op: Op) -> bool:
    return len(op.results) == 1 and op.operands and op.result.type == op.operands[0].type


def _single_dynamic(t) -> bool:
    return isinstance(t, TensorType) and sum(d is None for d in t.shape) <= 1


def _only_attrs(op: Op, allowed: dict) -> bool:
    """Every attribute is one of `allowed` with an allowed value (None: any value)."""
    return all(k in allowed and (allowed[k] is None or v in allowed[k]) for k, v in op.attributes.items())


def constant_value(v: Value):
    """The Python value of an `spk.constant` result, else None."""
    d = v.defining_op
    if d is not None and d.name == "spk.constant":
        return d.attributes["value"]
    return None


@pattern("aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.clone", "aten.contiguous",
         "aten._to_copy", "aten.to.dtype", "aten.dropout")
def fold_identity_copy(op: Op, rw: Rewriter) -> bool:
    """Copies and casts that change neither dtype nor shape (and dropout in eval mode)."""
    if not _same_type(op):
        return False
    ok = {
        "aten.clone": {"memory_format": ("contiguous_format", "preserve_format")},
        "aten.contiguous": {"memory_format": ("contiguous_format",)},
        "aten._to_copy": {"dtype": None, "layout": ("strided",), "device": None, "pin_memory": (False,),
                          "non_blocking": None, "memory_format": ("preserve_format", "contiguous_format")},
        "aten.to.dtype": {"dtype": None, "non_blocking": None, "copy": None,
                          "memory_format": ("preserve_format",)},
        "aten.dropout": {"p": None, "train": (False,)},
    }.get(op.name, {})
    if not _only_attrs(op, ok) or (op.name == "aten.dropout" and op.attributes.get("train") is not False):
        return False
    rw.replace_op(op, [op.operands[0]])
    return True


@pattern("aten.view", "aten.reshape", "aten._unsafe_view", "aten.expand")
def fold_identity_reshape(op: Op, rw: Rewriter) -> bool:
    """A reshape to the shape it already has. With one dynamic dim the numel pins it down;
    expand may broadcast a dynamic dim from 1, so it needs fully static shapes."""
    if not _same_type(op):
        return False
    t = op.result.type
    if op.name == "aten.expand" and not t.is_static:
        return False
    if not _single_dynamic(t):
        return False
    rw.replace_op(op, [op.operands[0]])
    return True


@pattern("aten.view", "aten.reshape", "aten._unsafe_view")
def collapse_reshape_chain(op: Op, rw: Rewriter) -> bool:
    """view(view(x, a), b) -> view(x, b) when b is a constant shape."""
    src = op.operands[0].defining_op
    if (src is None or src.name not in ("aten.view", "aten.reshape", "aten._unsafe_view")
            or SEGMENTS in op.attributes or len(op.operands) != 1 or op.name != src.name):
        return False
    new = rw.insert_before(op, Op(op.name, [src.operands[0]], [op.result.type], dict(op.attributes)))
    rw.replace_op(op, [new.result])
    return True


@pattern("aten.slice.Tensor")
def fold_full_slice(op: Op, rw: Rewriter) -> bool:
    if not _same_type(op) or SEGMENTS in op.attributes or len(op.operands) != 1:
        return False
    t = op.result.type
    dim = op.attributes.get("dim", 0)
    start, end, step = (op.attributes.get(k, d) for k, d in (("start", 0), ("end", INT64_MAX), ("step", 1)))
    if not isinstance(t, TensorType) or type(dim) is not int or not all(
            v is None or type(v) is int for v in (start, end, step)):
        return False
    size = t.shape[dim] if -t.rank <= dim < t.rank else None
    if start in (0, None) and step == 1 and (end in (None, INT64_MAX) or (size is not None and end >= size)):
        rw.replace_op(op, [op.operands[0]])
        return True
    return False


def _permutation(op: Op) -> list[int] | None:
    """A permute's `dims` normalised to non-negative, if it is a valid permutation of the
    operand's dims (else None: the verifier or the backend reports malformed ops, not us)."""
    dims = op.attributes.get("dims")
    t = op.operands[0].type if len(op.operands) == 1 else None
    if not isinstance(t, TensorType) or not isinstance(dims, list) or len(dims) != t.rank:
        return None
    if not all(type(d) is int and -t.rank <= d < t.rank for d in dims):
        return None
    dims = [d % t.rank for d in dims] if t.rank else []
    return dims if sorted(dims) == list(range(t.rank)) else None


@pattern("aten.permute")
def compose_permutes(op: Op, rw: Rewriter) -> bool:
    dims = _permutation(op)
    if dims is None:
        return False
    rank = len(dims)
    if dims == list(range(rank)) and _same_type(op):
        rw.replace_op(op, [op.operands[0]])
        return True
    src = op.operands[0].defining_op
    if src is None or src.name != "aten.permute" or _permutation(src) is None:
        return False
    inner = _permutation(src)
    composed = [inner[d] for d in dims]
    new = rw.insert_before(op, Op("aten.permute", [src.operands[0]], [op.result.type], {"dims": composed}))
    rw.replace_op(op, [new.result])
    return True


@pattern("aten.t", "aten.transpose.int")
def cancel_transposes(op: Op, rw: Rewriter) -> bool:
    src = op.operands[0].defining_op
    if src is None or src.name != op.name:
        return False
    rank = op.result.type.rank
    if not all(type(o.attributes.get(k, 0)) is int for o in (op, src) for k in ("dim0", "dim1")):
        return False

    def pair(o):
        return tuple(sorted(d % max(rank, 1) for d in (o.attributes.get("dim0", 0), o.attributes.get("dim1", 1))))
    if op.name == "aten.transpose.int" and pair(op) != pair(src):
        return False
    if src.operands[0].type != op.result.type:
        return False
    rw.replace_op(op, [src.operands[0]])
    return True


def _is_int_tensor(t) -> bool:
    return isinstance(t, TensorType) and (t.dtype.startswith(("i", "ui")))


@pattern("aten.add.Tensor", "aten.add.Scalar", "aten.sub.Tensor", "aten.sub.Scalar",
         "aten.mul.Tensor", "aten.mul.Scalar", "aten.div.Tensor", "aten.div.Scalar")
def fold_arith_identity(op: Op, rw: Rewriter) -> bool:
    """x*1, x/1, x-0 -> x; x+0 -> x on integer tensors only (see the module docstring)."""
    if len(op.operands) != 1 or "other" not in op.attributes or not _same_type(op):
        return False
    if set(op.attributes) - {"other", "alpha"} or op.attributes.get("alpha", 1) != 1:
        return False
    other = op.attributes["other"]
    if isinstance(other, bool):
        return False
    kind = op.name.split(".")[1]
    if kind in ("mul", "div") and other == 1:
        ok = True
    elif kind == "sub" and other == 0:
        ok = True
    elif kind == "add" and other == 0:
        ok = _is_int_tensor(op.result.type)
    else:
        ok = False
    if ok:
        rw.replace_op(op, [op.operands[0]])
    return ok


@pattern("aten.sym_size.int")
def fold_static_size(op: Op, rw: Rewriter) -> bool:
    t = op.operands[0].type
    dim = op.attributes.get("dim")
    if not isinstance(t, TensorType) or not isinstance(dim, int) or not -t.rank <= dim < t.rank:
        return False
    size = t.shape[dim]
    if size is None:
        return False
    c = rw.insert_before(op, Op("spk.constant", [], [ScalarType("i64")], {"value": size}))
    rw.replace_op(op, [c.result])
    return True


@pattern(*(f"py.{q}" for q in PY_FUNCTIONS))
def fold_scalar_arith(op: Op, rw: Rewriter) -> bool:
    """An op whose record can fold it (symbolic-size arithmetic), on constant operands."""
    d = op_def(op.name)
    vals = [constant_value(v) for v in op.operands]
    if d is None or d.fold is None or any(v is None for v in vals) or len(op.results) != 1:
        return False
    try:
        out = d.fold(op, vals)
    except (ArithmeticError, ValueError, TypeError):
        return False  # e.g. division by zero: leave it for run time to report
    kinds = {"i64": int, "f64": float, "i1": bool}
    want = kinds.get(str(op.result.type))
    if want is None or type(out) is not want:
        return False
    c = rw.insert_before(op, Op("spk.constant", [], [op.result.type], {"value": out}))
    rw.replace_op(op, [c.result])
    return True


CANONICALIZATION_PATTERNS = PatternSet(
    fold_identity_copy,
    fold_identity_reshape,
    collapse_reshape_chain,
    fold_full_slice,
    compose_permutes,
    cancel_transposes,
    fold_arith_identity,
    fold_static_size,
    fold_scalar_arith,
)


@dataclass
class Canonicalize(Pass):
    """Greedy application of the canonicalization patterns (and removal of dead pure ops)."""

    name = "canonicalize"
    max_rewrites: int = option(0, range=Range(0), why="0: a bound from the IR size",
                               help="fail (pattern ping-pong) beyond this many rewrites")

    def run(self, module, ctx: PassContext) -> bool:
        n = apply_patterns_greedily(module, CANONICALIZATION_PATTERNS, self.max_rewrites or None)
        ctx.stat(self.name, "rewrites", n)
        return n > 0
