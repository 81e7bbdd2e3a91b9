"""`py.*` ops: the Python arithmetic on symbolic sizes that `torch.export` graphs contain
(`py.operator.mul`, `py.torch.sym_max`, ...). A closed list: each op's semantics is the
Python function it names, which the interpreter calls and `canonicalize` folds on
constant operands.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import torch

from ..ir import Op
from . import PURE, OpDef, Operand

PY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{f"operator.{n}": getattr(operator, n) for n in
       ("add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne", "lt", "le",
        "gt", "ge", "and_", "or_", "not_")},
    **{f"torch.{n}": getattr(torch, n) for n in
       ("sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_sqrt", "sym_ite")},
}


def _record(qualname: str, fn: Callable[..., Any]) -> OpDef:
    def interpret(op: Op, args: list[Any]) -> Any:
        return fn(*args)

    return OpDef(f"py.{qualname}", f"Python's `{qualname}` on symbolic scalars.",
                 operands=(Operand("args", variadic=True, tensor=False),),
                 traits=frozenset({PURE}), interpret=interpret, fold=lambda op, vals: fn(*vals))


OPS = tuple(_record(q, fn) for q, fn in PY_FUNCTIONS.items())
