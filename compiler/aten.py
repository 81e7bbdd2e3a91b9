"""How an ATen call is written as an IR op, and read back into a `torch.ops` call.

Any ATen overload is representable without declaring it: the op name names the overload
(`aten.add.Tensor`, `aten.linear` for `.default`) and its schema decides the encoding.

* Tensor arguments are operands, in schema order. A `None` optional tensor is simply absent.
* Everything else (ints, floats, int lists, dtypes, strings...) is an attribute named after
  the schema argument; an argument equal to its schema default is omitted, so the text
  shows what is particular to this call. An explicit `None` whose default is not `None` is
  the unit attribute.
* Symbolic values (a `SymInt` size) are operands too. A list that holds any symbolic value
  (`view(x, [%s0, 128, -1])`) or a tensor list (`cat`) becomes consecutive operands, with
  plain ints materialised as `spk.constant` and `None` list items as `spk.none`.
* When operands cannot be assigned to schema arguments by the simple rule (each `Tensor`
  argument takes one, each `Tensor?` one while operands remain), the op carries
  `operand_segments = [...]`: how many operands each schema argument takes, in order.

Both the frontend (encoding) and the interpreter (decoding) use this module, so the
two directions cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch

from .errors import UnsupportedError
from .ir import UNIT, Attr, Op, ScalarType, TypeAttr, dtype_name, torch_dtype

SEGMENTS = "operand_segments"
_ENUM_KINDS = ("Layout", "MemoryFormat", "Device")


def op_name(overload: torch._ops.OpOverload) -> str:
    """`torch.ops.aten.add.Tensor` -> `aten.add.Tensor`; `.default` is left out."""
    ns = overload.namespace
    packet = overload._schema.name.split("::", 1)[1]
    suffix = "" if overload._overloadname == "default" else "." + overload._overloadname
    return f"{ns}.{packet}{suffix}"


@lru_cache(maxsize=None)
def resolve(name: str) -> torch._ops.OpOverload:
    """The `torch.ops` overload an op name stands for; a clear error if there is none."""
    parts = name.split(".")
    if len(parts) not in (2, 3):
        raise UnsupportedError(f"'{name}' is not an ATen op name (expected ns.op or ns.op.overload)")
    ns, op = parts[0], parts[1]
    overload = parts[2] if len(parts) == 3 else "default"
    try:
        packet = getattr(getattr(torch.ops, ns), op)
        return getattr(packet, overload)
    except (AttributeError, RuntimeError):
        raise UnsupportedError(f"no torch operator {ns}::{op}.{overload} exists for op '{name}'; "
                               f"check the spelling (overloads are written aten.op.overload)") from None


def is_aten_like(name: str) -> bool:
    return name.split(".", 1)[0] in ("aten", "prims")


def _type_str(arg: torch.Argument) -> str:
    return str(arg.real_type)


def _takes_tensor(arg: torch.Argument) -> bool:
    return _type_str(arg) in ("Tensor", "Optional[Tensor]")


def _is_list(arg: torch.Argument) -> bool:
    return _type_str(arg).startswith(("List[", "Optional[List["))


# ------------------------------------------------------------------ python value <-> attribute


def to_attr(value: Any) -> Attr:
    """A constant schema argument as an attribute value."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return UNIT
    if isinstance(value, torch.dtype):
        return TypeAttr(dtype_name(value))
    if isinstance(value, (torch.device,)):
        return str(value)
    if isinstance(value, (torch.layout, torch.memory_format)):
        return str(value).replace("torch.", "")
    if isinstance(value, (list, tuple)):
        return [to_attr(v) for v in value]
    raise UnsupportedError(f"cannot represent argument value {value!r} ({type(value).__name__}) "
                           f"as an attribute")


def from_attr(attr: Attr, arg: torch.Argument) -> Any:
    """An attribute value back as what the schema argument expects."""
    if attr is UNIT:
        return None
    if isinstance(attr, TypeAttr):
        return torch_dtype(str(attr.type))
    kind = _type_str(arg)
    if isinstance(attr, str):
        if "Device" in kind:
            return torch.device(attr)
        if "Layout" in kind or "MemoryFormat" in kind:
            return getattr(torch, attr)
    if isinstance(attr, list):
        return [from_attr(a, arg) for a in attr]
    return attr


def _default(arg: torch.Argument) -> Any:
    return arg.default_value if arg.has_default_value() else _NO_DEFAULT


_NO_DEFAULT = object()


# ------------------------------------------------------------------ encoding (frontend side)


@dataclass
class Encoded:
    """An ATen call as operand slots and attributes. `operands[i]` is either a graph value
    (the caller maps it to an IR `Value`) or `("const", x)` for a constant to materialise."""

    operands: list[Any]
    attributes: dict[str, Attr]


def encode_call(overload: torch._ops.OpOverload, args: tuple, kwargs: dict,
                is_value: Callable[[Any], bool]) -> Encoded:
    """Encode a call's arguments by its schema. `is_value(x)` says whether `x` is an SSA
    value (an FX node) rather than a Python constant."""
    schema = overload._schema
    bound: dict[str, Any] = {}
    for a, v in zip(schema.arguments, args):
        bound[a.name] = v
    bound.update(kwargs)
    operands: list[Any] = []
    attrs: dict[str, Attr] = {}
    segments: list[int] = []
    for a in schema.arguments:
        if a.name not in bound:
            segments.append(0)
            continue
        v = bound[a.name]
        if is_value(v):
            operands.append(v)
            segments.append(1)
        elif isinstance(v, (list, tuple)) and (_type_str(a).startswith(("List[Tensor]",
                                                                       "List[Optional[Tensor]]"))
                                               or any(is_value(x) for x in v)):
            operands.extend(x if is_value(x) else ("const", x) for x in v)
            segments.append(len(v))
        else:
            segments.append(0)
            d = _default(a)
            if v is None and d is _NO_DEFAULT and _takes_tensor(a):
                continue
            if d is not _NO_DEFAULT and _same(v, d):
                continue
            attrs[a.name] = to_attr(v)
    if segments != _simple_segments(schema, len(operands), attrs):
        attrs[SEGMENTS] = segments
    return Encoded(operands, attrs)


def _same(v: Any, d: Any) -> bool:
    if isinstance(v, (list, tuple)) and isinstance(d, (list, tuple)):
        return list(v) == list(d)
    return type(v) is type(d) and v == d


def _simple_segments(schema: torch.FunctionSchema, n_operands: int, attrs: dict) -> list[int]:
    """The default assignment: each Tensor argument one operand, each Tensor? one while
    operands remain; everything else from attributes."""
    left = n_operands
    segs = []
    for a in schema.arguments:
        take = 1 if _takes_tensor(a) and left > 0 and a.name not in attrs else 0
        segs.append(take)
        left -= take
    return segs if left == 0 else []


# ------------------------------------------------------------------ decoding (backend side)


# Layout ops a decode step runs hundreds of times, and the torch functions that do what their
# overload does through Python bindings that parse arguments faster than `OpOverload.__call__`
# (view 3.8 against 5.3 us, cat 7 against 11): same positional arguments, and used only when
# every keyword-only argument is its default (`expand`'s `implicit`).
_FAST_CALLS: dict[str, Callable[..., Any]] = {
    "aten::view": torch.Tensor.view, "aten::reshape": torch.Tensor.reshape,
    "aten::permute": torch.Tensor.permute, "aten::transpose.int": torch.Tensor.transpose,
    "aten::unsqueeze": torch.Tensor.unsqueeze, "aten::squeeze.dim": torch.Tensor.squeeze,
    "aten::expand": torch.Tensor.expand, "aten::cat": torch.cat,
}


def _overload_key(overload: torch._ops.OpOverload) -> str:
    s = overload._schema
    return f"{s.name}.{s.overload_name}" if s.overload_name else s.name


class CallPlan:
    """Rebuilds `torch.ops` arguments from an op's operand values, once per op."""

    def __init__(self, op: Op):
        self.overload = resolve(op.name)
        schema = self.overload._schema
        segs = op.attributes.get(SEGMENTS)
        if segs is None:
            segs = _simple_segments(schema, len(op.operands), op.attributes)
            if not segs and op.operands:
                raise UnsupportedError(f"{op.describe()} has {len(op.operands)} operands, which "
                                       f"do not fit the schema {schema}; add operand_segments")
        if len(segs) != len(schema.arguments) or sum(segs) != len(op.operands):
            raise UnsupportedError(f"{op.describe()}: operand_segments {segs} do not match the "
                                   f"schema {schema} and {len(op.operands)} operands")
        # Each schema argument becomes: ("ops", start, count, is_list) or ("const", value).
        self.slots: list[tuple] = []
        start = 0
        for a, n in zip(schema.arguments, segs):
            if n or (_is_list(a) and isinstance(op.attributes.get(SEGMENTS), list)
                     and a.name not in op.attributes and _default(a) is _NO_DEFAULT):
                self.slots.append(("ops", start, n, _is_list(a)))
                start += n
            elif a.name in op.attributes:
                self.slots.append(("const", from_attr(op.attributes[a.name], a)))
            elif _default(a) is not _NO_DEFAULT:
                self.slots.append(("const", _default(a)))
            elif _takes_tensor(a) and _type_str(a).startswith("Optional"):
                self.slots.append(("const", None))
            else:
                raise UnsupportedError(f"{op.describe()} lacks required argument '{a.name}' "
                                       f"of {schema}")
        self.kwarg_only = [a.kwarg_only for a in schema.arguments]
        self.names = [a.name for a in schema.arguments]
        self.specialize()

    def specialize(self) -> None:
        """Make `call` one generated lambda for this op's argument layout (operand slots,
        constants, keywords): it runs once per op per call, ~1,000 times a decode step."""
        scope: dict[str, Any] = {"ov": self.overload}
        fast = _FAST_CALLS.get(_overload_key(self.overload))
        defaults = [_default(a) for a in self.overload._schema.arguments]
        if fast is not None and all(not kw or (slot[0] == "const" and slot[1] == d)
                                    for slot, kw, d in zip(self.slots, self.kwarg_only, defaults)):
            scope["ov"] = fast
            keep = [not kw for kw in self.kwarg_only]
        else:
            keep = [True] * len(self.slots)
        parts = []
        for j, (slot, kw, name) in enumerate(zip(self.slots, self.kwarg_only, self.names)):
            if not keep[j]:
                continue
            if slot[0] == "ops":
                _, start, n, is_list = slot
                expr = f"list(o[{start}:{start + n}])" if is_list else f"o[{start}]"
            else:
                scope[f"c{j}"] = slot[1]
                expr = f"c{j}"
            parts.append(f"{name}={expr}" if kw else expr)
        self.call = eval(f"lambda o: ov({', '.join(parts)})", scope)  # noqa: S307 (our own text)

    def call(self, operands: list[Any]) -> Any:  # replaced per instance by `specialize`
        raise NotImplementedError


def scalar_type_of(value: Any) -> ScalarType:
    """The IR type of a Python/symbolic scalar."""
    if isinstance(value, (bool, torch.SymBool)):
        return ScalarType("i1")
    if isinstance(value, (int, torch.SymInt)):
        return ScalarType("i64")
    if isinstance(value, (float, torch.SymFloat)):
        return ScalarType("f64")
    raise UnsupportedError(f"no scalar IR type for {value!r}")
