"""The verifier: SSA dominance, use lists, types, parameters and per-op invariants.

It runs after every pass when verification is on (the default in tests and in
`spokeshave-opt`). A failure is one `VerifyError` that names the pass that broke the
invariant, the op and its location.
"""
from __future__ import annotations

from .errors import VerifyError
from .ir import Block, Function, Module, Op, TensorType, Value, types_compatible
from .opdefs import DECLARED, OpInvalid
from .weights import WeightStore


class _Fail(Exception):
    pass


def _fail(op_or_func, message: str, pass_name: str | None) -> VerifyError:
    after = f" after pass '{pass_name}'" if pass_name else ""
    if isinstance(op_or_func, Op):
        where = f"{op_or_func.loc}: " if op_or_func.loc else ""
        return VerifyError(f"{where}error: verification failed{after}: op \"{op_or_func.name}\": {message}")
    where = f"{op_or_func.loc}: " if op_or_func.loc else ""
    return VerifyError(f"{where}error: verification failed{after}: @{op_or_func.name}: {message}")


def verify(module: Module, weights: WeightStore | None = None, pass_name: str | None = None) -> None:
    """Raise `VerifyError` on the first broken invariant."""
    names = set()
    for f in module.functions:
        if f.name in names:
            raise _fail(f, "duplicate function name", pass_name)
        names.add(f.name)
        _verify_function(f, weights, pass_name)


def _verify_function(f: Function, weights: WeightStore | None, pass_name: str | None) -> None:
    if len(f.arg_attrs) != len(f.args):
        raise _fail(f, "argument attributes and arguments disagree in number", pass_name)
    seen_params: set[str] = set()
    for a in f.args:
        p = f.param_name(a)
        if p is None:
            continue
        if p in seen_params:
            raise _fail(f, f"parameter '{p}' is bound to two arguments", pass_name)
        seen_params.add(p)
        if not isinstance(a.type, TensorType) or not a.type.is_static:
            raise _fail(f, f"parameter '{p}' must be a static tensor, got {a.type}", pass_name)
        if weights is not None:
            if p not in weights:
                raise _fail(f, f"parameter '{p}' has no tensor in the weight store", pass_name)
            t = weights[p]
            want = a.type
            if tuple(t.shape) != want.shape or str(want.torch_dtype) != str(t.dtype):
                raise _fail(f, f"parameter '{p}' is {want} in the IR but the weight store holds "
                               f"{tuple(t.shape)} {t.dtype}", pass_name)
    ops = f.body.ops
    if not ops or ops[-1].name != "func.return":
        raise _fail(f, "the body must end with 'return'", pass_name)
    ret = ops[-1]
    if len(ret.operands) != len(f.result_types) or not all(
            types_compatible(v.type, t) for v, t in zip(ret.operands, f.result_types)):
        raise _fail(ret, f"returns ({', '.join(str(v.type) for v in ret.operands)}) but @{f.name} "
                         f"declares ({', '.join(map(str, f.result_types))})", pass_name)
    _verify_block(f.body, set(f.args), "func.return", pass_name)


def _verify_block(block: Block, visible: set[Value], terminator: str, pass_name: str | None) -> None:
    defined = set(visible) | set(block.args)
    for i, op in enumerate(block.ops):
        if op.parent is not block:
            raise _fail(op, "op's parent link does not point at its block", pass_name)
        is_last = i == len(block.ops) - 1
        if (op.name == terminator) != is_last:
            raise _fail(op, f"'{terminator}' must be the last op of its block, and only there", pass_name)
        for j, v in enumerate(op.operands):
            if v not in defined:
                src = v.defining_op
                what = f"result of \"{src.name}\"" if src else "a block argument"
                raise _fail(op, f"operand #{j} ({what}) does not dominate this use: it is defined "
                                f"later, in another region, or was erased", pass_name)
            if op not in v.uses:
                raise _fail(op, f"operand #{j}'s use list does not record this op", pass_name)
        for r in op.results:
            for user in r.uses:
                if r not in user.operands:
                    raise _fail(op, "a result's use list names an op that does not use it", pass_name)
        decl = DECLARED.get(op.name)
        if decl is not None:
            try:
                expected = decl(op)
            except OpInvalid as e:
                raise _fail(op, str(e), pass_name) from None
            if expected is not None:
                got = [r.type for r in op.results]
                if len(expected) != len(got) or not all(types_compatible(a, b) for a, b in zip(expected, got)):
                    raise _fail(op, f"result type ({', '.join(map(str, got))}) does not match the "
                                    f"inferred ({', '.join(map(str, expected))})", pass_name)
        for region in op.regions:
            for b in region.blocks:
                if b.parent is not region:
                    raise _fail(op, "block's parent link is broken", pass_name)
                # Fused groups are isolated from above: they see only their own arguments.
                _verify_block(b, set(), "spk.yield", pass_name)
        defined.update(op.results)
