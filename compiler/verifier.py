"""The verifier: SSA dominance, use lists, types, parameters, regions and per-op invariants.

It runs after every pass when verification is on (the default in tests and in
`spokeshave-opt`). A failure is one `VerifyError` that names the pass that broke the
invariant, the op and its location (`err.loc`). Region rules come from op records, not
from op names: a block ends with the terminator its parent's record names (`func.return`
for a function body), an op with a `parent` sits directly in that op's region, and a region
sees the enclosing values unless its op is `isolated_from_above`.
"""
from __future__ import annotations

from .dialect import ISOLATED_FROM_ABOVE, TERMINATOR, OpInvalid, op_def
from .errors import VerifyError
from .ir import Block, Function, Module, Op, TensorType, Value, types_compatible
from .weights import WeightStore


def _fail(op_or_func, message: str, pass_name: str | None) -> VerifyError:
    after = f" after pass '{pass_name}'" if pass_name else ""
    what = f'op "{op_or_func.name}"' if isinstance(op_or_func, Op) else f"@{op_or_func.name}"
    return VerifyError(f"verification failed{after}: {what}: {message}", op_or_func.loc)


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
    _verify_block(f.body, set(f.args), "func.return", None, pass_name)


def _verify_block(block: Block, visible: set[Value], terminator: str, parent: Op | None,
                  pass_name: str | None) -> None:
    defined = set(visible) | set(block.args)
    for i, op in enumerate(block.ops):
        if op.parent is not block:
            raise _fail(op, "op's parent link does not point at its block", pass_name)
        decl = op_def(op.name)
        is_last = i == len(block.ops) - 1
        if is_last and op.name != terminator:
            raise _fail(op, f"the block must end with '{terminator}'", pass_name)
        if (op.name == terminator or (decl is not None and TERMINATOR in decl.traits)) and not is_last:
            raise _fail(op, f"'{op.name}' must be the last op of its block, and only there", pass_name)
        if decl is not None and decl.parent is not None and (parent is None or parent.name != decl.parent):
            raise _fail(op, f"'{op.name}' must sit directly in a '{decl.parent}' region", pass_name)
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
        if op.regions and decl is None:
            raise _fail(op, "an op with regions must have an op record (it says how its region "
                            "is terminated and scoped)", pass_name)
        if decl is not None:
            try:
                expected = decl.check(op)
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
                if not b.ops:
                    raise _fail(op, f"its region's block is empty; it must end with "
                                    f"'{decl.region_terminator}'", pass_name)
                inner = set() if ISOLATED_FROM_ABOVE in decl.traits else defined
                _verify_block(b, inner, decl.region_terminator, op, pass_name)
        defined.update(op.results)
