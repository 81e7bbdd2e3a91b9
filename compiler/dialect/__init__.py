"""Op definitions: each op the compiler relies on is declared once, in one `OpDef` record.

A record says everything the compiler knows about an op kind, as MLIR's ODS does:

* `operands`: named segments with a role (`input`, `weight`, `bias`), the element types and
  rank each accepts, and whether it is optional (present when an attribute says so, or as
  a trailing operand such as a bias);
* `attributes`: names, kinds, allowed values;
* `traits`: `pure`, `terminator`, `isolated_from_above`, `linear` (reads its input through
  a weight: calibration records the input's covariance), `compressed_linear` (stores its
  weight compressed and has a decoder), `region_body` (its region computes its results);
* `verify`: the checks no declarative field expresses, returning the result types it
  expects (the verifier compares them with the op's);
* `decode`: for compressed linears, the exact float32 `[N, K]` weight the op multiplies by;
  the reference semantics, `lorc` and the report all use it, so they cannot disagree;
* `interpret`: the reference semantics (a torch function), which the core interpreter runs;
  a compressed linear without one is "decode, then a float GEMM";
* `fold`: evaluation on constant operands (symbolic-size arithmetic).

Every list of ops (which ops calibration watches, which a decoder covers, which are pure) is
derived from these records with `ops_with(trait)`. Any ATen op is still representable
without a record (see `compiler.aten`); a record only adds verification and traits.

The records live beside this module (`builtin`, `aten`, `py`, `spk`); `load_builtin()`
registers them in `OPS`, and the front door calls it. Tests register toy ops inside
`OPS.scoped()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..ir import Op, TensorType, Type, Value, torch_dtype
from ..registry import Registry

FLOAT_TYPES = ("f32", "f16", "bf16", "f64")

# Traits, by name. Kept as strings so a record reads like its MLIR declaration.
PURE = "pure"
TERMINATOR = "terminator"
ISOLATED_FROM_ABOVE = "isolated_from_above"
REGION_BODY = "region_body"
LINEAR = "linear"
COMPRESSED_LINEAR = "compressed_linear"
# A compressed linear whose semantics quantize its input to int8 at run time (w8a8 and its
# kin): a producer of that input can write the codes as it goes (the fused prologue).
ACTIVATION_INT8 = "activation_int8"
# Fusion and codegen classes: `pointwise` ops compute each output element from the elements
# of their (broadcast) inputs at the same index; `reduction` ops reduce over some dims
# (`reduces_last_dim` says whether only the last one, the shape a row-wise loop nest
# fuses); `view` ops only re-index (reshape, permute, expand, slice), moving no data
# when the layout allows.
POINTWISE = "pointwise"
REDUCTION = "reduction"
VIEW = "view"
# A reduction with no identity (max): over an empty dim it has no value, and torch raises
# ("Expected reduction dim ... to have non-zero size") where a sum gives 0 and a mean NaN.
# A kernel must refuse such a call the same way rather than return its loop's start value.
NO_IDENTITY = "no_identity"
KNOWN_TRAITS = frozenset({PURE, TERMINATOR, ISOLATED_FROM_ABOVE, REGION_BODY, LINEAR,
                          COMPRESSED_LINEAR, ACTIVATION_INT8, POINTWISE, REDUCTION, VIEW,
                          NO_IDENTITY})

INPUT, WEIGHT, BIAS = "input", "weight", "bias"


class OpInvalid(Exception):
    """Raised while verifying an op; the verifier adds the op, its location and the pass."""


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise OpInvalid(message)


def dim_eq(a: int | None, b: int | None) -> bool:
    """Static dims must agree; a dynamic dim agrees with anything."""
    return a is None or b is None or a == b


@dataclass(frozen=True)
class Operand:
    """One operand segment. `optional` operands are present when `present(attributes)` says
    so, or, without `present`, when operands are left over (a trailing bias). `variadic`
    takes every operand left (at most one per op, last)."""

    name: str
    role: str = INPUT
    dtypes: tuple[str, ...] | None = None
    rank: int | None = None
    optional: bool = False
    present: Callable[[dict], bool] | None = None
    variadic: bool = False
    tensor: bool = True

    def describe(self) -> str:
        return f"[{self.name}]" if self.optional else f"{self.name}..." if self.variadic else self.name


@dataclass(frozen=True)
class Attribute:
    """A declared attribute: its Python kind, whether it must be there, allowed values and
    an extra check (returning an error message, or None when the value is fine)."""

    name: str
    kind: type | tuple[type, ...]
    required: bool = True
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None


Verify = Callable[[Op, "Operands"], "list[Type] | None"]
Decode = Callable[[Op, list[torch.Tensor]], torch.Tensor]
Semantics = Callable[[Op, list[Any]], Any]


@dataclass(frozen=True)
class OpDef:
    """Everything the compiler knows about one op kind (see the module docstring)."""

    name: str
    summary: str
    operands: tuple[Operand, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    results: int | None = 1          # None: any number
    traits: frozenset[str] = frozenset()
    verify: Verify | None = None
    decode: Decode | None = None
    interpret: Semantics | None = None
    fold: Callable[..., Any] | None = None
    region_terminator: str | None = None   # the op that ends this op's region, if it has one
    parent: str | None = None              # the op this one must sit directly inside
    strict_attributes: bool = True         # reject attributes that are not declared

    def __post_init__(self):
        unknown = self.traits - KNOWN_TRAITS
        if unknown:
            raise TypeError(f"{self.name}: unknown traits {sorted(unknown)}")
        if COMPRESSED_LINEAR in self.traits and self.decode is None:
            raise TypeError(f"{self.name}: a compressed linear needs a weight decoder")

    def has(self, trait: str) -> bool:
        return trait in self.traits

    def signature(self) -> str:
        return f"({', '.join(o.describe() for o in self.operands)})"

    def bind(self, op: Op) -> "Operands":
        """The op's operands by segment name; OpInvalid if their number does not fit."""
        return Operands.bind(self, op)

    def check(self, op: Op) -> "list[Type] | None":
        """Verify `op` against this record; returns the result types it expects (or None when
        the record infers none). Raises OpInvalid with the first broken rule."""
        if self.results is not None:
            expect(len(op.results) == self.results,
                   f"expects {self.results} result(s), got {len(op.results)}")
        ops = self.bind(op)
        for o in self.operands:
            v = ops[o.name]
            for value in (v if o.variadic else [] if v is None else [v]):
                _check_operand(o, value.type)
        for a in self.attributes:
            if a.name not in op.attributes:
                expect(not a.required, f"needs attribute '{a.name}'")
                continue
            _check_attribute(a, op.attributes[a.name])
        if self.strict_attributes:
            unknown = sorted(set(op.attributes) - {a.name for a in self.attributes})
            expect(not unknown, f"has no attribute {', '.join(map(repr, unknown))}; its attributes: "
                                f"{', '.join(a.name for a in self.attributes) or 'none'}")
        if op.regions:
            expect(self.region_terminator is not None, "has regions but declares none")
        return self.verify(op, ops) if self.verify is not None else None


def _check_operand(o: Operand, t: Type) -> None:
    if not o.tensor:
        return
    expect(isinstance(t, TensorType), f"{o.name} must be a tensor, got {t}")
    rank_ok = o.rank is None or t.rank == o.rank
    dtype_ok = o.dtypes is None or t.dtype in o.dtypes
    if not (rank_ok and dtype_ok):
        rank = f"{o.rank}-D " if o.rank is not None else ""
        dtypes = "|".join(o.dtypes) + " " if o.dtypes is not None else ""
        expect(False, f"{o.name} must be a {rank}{dtypes}tensor, got {t}")


def _check_attribute(a: Attribute, v: Any) -> None:
    kinds = a.kind if isinstance(a.kind, tuple) else (a.kind,)
    # bool is an int to Python, not to the IR: `group = true` is not a group size
    ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
    expect(ok, f"attribute '{a.name}' must be {' or '.join(k.__name__ for k in kinds)}, got {v!r}")
    if a.choices is not None:
        expect(v in a.choices, f"attribute '{a.name}' must be one of "
                               f"{', '.join(map(str, a.choices))}, got {v!r}")
    if a.check is not None:
        problem = a.check(v)
        expect(problem is None, problem or "")


class Operands:
    """An op's operands by segment name: `ops["scale"]` is a Value (None when an optional
    operand is absent, a list for a variadic one); `ops.position("scale")` is its index in
    `op.operands`, so a kernel can pick the matching runtime argument."""

    def __init__(self, opdef: OpDef, values: dict[str, Any], positions: dict[str, Any]):
        self.opdef = opdef
        self.values = values
        self.positions = positions

    @staticmethod
    def bind(opdef: OpDef, op: Op) -> "Operands":
        n = len(op.operands)
        fixed = sum(1 for o in opdef.operands if not o.optional and not o.variadic)
        decided = sum(1 for o in opdef.operands if o.optional and o.present is not None
                      and _present(o, op.attributes))
        free = n - fixed - decided  # operands for trailing optionals / the variadic one
        values: dict[str, Any] = {}
        positions: dict[str, Any] = {}
        i = 0
        for o in opdef.operands:
            if o.variadic:
                values[o.name], positions[o.name] = op.operands[i:], list(range(i, n))
                i = n
                continue
            if o.optional:
                take = _present(o, op.attributes) if o.present is not None else free > 0
                if o.present is None and take:
                    free -= 1
                if not take:
                    values[o.name] = positions[o.name] = None
                    continue
            if i >= n:
                raise OpInvalid(_count_message(opdef, op))
            values[o.name], positions[o.name] = op.operands[i], i
            i += 1
        if i != n:
            raise OpInvalid(_count_message(opdef, op))
        return Operands(opdef, values, positions)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def type(self, name: str) -> TensorType | None:
        v = self.values[name]
        return None if v is None else v.type

    def by_role(self, role: str) -> list[Value]:
        return [self.values[o.name] for o in self.opdef.operands
                if o.role == role and self.values[o.name] is not None]

    def positions_of(self, role: str) -> list[int]:
        return [self.positions[o.name] for o in self.opdef.operands
                if o.role == role and self.positions[o.name] is not None]


def _present(o: Operand, attrs: dict) -> bool:
    try:
        return bool(o.present(attrs))
    except (KeyError, TypeError):
        return False  # the attribute is missing or malformed: the attribute check reports it


def _count_message(opdef: OpDef, op: Op) -> str:
    return f"expects operands {opdef.signature()}, got {len(op.operands)}"


# ------------------------------------------------------------------ the registry

OPS: Registry[OpDef] = Registry("op")


def op_def(name: str) -> OpDef | None:
    """The record of op `name`, or None for an op without one (any ATen op)."""
    return OPS.get(name)


def declare(opdef: OpDef, registry: Registry[OpDef] | None = None) -> OpDef:
    return (OPS if registry is None else registry).register(opdef.name, opdef)


def ops_with(trait: str) -> tuple[str, ...]:
    """Names of every registered op with `trait`."""
    return tuple(name for name, d in OPS.items() if trait in d.traits)


def has_trait(op: Op, trait: str) -> bool:
    d = OPS.get(op.name)
    return d is not None and trait in d.traits


def reduces_last_dim(op: Op) -> bool:
    """True for a `reduction` op that reduces over the last dim only (layer_norm / rms_norm
    over one trailing dim, softmax over the last dim, a keepdim mean/sum/amax over -1)."""
    if not has_trait(op, REDUCTION) or not op.operands or not isinstance(op.operands[0].type, TensorType):
        return False
    rank = op.operands[0].type.rank
    a = op.attributes
    if "normalized_shape" in a:
        return isinstance(a["normalized_shape"], list) and len(a["normalized_shape"]) == 1
    dim = a.get("dim")
    if isinstance(dim, list):
        if len(dim) != 1 or not a.get("keepdim", False):
            return False
        dim = dim[0]
    return isinstance(dim, int) and dim in (-1, rank - 1)


def load_builtin(registry: Registry[OpDef] | None = None) -> None:
    """Register the ops that ship with spokeshave (idempotent)."""
    from . import aten, builtin, py, spk

    for module in (builtin, aten, py, spk):
        for d in module.OPS:
            declare(d, registry)


# ------------------------------------------------------------------ compressed linears


def weight_operands(op: Op) -> list[Value]:
    """The operands of a linear (compressed or not) that hold its weight, in order."""
    d = OPS[op.name]
    return d.bind(op).by_role(WEIGHT)


def decode_weight(op: Op, weights: list[torch.Tensor]) -> torch.Tensor:
    """The float32 [N, K] weight a compressed linear multiplies by, from its weight tensors."""
    return OPS[op.name].decode(op, weights)


def weight_shape(op: Op) -> tuple[int | None, int | None]:
    """(out-features N, in-features K) of a linear, from its input and result types."""
    return op.result.type.shape[-1], op.operands[0].type.shape[-1]


def bits_per_weight(op: Op) -> float:
    """Stored bits per weight of a linear: every weight tensor it reads (codes, scales, zero
    points, sparsity metadata, outlier columns) over the `N x K` weights it stands for."""
    n, k = weight_shape(op)
    if not n or not k:
        raise ValueError(f"{op.name}: bits per weight needs static in- and out-features")
    bits = sum(v.type.numel() * _element_bits(v.type.dtype) for v in weight_operands(op))
    return bits / (n * k)


def _element_bits(dtype: str) -> int:
    return torch_dtype(dtype).itemsize * 8


def linear_reference(op: Op, args: list[Any]) -> torch.Tensor:
    """A compressed linear's reference semantics when it declares none: decode the stored
    weight exactly, then a float32 GEMM (what a weight-only kernel computes, up to float32
    summation order)."""
    d = OPS[op.name]
    ops = d.bind(op)
    weights = [args[i] for i in ops.positions_of(WEIGHT)]
    bias = [args[i] for i in ops.positions_of(BIAS)]
    x = args[0]
    y = torch.nn.functional.linear(x.float(), d.decode(op, weights),
                                   bias[0].float() if bias else None)
    return y.to(x.dtype)
