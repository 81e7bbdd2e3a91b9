"""The ops a generated row kernel or GEMM epilogue computes, and their expressions, written
once for every backend language.

`EXPRESSIONS` maps each pointwise op to its expression built from its operands' references;
a `Lang` says how the target language spells float literals and the few functions the
expressions call (C++: `spk_exp` from the CPU prelude, `sqrtf`; Triton: `tl.exp`, and the
`spk_*` helpers of the kernel file). `REDUCTIONS` are the last-dim reductions the row
kernels lower, and `row_op_supported` is the one answer to "can a generated kernel compute
this op": derived from those two, so the CPU and Triton backends fuse the same ops.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from spokeshave.compiler.dialect import NO_IDENTITY, POINTWISE, has_trait, op_def, reduces_last_dim
from spokeshave.compiler.errors import InvalidInputError
from spokeshave.compiler.ir import Op, TensorType, Value

REDUCTIONS = ("aten.layer_norm", "aten.rms_norm", "aten.softmax.int", "aten._softmax",
              "aten.mean.dim", "aten.sum.dim_IntList", "aten.amax")


@dataclass(frozen=True)
class Lang:
    """How a backend language spells what the expressions need."""

    literal: Callable[[float], str]   # an attribute, rounded to float32 as torch applies it
    num: Callable[[str], str]         # a decimal constant of a formula ("0.5" -> "0.5f")
    fn: Mapping[str, str]             # exp erf tanh sigmoid relu max min sqrt log abs pow


Ref = Callable[[Value], str]
Expression = Callable[[Op, list[str], Ref, Lang], str]


def operands(op: Op) -> dict[str, Value | None]:
    """The op's operands by their role names in its record."""
    d = op_def(op.name)
    return dict(d.bind(op).values) if d is not None else {}


def _other(op: Op, ref: Ref, L: Lang) -> str:
    vals = operands(op)
    if vals.get("other") is not None:
        return ref(vals["other"])
    return L.literal(op.attributes["other"])


def _alpha(op: Op, rhs: str, L: Lang) -> str:
    alpha = op.attributes.get("alpha", 1)
    return rhs if alpha == 1 else f"({L.literal(alpha)} * {rhs})"


def _pow(op: Op, a: str, L: Lang) -> str:
    e = op.attributes.get("exponent")
    one, sqrt = L.num("1.0"), L.fn["sqrt"]
    table = {2: f"({a} * {a})", 3: f"({a} * {a} * {a})", 1: a, 0.5: f"{sqrt}({a})",
             -1: f"({one} / {a})", -0.5: f"({one} / {sqrt}({a}))"}
    return table.get(e, f"{L.fn['pow']}({a}, {L.literal(e)})")


def _gelu(op: Op, a: str, L: Lang) -> str:
    n = L.num
    if op.attributes.get("approximate", "none") == "tanh":
        return (f"({n('0.5')} * {a} * ({n('1.0')} + {L.fn['tanh']}({n('0.7978845608028654')} * "
                f"({a} + {n('0.044715')} * {a} * {a} * {a}))))")
    return f"({n('0.5')} * {a} * ({n('1.0')} + {L.fn['erf']}({a} * {n('0.7071067811865476')})))"


def _call(name: str) -> Expression:
    return lambda op, a, ref, L: f"{L.fn[name]}({a[0]})"


EXPRESSIONS: dict[str, Expression] = {
    "aten.add.Tensor": lambda op, a, ref, L: f"({a[0]} + {_alpha(op, _other(op, ref, L), L)})",
    "aten.sub.Tensor": lambda op, a, ref, L: f"({a[0]} - {_alpha(op, _other(op, ref, L), L)})",
    "aten.mul.Tensor": lambda op, a, ref, L: f"({a[0]} * {_other(op, ref, L)})",
    "aten.div.Tensor": lambda op, a, ref, L: f"({a[0]} / {_other(op, ref, L)})",
    "aten.add.Scalar": lambda op, a, ref, L: f"({a[0]} + {_alpha(op, _other(op, ref, L), L)})",
    "aten.sub.Scalar": lambda op, a, ref, L: f"({a[0]} - {_alpha(op, _other(op, ref, L), L)})",
    "aten.mul.Scalar": lambda op, a, ref, L: f"({a[0]} * {_other(op, ref, L)})",
    "aten.div.Scalar": lambda op, a, ref, L: f"({a[0]} / {_other(op, ref, L)})",
    "aten.maximum": lambda op, a, ref, L: f"{L.fn['max']}({a[0]}, {a[1]})",
    "aten.minimum": lambda op, a, ref, L: f"{L.fn['min']}({a[0]}, {a[1]})",
    "aten.pow.Tensor_Scalar": lambda op, a, ref, L: _pow(op, a[0], L),
    "aten.gelu": lambda op, a, ref, L: _gelu(op, a[0], L),
    "aten.relu": _call("relu"),
    "aten.silu": lambda op, a, ref, L: f"({a[0]} * {L.fn['sigmoid']}({a[0]}))",
    "aten.sigmoid": _call("sigmoid"),
    "aten.tanh": _call("tanh"),
    "aten.exp": _call("exp"),
    "aten.erf": _call("erf"),
    "aten.neg": lambda op, a, ref, L: f"(-{a[0]})",
    "aten.abs": _call("abs"),
    "aten.sqrt": _call("sqrt"),
    "aten.rsqrt": lambda op, a, ref, L: f"({L.num('1.0')} / {L.fn['sqrt']}({a[0]}))",
    "aten.reciprocal": lambda op, a, ref, L: f"({L.num('1.0')} / {a[0]})",
    "aten.log": _call("log"),
    "aten.clone": lambda op, a, ref, L: a[0],
}


def expression(op: Op, args: list[str], ref: Ref, lang: Lang) -> str:
    """Pointwise `op` in `lang`, its operands referenced as `args` (`ref` for the others)."""
    return EXPRESSIONS[op.name](op, args, ref, lang)


def norm_affine(expr: str, vals: dict[str, Value | None], ref: Ref) -> str:
    """A norm's normalised value `expr` times its weight, plus its bias, where it has them."""
    if vals.get("weight") is not None:
        expr = f"({expr} * {ref(vals['weight'])})"
    if vals.get("bias") is not None:
        expr = f"({expr} + {ref(vals['bias'])})"
    return expr


F32 = frozenset({"f32"})


def float_of(v: Value, float_types: frozenset[str] = F32) -> bool:
    """A tensor value of one of the element types a backend's kernels read and write."""
    return isinstance(v.type, TensorType) and v.type.dtype in float_types


def row_op_supported(op: Op, float_types: frozenset[str] = F32) -> bool:
    """An op a row kernel can compute: tensors of `float_types` in and out (computed in
    float32), pointwise with an expression or a last-dim reduction we lower, no attribute we
    would ignore."""
    if not op.results or not all(float_of(r, float_types) for r in op.results) or len(op.results) != 1:
        return False
    tensor_operands = [v for v in op.operands if isinstance(v.type, TensorType)]
    if (len(tensor_operands) != len(op.operands)
            or not all(float_of(v, float_types) for v in tensor_operands)):
        return False
    a = op.attributes
    if has_trait(op, POINTWISE):
        if op.name not in EXPRESSIONS:
            return False
        if op.name == "aten.div.Tensor" and a.get("rounding_mode") is not None:
            return False
        if "other" in a and not isinstance(a["other"], (int, float)):
            return False
        return True
    if op.name in REDUCTIONS and reduces_last_dim(op):
        if op.name in ("aten.mean.dim", "aten.sum.dim_IntList") and a.get("dtype") is not None:
            return False
        if op.name == "aten._softmax" and a.get("half_to_float", False):
            return False
        if op.name == "aten.softmax.int" and a.get("dtype") is not None:
            return False
        return True
    return False


def is_row_scalar(v: Value) -> bool:
    """A `[..., 1]` (or rank-0) value: one number per row of a row kernel."""
    t = v.type
    return isinstance(t, TensorType) and (t.rank == 0 or t.shape[-1] == 1)


VEC, SCALAR = "vec", "scalar"


@dataclass
class RowKernelRecord:
    """What a generated row kernel is, for any backend: its function and how it is called."""

    symbol: str
    source: str
    ops: tuple[Op, ...]
    inputs: list[Value]
    input_kinds: list[str]
    outputs: list[Value]
    output_kinds: list[str]
    quantized: list[tuple[Value, int]]   # (value, bytes per row) also written as int8 rows

    def identityless_reduction(self) -> Op | None:
        """The first reduction without an identity (amax) among the kernel's ops: a call whose
        rows are empty must be refused, as torch refuses it (`LayoutCache`)."""
        return next((op for op in self.ops if has_trait(op, NO_IDENTITY)), None)


@dataclass(frozen=True)
class RowLayout:
    """How one call of a row kernel iterates its inputs: `rows` rows of `cols` elements over
    the broadcast of the inputs' shapes; per input, its stride in each outer dim (0 where it
    broadcasts) and whether it must first be made contiguous in the last dim."""

    rows: int
    cols: int
    outer: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    contiguous: tuple[bool, ...]
    out_shapes: tuple[tuple[int, ...], ...]


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(out))


def row_layout(args: list[Any], input_kinds: list[str], outputs: list[Value],
               output_kinds: list[str]) -> RowLayout | None:
    """The layout of a call on `args`, or None when it does not fit what was compiled (a dim
    the types left dynamic broadcasts at run time, an output of fewer dims)."""
    shapes = [tuple(t.shape) for t in args]
    try:
        full = tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        return None
    rank = len(full)
    if rank == 0 or any(v.type.rank != rank for v in outputs):
        return None  # an output broadcasts to fewer dims than the kernel iterates
    cols, outer = full[-1], full[:-1]
    rows = 1
    for d in outer:
        rows *= d
    strides, contiguous = [], []
    for t, kind in zip(args, input_kinds):
        shape, stride = tuple(t.shape), t.stride()
        if kind == VEC:
            if not shape or shape[-1] != cols:
                return None  # compiled as a full row, broadcasts at run time
            copy = cols > 1 and stride[-1] != 1
            if copy:
                stride = _contiguous_strides(shape)
        else:
            if shape and shape[-1] != 1:
                return None
            copy = False
        contiguous.append(copy)
        lead = rank - len(shape)
        strides.append(tuple(0 if d - lead < 0 or (shape[d - lead] == 1 and full[d] != 1)
                             else stride[d - lead] for d in range(rank - 1)))
    out_shapes = tuple((*outer, cols) if kind == VEC else (*outer, 1) for kind in output_kinds)
    return RowLayout(rows, cols, tuple(outer), tuple(strides), tuple(contiguous), out_shapes)


class LayoutCache:
    """Per distinct call signature (shapes and strides of float32 tensors), the layout and
    what a backend derives from it once (`prepare(layout)`); None for calls that do not fit."""

    def __init__(self, input_kinds: list[str], outputs: list[Value], output_kinds: list[str],
                 prepare: Callable[[RowLayout], Any], refuses_empty: Op | None = None):
        self.input_kinds, self.outputs, self.output_kinds = input_kinds, outputs, output_kinds
        self.prepare = prepare
        self.refuses_empty = refuses_empty   # `RowKernelRecord.identityless_reduction()`
        self._calls: dict = {}

    def get(self, args: list[Any], dtypes: tuple[torch.dtype, ...] = (torch.float32,)
            ) -> tuple[RowLayout, Any] | None:
        key = []
        for t in args:
            if not isinstance(t, torch.Tensor) or t.dtype not in dtypes:
                return None
            key.append((tuple(t.shape), t.stride()))
        key = tuple(key)
        hit = self._calls.get(key)
        if hit is None:
            if len(self._calls) > 512:
                self._calls.clear()
            lay = row_layout(args, self.input_kinds, self.outputs, self.output_kinds)
            if lay is not None and lay.cols == 0 and self.refuses_empty is not None:
                raise empty_reduction_error(self.refuses_empty)
            hit = self._calls[key] = (lay, self.prepare(lay)) if lay is not None else False
        return hit or None


def empty_reduction_error(op: Op) -> InvalidInputError:
    """What a kernel raises for a reduction without an identity over an empty dim: torch's
    refusal, at the op, rather than the loop's start value (-inf) returned as a result."""
    return InvalidInputError(f"{op.describe()}: a reduction over an empty dim (size 0) has no value; "
                             f"torch raises here too (\"Expected reduction dim to have non-zero "
                             f"size\"): give that dim at least one element")
