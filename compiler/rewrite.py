"""Pattern rewriting: patterns, composable pattern sets, a rewriter and the greedy driver.

As in MLIR and tinygrad, most passes are a named set of small rewrite rules. A pattern
says which op names it roots on and implements `match_and_rewrite(op, rewriter)`; pattern
sets compose with `+`. `apply_patterns_greedily` keeps a worklist, applies the first
pattern that matches each op, requeues what a rewrite touched, and erases ops that became
dead, until nothing changes.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

from .dialect import PURE, TERMINATOR, has_trait, op_def
from .errors import SpokeshaveError
from .ir import Block, Function, Module, Op, Region, Value

# ATen ops without a record are pure unless their name says they draw random numbers,
# allocate uninitialised memory or assert.
_IMPURE_MARKERS = ("rand", "bernoulli", "normal", "uniform", "multinomial", "exponential",
                   "empty", "_assert", "print", "seed")


# Without an explicit bound, a fixpoint that needs more than this many rewrites per op (of
# at least this many ops) is taken for two patterns undoing each other: real rule sets
# converge in a few rewrites per op.
REWRITES_PER_OP, MIN_REWRITE_BUDGET_OPS = 20, 100


def is_pure(op: Op) -> bool:
    """No side effects and deterministic: safe to erase when unused and to merge by CSE.
    A recorded op is pure when its record says so (and, with regions, so is its body)."""
    d = op_def(op.name)
    if d is not None:
        if PURE not in d.traits:
            return False
    elif "dropout" in op.name:
        return op.attributes.get("train") is False
    elif any(m in op.name for m in _IMPURE_MARKERS):
        return False
    return all(is_pure(inner) for r in op.regions for b in r.blocks for inner in b.ops[:-1])


def boundary(ops: Iterable[Op]) -> tuple[list[Value], list[Value]]:
    """(inputs, outputs) of a group of ops: the values it reads from outside the group, in
    order of first use, and the results it must write because an op outside the group (or
    the function's return) reads them. These are the only values a fused group moves; a
    result read only inside the group stays in registers or cache, and one nobody reads is
    not written at all. A terminator in the group moves nothing: what it reads is output."""
    group = [op for op in ops if not has_trait(op, TERMINATOR)]
    members = {id(op) for op in group}
    defined: set[int] = set()
    inputs: dict[int, Value] = {}
    for op in group:
        for value in op.operands:
            if id(value) not in defined:
                inputs.setdefault(id(value), value)
        defined.update(id(r) for r in op.results)
    outputs = [r for op in group for r in op.results
               if any(id(user) not in members for user in r.uses)]
    return list(inputs.values()), outputs


class RewritePattern:
    """One rewrite rule. `roots` limits it to ops with those names (None: any op)."""

    roots: tuple[str, ...] | None = None

    def match_and_rewrite(self, op: Op, rewriter: "Rewriter") -> bool:
        raise NotImplementedError


class FnPattern(RewritePattern):
    """A pattern from a plain function, for rules that are a few lines."""

    def __init__(self, fn: Callable[[Op, "Rewriter"], bool], roots: Iterable[str] | None):
        self.fn = fn
        self.roots = tuple(roots) if roots is not None else None
        self.__name__ = fn.__name__

    def match_and_rewrite(self, op: Op, rewriter: "Rewriter") -> bool:
        return self.fn(op, rewriter)

    def __repr__(self) -> str:
        return f"<pattern {self.__name__}>"


def pattern(*roots: str):
    """Decorator: `@pattern("aten.view", "aten.reshape") def fold(op, rw) -> bool`."""
    def deco(fn):
        return FnPattern(fn, roots or None)
    return deco


class PatternSet:
    """An ordered, composable collection of patterns: `CANONICAL + FUSION`."""

    def __init__(self, *patterns: RewritePattern):
        self.patterns = tuple(patterns)
        self._by_root: dict[str, list[RewritePattern]] = {}
        self._any: list[RewritePattern] = []
        for p in self.patterns:
            if p.roots is None:
                self._any.append(p)
            else:
                for r in p.roots:
                    self._by_root.setdefault(r, []).append(p)

    def __add__(self, other: "PatternSet") -> "PatternSet":
        return PatternSet(*self.patterns, *other.patterns)

    def __iter__(self):
        return iter(self.patterns)

    def __len__(self) -> int:
        return len(self.patterns)

    def for_op(self, name: str) -> list[RewritePattern]:
        return self._by_root.get(name, []) + self._any


class Rewriter:
    """The only way patterns change IR, so the driver knows what to revisit."""

    def __init__(self):
        self.touched: list[Op] = []
        self.changes = 0

    def insert_before(self, anchor: Op, op: Op) -> Op:
        anchor.parent.insert_before(anchor, op)
        if op.loc is None:
            op.loc = anchor.loc
        self.touched.append(op)
        return op

    def replace_all_uses(self, old: Value, new: Value) -> None:
        self.touched.extend(old.uses)
        old.replace_all_uses_with(new)
        self.changes += 1

    def replace_op(self, op: Op, new_values: list[Value]) -> None:
        assert len(new_values) == len(op.results), f"{op.name}: result count mismatch"
        for r, v in zip(op.results, new_values):
            self.replace_all_uses(r, v)
        self.erase_op(op)

    def erase_op(self, op: Op) -> None:
        self.touched.extend(v.defining_op for v in op.operands if v.defining_op)
        op.parent.erase(op)
        self.changes += 1

    def outline(self, ops: list[Op], name: str = "spk.fused", attributes: dict | None = None,
                terminator: str = "spk.yield") -> Op:
        """Move `ops` (in one block) into the region of a new op `name`: values they read
        from outside become its operands (and the block's arguments), results read outside
        (or returned) become its results, ended by `terminator`. The group must be convex
        (no path from it through an outside op back into it); outside ops between its members
        that depend on it move after the new op. Returns the new op."""
        if not ops:
            raise ValueError("outline: no ops")
        block = ops[0].parent
        if any(o.parent is not block for o in ops):
            raise ValueError("outline: the ops are not all in one block")
        group = set(ops)
        at = {o: i for i, o in enumerate(block.ops)}
        members = sorted(group, key=at.__getitem__)
        if members[-1] is block.terminator:
            raise ValueError("outline: a block's terminator cannot move into a region")
        lo, hi = at[members[0]], at[members[-1]]
        tainted: set[Op] = set()  # outside ops in the span that read the group
        for o in block.ops[lo:hi + 1]:
            if o not in group and any(v.defining_op in group or v.defining_op in tainted
                                      for v in o.operands):
                tainted.add(o)
        if any(v.defining_op in tainted for o in members for v in o.operands):
            raise ValueError("outline: the group is not convex (an outside op between its "
                             "members both reads it and feeds it)")
        inputs, outputs = boundary(members)
        span = block.ops[lo:hi + 1]
        moved = [o for o in span if o in tainted]
        # the new op goes after the outside ops of the span that do not read the group
        pos = lo + sum(1 for o in span if o not in group and o not in tainted)
        body = Block([v.type for v in inputs])
        remap = dict(zip(inputs, body.args))
        for o in members:
            block.ops.remove(o)
            body.append(o)
            o.operands = [remap.get(v, v) for v in o.operands]
        body.append(Op(terminator, list(outputs), []))
        new = Op(name, inputs, [r.type for r in outputs], attributes,
                 regions=[Region([body])], loc=members[0].loc)
        for o in moved:
            block.ops.remove(o)
        for i, o in enumerate([new, *moved]):
            o.parent = block
            block.ops.insert(pos + i, o)
        for r, nr in zip(outputs, new.results):
            for user in list(r.uses):
                if user.parent is not body:
                    user.operands = [nr if v is r else v for v in user.operands]
        self.touched.append(new)
        self.changes += 1
        return new

    def inline(self, op: Op) -> list[Value]:
        """The inverse of `outline`: move the body of a one-region op into its block in its
        place, its arguments replaced by the op's operands; returns what replaced its results."""
        block = op.parent
        body = op.regions[0].block
        remap = dict(zip(body.args, op.operands))
        term = body.ops[-1]
        results = [remap.get(v, v) for v in term.operands]
        term.drop_operands()
        for inner in body.ops[:-1]:
            inner.operands = [remap.get(v, v) for v in inner.operands]
            inner.parent = block
            block.ops.insert(block.ops.index(op), inner)
            self.touched.append(inner)
        body.ops = []
        self.replace_op(op, results)
        return results


def _ops_of(block: Block) -> Iterable[Op]:
    for op in block.ops:
        yield op
        for r in op.regions:
            for b in r.blocks:
                yield from _ops_of(b)


def apply_patterns_greedily(target: Module | Function, patterns: PatternSet,
                            max_rewrites: int | None = None) -> int:
    """Apply `patterns` until a fixpoint; returns the number of IR changes made."""
    funcs = target.functions if isinstance(target, Module) else [target]
    total = 0
    for f in funcs:
        worklist = deque(_ops_of(f.body))
        queued = set(worklist)
        limit = max_rewrites if max_rewrites is not None else \
            REWRITES_PER_OP * max(len(worklist), MIN_REWRITE_BUDGET_OPS)
        rw = Rewriter()
        while worklist:
            op = worklist.popleft()
            queued.discard(op)
            if op.parent is None:  # erased meanwhile
                continue
            if not op.has_uses() and is_pure(op) and op.results:
                rw.erase_op(op)
            else:
                for p in patterns.for_op(op.name):
                    if p.match_and_rewrite(op, rw):
                        if op.parent is not None:
                            rw.touched.append(op)
                        break
            for t in rw.touched:
                if t is not None and t.parent is not None and t not in queued:
                    worklist.append(t)
                    queued.add(t)
            rw.touched.clear()
            if rw.changes > limit:
                raise SpokeshaveError(f"pattern rewriting did not converge on @{f.name} after "
                                      f"{rw.changes} rewrites; two patterns probably undo each other")
        total += rw.changes
    return total
