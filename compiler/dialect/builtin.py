"""Structural ops: `func.return`, scalar constants, `spk.none`, and fused groups.

`spk.fused` is how a fusion group is written: one region with one block whose arguments
are the op's operands and whose `spk.yield` gives its results. It is isolated from above
(the body sees only its block arguments), so a backend can compile the body on its own,
and its region computes its results (`region_body`), so the interpreter runs it inline.
"""
from __future__ import annotations

from typing import Any

from ..ir import NONE, Op, ScalarType
from . import (ISOLATED_FROM_ABOVE, PURE, REGION_BODY, TERMINATOR, Attribute, OpDef, Operand,
               Operands, expect)

_SCALAR_KINDS = {"i1": bool, "i64": int, "f64": float}


def _verify_constant(op: Op, ops: Operands):
    v = op.attributes.get("value")
    t = op.result.type
    expect(isinstance(t, ScalarType), f"spk.constant yields a scalar type, got {t}")
    want = _SCALAR_KINDS.get(t.name)
    expect(want is not None and type(v) is want, f"value {v!r} does not fit type {t}")
    return None


def _verify_fused(op: Op, ops: Operands):
    expect(len(op.regions) == 1 and len(op.regions[0].blocks) == 1,
           "spk.fused has exactly one region with one block")
    block = op.regions[0].block
    expect([a.type for a in block.args] == [v.type for v in op.operands],
           "the region's arguments must have the operand types")
    term = block.ops[-1] if block.ops else None
    if term is not None and term.name == "spk.yield":
        got = [v.type for v in term.operands]
        expect(got == [r.type for r in op.results],
               f"spk.yield gives ({', '.join(map(str, got))}) but the op returns "
               f"({', '.join(str(r.type) for r in op.results)})")
    return None


def _constant(op: Op, args: list[Any]) -> Any:
    return op.attributes["value"]


OPS = (
    OpDef("func.return", "Ends a function body; its operands are the function's results.",
          operands=(Operand("results", variadic=True, tensor=False),), results=0,
          traits=frozenset({TERMINATOR}), strict_attributes=False),
    OpDef("spk.constant", "A scalar constant (a size, a flag): `value` typed i64, f64 or i1.",
          attributes=(Attribute("value", (bool, int, float)),), traits=frozenset({PURE}),
          verify=_verify_constant, interpret=_constant, fold=lambda op, vals: op.attributes["value"]),
    OpDef("spk.none", "An absent optional operand inside a tensor list.",
          traits=frozenset({PURE}), verify=lambda op, ops: [NONE], interpret=lambda op, args: None),
    OpDef("spk.fused", "A fusion group: its region computes its results from its operands.",
          operands=(Operand("inputs", variadic=True, tensor=False),), results=None,
          traits=frozenset({PURE, ISOLATED_FROM_ABOVE, REGION_BODY}), verify=_verify_fused,
          region_terminator="spk.yield", strict_attributes=False),
    OpDef("spk.yield", "Ends a `spk.fused` region; its operands are the group's results.",
          operands=(Operand("results", variadic=True, tensor=False),), results=0,
          traits=frozenset({TERMINATOR}), parent="spk.fused"),
)
