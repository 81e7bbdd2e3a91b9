"""Records for the ATen ops the passes rely on: their invariants and result-type rules.

Any ATen op is representable without a record (`compiler.aten` encodes its call from the
schema, and the interpreter runs it through `torch.ops`); a record adds verification and
traits for the ops that passes pattern-match (linear, the norms, the activations). Their
attributes are schema arguments, so undeclared ones are allowed (`strict_attributes=False`).
"""
from __future__ import annotations

from ..ir import Op
from . import BIAS, INPUT, LINEAR, PURE, WEIGHT, OpDef, Operand, Operands, dim_eq, expect

_PURE = frozenset({PURE})


def _linear(op: Op, ops: Operands):
    x, w = ops.type("input"), ops.type("weight")
    expect(x.rank >= 1, "input must have at least one dim")
    expect(dim_eq(x.shape[-1], w.shape[1]),
           f"input's last dim {x.shape[-1]} != weight's in-features {w.shape[1]}")
    b = ops.type("bias")
    if b is not None:
        expect(b.rank == 1 and dim_eq(b.shape[0], w.shape[0]), f"bias must be [{w.shape[0]}], got {b}")
    return [x.with_shape(x.shape[:-1] + (w.shape[0],))]


def _layer_norm(op: Op, ops: Operands):
    x = ops.type("input")
    shape = op.attributes.get("normalized_shape")
    expect(isinstance(shape, list) and all(isinstance(d, int) for d in shape),
           "normalized_shape must be a list of ints")
    expect(len(shape) <= x.rank and all(dim_eq(a, b) for a, b in zip(x.shape[-len(shape):], shape)),
           f"normalized_shape {shape} does not match the trailing dims of {x}")
    for name in ("weight", "bias"):
        p = ops.type(name)
        if p is not None:
            expect(list(p.shape) == shape, f"weight/bias must have shape {shape}, got {p}")
    return [x]


def _gelu(op: Op, ops: Operands):
    approx = op.attributes.get("approximate", "none")
    expect(approx in ("none", "tanh"), f"approximate must be \"none\" or \"tanh\", got {approx!r}")
    return [ops.type("input")]


def _same_as_input(op: Op, ops: Operands):
    return [ops.type("input")]


def _softmax(op: Op, ops: Operands):
    x = ops.type("input")
    dim = op.attributes.get("dim")
    expect(isinstance(dim, int) and -max(x.rank, 1) <= dim < max(x.rank, 1),
           f"dim {dim} out of range for {x}")
    return None  # the dtype argument may change the element type


def _aten(name: str, summary: str, operands: tuple[Operand, ...], verify, traits=_PURE) -> OpDef:
    return OpDef(name, summary, operands=operands, traits=traits, verify=verify,
                 strict_attributes=False)


_X = (Operand("input"),)
_UNARY = ("aten.relu", "aten.silu", "aten.tanh", "aten.sigmoid", "aten.neg", "aten.rsqrt",
          "aten.exp", "aten.clone")

OPS = (
    _aten("aten.linear", "y = x W^T (+ b): the op compression passes rewrite.",
          (Operand("input", INPUT), Operand("weight", WEIGHT, rank=2),
           Operand("bias", BIAS, optional=True)), _linear, frozenset({PURE, LINEAR})),
    _aten("aten.layer_norm", "LayerNorm over the trailing `normalized_shape` dims.",
          (Operand("input"), Operand("weight", optional=True), Operand("bias", optional=True)),
          _layer_norm),
    _aten("aten.gelu", "GELU, exact (`none`) or `tanh`-approximated.", _X, _gelu),
    *(_aten(name, "Elementwise; the result has the input's type.", _X, _same_as_input)
      for name in _UNARY),
    *(_aten(name, "Softmax over `dim`.", _X, _softmax) for name in ("aten.softmax.int", "aten._softmax")),
)
