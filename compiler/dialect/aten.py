"""Records for the ATen ops the passes rely on: their invariants and result-type rules.

Any ATen op is representable without a record (`compiler.aten` encodes its call from the
schema, and the interpreter runs it through `torch.ops`); a record adds verification and
traits for the ops that passes pattern-match (linear, the norms, the activations). Their
attributes are schema arguments, so undeclared ones are allowed (`strict_attributes=False`).
"""
from __future__ import annotations

from ..ir import Op
from . import (BIAS, INPUT, LINEAR, NO_IDENTITY, POINTWISE, PURE, REDUCTION, VIEW, WEIGHT, OpDef,
               Operand, Operands, dim_eq, expect)

_PURE = frozenset({PURE})
_POINTWISE = frozenset({PURE, POINTWISE})
_REDUCTION = frozenset({PURE, REDUCTION})
_VIEW = frozenset({PURE, VIEW})


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
        p = ops.type(name) if name in ops.values else None
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
          "aten.exp", "aten.clone", "aten.sqrt", "aten.erf", "aten.abs", "aten.log",
          "aten.reciprocal")
# binary elementwise ops with broadcasting; `.Scalar` forms carry `other` as an attribute
_BINARY = ("aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor",
           "aten.maximum", "aten.minimum")
_SCALAR = ("aten.add.Scalar", "aten.sub.Scalar", "aten.mul.Scalar", "aten.div.Scalar",
           "aten.pow.Tensor_Scalar")
_XY = (Operand("input", tensor=False), Operand("other", optional=True, tensor=False))
_REDUCTIONS = ("aten.mean.dim", "aten.sum.dim_IntList")
# re-indexing only: no arithmetic, and no data movement where the layout allows
_VIEWS = ("aten.view", "aten._unsafe_view", "aten.reshape", "aten.permute", "aten.transpose.int",
          "aten.t", "aten.expand", "aten.slice.Tensor", "aten.select.int", "aten.unsqueeze",
          "aten.squeeze.dim", "aten.squeeze.dims", "aten.alias", "aten.contiguous",
          "aten.unflatten.int", "aten.flatten.using_ints", "aten.split.Tensor", "aten.split_with_sizes",
          "aten.chunk", "aten.unbind.int", "aten.detach")

OPS = (
    _aten("aten.linear", "y = x W^T (+ b): the op compression passes rewrite.",
          (Operand("input", INPUT), Operand("weight", WEIGHT, rank=2),
           Operand("bias", BIAS, optional=True)), _linear, frozenset({PURE, LINEAR})),
    _aten("aten.layer_norm", "LayerNorm over the trailing `normalized_shape` dims.",
          (Operand("input"), Operand("weight", optional=True), Operand("bias", optional=True)),
          _layer_norm, _REDUCTION),
    _aten("aten.gelu", "GELU, exact (`none`) or `tanh`-approximated.", _X, _gelu, _POINTWISE),
    *(_aten(name, "Elementwise; the result has the input's type.", _X, _same_as_input, _POINTWISE)
      for name in _UNARY),
    *(_aten(name, "Elementwise with broadcasting.", _XY, None, _POINTWISE)
      for name in _BINARY + _SCALAR),
    *(_aten(name, "Softmax over `dim`.", _X, _softmax, _REDUCTION)
      for name in ("aten.softmax.int", "aten._softmax")),
    _aten("aten.rms_norm", "RMSNorm over the trailing `normalized_shape` dims.",
          (Operand("input"), Operand("weight", optional=True)), _layer_norm, _REDUCTION),
    *(_aten(name, "A reduction over `dim`.", _X, None, _REDUCTION) for name in _REDUCTIONS),
    _aten("aten.amax", "The max over `dim`: no value over an empty dim, where torch raises.", _X, None,
          _REDUCTION | {NO_IDENTITY}),
    *(OpDef(name, "Re-indexes its input.", operands=(Operand("input", variadic=True, tensor=False),),
            results=None, traits=_VIEW, strict_attributes=False) for name in _VIEWS),
)
