"""The SSA IR: types, values, ops, blocks, regions, functions and modules.

The model follows MLIR closely so the text form is MLIR's generic syntax and real MLIR
parses it. A `Value` is either an op result or a block argument and knows its uses, so
rewrites (`replace_all_uses_with`, erasing dead ops) are cheap. A function is a region with
one block whose last op is `func.return`; fused groups are ops with one region whose block
ends in `spk.yield`. Weight data never lives here: parameter arguments carry
`{spk.param = "<fqn>"}` and the tensors sit in a `WeightStore` beside the module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

import torch

from .errors import Location

# --------------------------------------------------------------------------- types

# torch dtype <-> MLIR element type spelling. The MLIR names are what the text shows.
_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float64: "f64",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "ui8",
    torch.bool: "i1",
    torch.complex64: "complex<f32>",
    torch.complex128: "complex<f64>",
    torch.float8_e4m3fn: "f8E4M3FN",
    torch.float8_e5m2: "f8E5M2",
}
_DTYPE_BY_NAME: dict[str, torch.dtype] = {v: k for k, v in _DTYPES.items()}
ELEMENT_TYPES = tuple(_DTYPE_BY_NAME)


def dtype_name(dtype: torch.dtype) -> str:
    """MLIR element-type spelling of a torch dtype (`torch.float32` -> `f32`)."""
    try:
        return _DTYPES[dtype]
    except KeyError:
        from .errors import UnsupportedError

        raise UnsupportedError(f"dtype {dtype} has no IR element type; supported: "
                               f"{', '.join(str(d) for d in _DTYPES)}") from None


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of an MLIR element type spelling (`bf16` -> `torch.bfloat16`)."""
    return _DTYPE_BY_NAME[name]


class Type:
    """Base of value types."""


@dataclass(frozen=True)
class TensorType(Type):
    """`tensor<8x?x384xf32>`: `None` in `shape` is a dynamic (symbolic) dimension."""

    shape: tuple[int | None, ...]
    dtype: str

    def __str__(self) -> str:
        dims = "".join(("?" if d is None else str(d)) + "x" for d in self.shape)
        return f"tensor<{dims}{self.dtype}>"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @property
    def is_static(self) -> bool:
        return all(d is not None for d in self.shape)

    def numel(self) -> int | None:
        n = 1
        for d in self.shape:
            if d is None:
                return None
            n *= d
        return n

    def with_shape(self, shape: tuple[int | None, ...]) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    @staticmethod
    def of(t: torch.Tensor, dynamic_dims: tuple[int, ...] = ()) -> "TensorType":
        shape = tuple(None if i in dynamic_dims else int(d) for i, d in enumerate(t.shape))
        return TensorType(shape, dtype_name(t.dtype))


@dataclass(frozen=True)
class ScalarType(Type):
    """A scalar SSA value: `i64` for symbolic sizes, `f64` for float scalars, `i1` for bools."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class NoneType(Type):
    """MLIR's builtin `none`: an absent optional operand inside a tensor list."""

    def __str__(self) -> str:
        return "none"


I64 = ScalarType("i64")
F64 = ScalarType("f64")
I1 = ScalarType("i1")
NONE = NoneType()


def dims_compatible(a: int | None, b: int | None) -> bool:
    """Static dims must agree; a dynamic dim agrees with anything."""
    return a is None or b is None or a == b


def types_compatible(a: Type, b: Type) -> bool:
    if isinstance(a, TensorType) and isinstance(b, TensorType):
        return (a.dtype == b.dtype and a.rank == b.rank
                and all(dims_compatible(x, y) for x, y in zip(a.shape, b.shape)))
    return a == b


# ---------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class TypeAttr:
    """A type used as an attribute value, e.g. `{dtype = f16}`."""

    type: Type | str

    def __str__(self) -> str:
        return str(self.type)


class _Unit:
    """MLIR's unit attribute: the name alone (`{keepdim}`). We use it for an explicit None."""

    _instance = None

    def __new__(cls):  # a singleton, so `is UNIT` works
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNIT"


UNIT = _Unit()

Attr = Union[bool, int, float, str, TypeAttr, _Unit, list]


# ---------------------------------------------------------------------- values & ops


class Value:
    """An SSA value: an op result or a block argument. `uses` lists the consuming ops
    (an op appears once per operand slot that reads this value)."""

    __slots__ = ("type", "owner", "index", "name_hint", "uses")

    def __init__(self, type: Type, owner: "Op | Block", index: int, name_hint: str | None = None):
        self.type = type
        self.owner = owner
        self.index = index
        self.name_hint = name_hint
        self.uses: list[Op] = []

    @property
    def defining_op(self) -> "Op | None":
        return self.owner if isinstance(self.owner, Op) else None

    @property
    def is_block_arg(self) -> bool:
        return isinstance(self.owner, Block)

    def replace_all_uses_with(self, new: "Value") -> None:
        if new is self:
            return
        for user in list(self.uses):
            user.operands = [new if v is self else v for v in user.operands]

    def __repr__(self) -> str:
        return f"<Value {self.name_hint or '?'}: {self.type}>"


class Op:
    """An operation: `name`, operand values, typed results, attributes, optional regions.

    Operands are assigned through the `operands` property so use lists stay correct."""

    def __init__(
        self,
        name: str,
        operands: list[Value] = (),
        result_types: list[Type] = (),
        attributes: dict[str, Attr] | None = None,
        regions: list["Region"] | None = None,
        loc: Location | None = None,
    ):
        self.name = name
        self._operands: list[Value] = []
        self.results = [Value(t, self, i) for i, t in enumerate(result_types)]
        self.attributes: dict[str, Attr] = dict(attributes or {})
        self.regions: list[Region] = list(regions or [])
        for r in self.regions:
            r.parent = self
        self.loc = loc
        self.parent: Block | None = None
        self.operands = list(operands)

    @property
    def operands(self) -> list[Value]:
        return self._operands

    @operands.setter
    def operands(self, values: list[Value]) -> None:
        for v in self._operands:
            v.uses.remove(self)
        self._operands = list(values)
        for v in self._operands:
            v.uses.append(self)

    def set_operand(self, i: int, value: Value) -> None:
        ops = list(self._operands)
        ops[i] = value
        self.operands = ops

    @property
    def result(self) -> Value:
        assert len(self.results) == 1, f"{self.name} has {len(self.results)} results"
        return self.results[0]

    @property
    def dialect(self) -> str:
        return self.name.split(".", 1)[0]

    def drop_operands(self) -> None:
        self.operands = []
        for r in self.regions:
            for b in r.blocks:
                for op in b.ops:
                    op.drop_operands()

    def has_uses(self) -> bool:
        return any(r.uses for r in self.results)

    def walk(self) -> Iterator["Op"]:
        """This op, then every op nested in its regions, in order."""
        yield self
        for r in self.regions:
            for b in r.blocks:
                for op in list(b.ops):
                    yield from op.walk()

    def describe(self) -> str:
        """`"aten.linear" at model.mlir:4:8` — how errors name this op."""
        where = f" at {self.loc}" if self.loc else ""
        return f'"{self.name}"{where}'

    def __repr__(self) -> str:
        return f"<Op {self.name}>"


class Block:
    """A list of ops with typed arguments. Ours always end in a terminator."""

    def __init__(self, arg_types: list[Type] = (), arg_names: list[str | None] | None = None):
        names = arg_names or [None] * len(arg_types)
        self.args = [Value(t, self, i, n) for i, (t, n) in enumerate(zip(arg_types, names))]
        self.ops: list[Op] = []
        self.parent: Region | None = None

    def add_arg(self, type: Type, name: str | None = None, index: int | None = None) -> Value:
        v = Value(type, self, 0, name)
        self.args.insert(len(self.args) if index is None else index, v)
        for i, a in enumerate(self.args):
            a.index = i
        return v

    def erase_arg(self, value: Value) -> None:
        assert not value.uses, "erasing a block argument that is still used"
        self.args.remove(value)
        for i, a in enumerate(self.args):
            a.index = i

    def append(self, op: Op) -> Op:
        op.parent = self
        self.ops.append(op)
        return op

    def insert_before(self, anchor: Op, op: Op) -> Op:
        op.parent = self
        self.ops.insert(self.ops.index(anchor), op)
        return op

    def erase(self, op: Op) -> None:
        """Remove an op whose results are unused."""
        assert not op.has_uses(), f"erasing {op.name} whose results are still used"
        op.drop_operands()
        self.ops.remove(op)
        op.parent = None

    @property
    def terminator(self) -> Op:
        return self.ops[-1]


class Region:
    """A list of blocks owned by an op. Ours have exactly one block."""

    def __init__(self, blocks: list[Block] | None = None):
        self.blocks = list(blocks or [])
        self.parent: Op | None = None
        for b in self.blocks:
            b.parent = self

    @property
    def block(self) -> Block:
        return self.blocks[0]


class Function:
    """`func.func @name(args) -> results`: one block; the last op is `func.return`.

    `arg_attrs[i]` holds argument i's attributes; a parameter has `spk.param`."""

    def __init__(self, name: str, arg_types: list[Type], arg_names: list[str | None] | None = None,
                 arg_attrs: list[dict[str, Attr]] | None = None, result_types: list[Type] = ()):
        self.name = name
        self.body = Block(arg_types, arg_names)
        self.body.parent = None
        self.arg_attrs: list[dict[str, Attr]] = [dict(a) for a in (arg_attrs or [{} for _ in arg_types])]
        self.result_types: list[Type] = list(result_types)
        self.loc: Location | None = None

    @property
    def args(self) -> list[Value]:
        return self.body.args

    @property
    def ops(self) -> list[Op]:
        return self.body.ops

    @property
    def return_op(self) -> Op:
        return self.body.terminator

    def param_name(self, arg: Value) -> str | None:
        """The weight-store name of a parameter argument, or None for a user input."""
        if not arg.is_block_arg or arg.owner is not self.body:
            return None
        name = self.arg_attrs[arg.index].get("spk.param")
        return name if isinstance(name, str) else None

    def params(self) -> dict[str, Value]:
        return {n: a for a in self.args if (n := self.param_name(a)) is not None}

    def user_inputs(self) -> list[Value]:
        return [a for a in self.args if self.param_name(a) is None]

    def add_param(self, name: str, type: Type, index: int | None = None) -> Value:
        """Add a parameter argument, last or at `index` (its data must be put in the weight
        store)."""
        v = self.body.add_arg(type, name, index)
        self.arg_attrs.insert(len(self.arg_attrs) if index is None else index, {"spk.param": name})
        return v

    def erase_arg(self, arg: Value) -> None:
        idx = arg.index
        self.body.erase_arg(arg)
        del self.arg_attrs[idx]

    def walk(self) -> Iterator[Op]:
        for op in list(self.body.ops):
            yield from op.walk()


@dataclass
class Module:
    """A list of functions. The compiled entry point is the one named `forward` (or the first)."""

    functions: list[Function] = field(default_factory=list)

    @property
    def entry(self) -> Function:
        for f in self.functions:
            if f.name == "forward":
                return f
        return self.functions[0]

    def walk(self) -> Iterator[Op]:
        for f in self.functions:
            yield from f.walk()

    def __str__(self) -> str:
        from .printer import print_module

        return print_module(self)

    def clone(self) -> "Module":
        """A deep copy, by printing and parsing (the text is the canonical form)."""
        from .parser import parse_module

        return parse_module(print_module_with_locs(self))


def print_module_with_locs(module: Module) -> str:
    from .printer import print_module

    return print_module(module, debug_info=True)
