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

from .errors import SpokeshaveError
from .ir import Block, Function, Module, Op, Value

_IMPURE_MARKERS = ("rand", "bernoulli", "normal", "uniform", "multinomial", "exponential",
                   "empty", "_assert", "print", "seed")


def is_pure(op: Op) -> bool:
    """No side effects and deterministic: safe to erase when unused and to merge by CSE."""
    if op.name in ("func.return", "spk.yield"):
        return False
    if "dropout" in op.name:
        return op.attributes.get("train") is False
    if any(m in op.name for m in _IMPURE_MARKERS):
        return False
    return all(is_pure(inner) for r in op.regions for b in r.blocks for inner in b.ops[:-1])


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
        limit = max_rewrites if max_rewrites is not None else 20 * max(len(worklist), 100)
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
