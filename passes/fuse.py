"""`fuse{kinds=rows|gemm|prologue|attention}`: partition each function into fusion groups and
outline every group into a `spk.fused` op with a `kind` attribute.

Follows the producer-consumer fusion of XLA's instruction fusion and PyTorch Inductor's
scheduler: ops are visited in program order and each op tries to join the group of the ops
that produce its operands; whether a legal merge is made is the cost model's answer, never a
threshold of this pass. Groups are nodes of a quotient graph of the function's dataflow
(networkx), and a merge that would close a cycle there is refused, so every group is convex
and `Rewriter.outline` never fails.

Group kinds (the `kind` attribute) and what their regions hold, in program order:

* `rows`: ops with the `pointwise` trait and reductions over the last dim only
  (`reduces_last_dim`: layer_norm / rms_norm over one trailing dim, softmax over the last
  dim, keepdim mean / sum / amax over -1). They share one row space: every tensor result,
  and every reduction's input, broadcasts to the group's row shape, which is itself the shape
  of one of them, and every reduction reads a tensor of exactly the row shape (a loop over
  rows, and inside it over the last dim; smaller values are broadcast into it).
* `gemm`: one linear (`aten.linear` or a compressed linear) first, then its epilogue: rows
  ops each reading, directly or through the group, the linear's result, in the row space of
  that result (bias + GELU, residual add + LayerNorm). A compressed linear's `lorc`
  correction (`aten.linear(aten.linear(x, B), A)` on the same `x`, then `aten.add.Tensor`
  with the linear's result) joins its group whole.
* `prologue`: a rows part, then one or more linears that quantize their input per token at
  run time (`ACTIVATION_QUANTIZED`) all reading the same value of the rows part, whose shape
  is the row shape: the LayerNorm before Q, K and V quantizes once. Nothing in the region
  reads the linears' results.
* `attention`: one `aten.scaled_dot_product_attention`, alone (a one-op group).

Rules: only ops of a function's top-level block join groups, never views, constants, `py.*`
ops, ops without a record (unknown ATen ops are left as they are) or ops with regions, so
ops already inside a `spk.fused` are not grouped again and the pass is idempotent. A value
used outside its group stays a result of the `spk.fused` op. A merge is made when the merged
group is of one kind above, that kind is listed in `kinds`, contracting it keeps the quotient
graph acyclic (else a remark at the op says which outside op closes the cycle), and the cost
model predicts the merged group cheaper than its parts apart:
`cost(A + B) < cost(A) + cost(B)`. An op tries the groups holding a linear among its
producers first, so a residual add goes to the GEMM's epilogue rather than to the group of
the residual stream; a norm in a GEMM's epilogue is then no w8a8 prologue (a group holds one
GEMM kind).
Compression passes rewrite ops that fusion moves into regions, so they refuse to run after
this pass (`needs_unfused`, checked by the pass manager).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import networkx as nx

from spokeshave.compiler.cost import CostModelAnalysis
from spokeshave.compiler.dialect import (ACTIVATION_INT8, COMPRESSED_LINEAR, LINEAR, POINTWISE, dim_eq,
                                         has_trait, ops_with, reduces_last_dim)
from spokeshave.compiler.errors import PipelineError
from spokeshave.compiler.ir import Block, Function, Module, Op, TensorType, Value
from spokeshave.compiler.passmanager import Pass, PassContext, option
from spokeshave.compiler.rewrite import Rewriter

KINDS = ("rows", "gemm", "prologue", "attention")

# Linears whose reference semantics quantize the input to int8 before the integer GEMM
# (`quant.linear_w8a8`, `outliers.linear_w8a8_split`, ...): a producer that writes that input
# can quantize it as it goes.
ACTIVATION_QUANTIZED = ops_with(ACTIVATION_INT8)

ATTENTION = "aten.scaled_dot_product_attention"

# roles of the ops that may join a group
_ROWS, _LINEAR, _ATTENTION = "rows", "linear", "attention"


def _role(op: Op) -> str | None:
    """What `op` can be in a group, or None when it never joins one."""
    if op.regions or len(op.results) != 1 or not isinstance(op.result.type, TensorType):
        return None
    if op.name == ATTENTION:
        return _ATTENTION
    if has_trait(op, LINEAR):
        return _LINEAR
    if has_trait(op, POINTWISE) or reduces_last_dim(op):
        return _ROWS
    return None


# ------------------------------------------------------------------ row spaces

Shape = tuple  # of int | None (dynamic)


def _broadcast_dim(a: int | None, b: int | None) -> tuple[bool, int | None]:
    if a == b:
        return True, a
    if a == 1:
        return True, b
    if b == 1:
        return True, a
    if a is None or b is None:  # `?` agrees with anything; it stays `?` against a 1
        return True, b if a is None else a
    return False, None


def _broadcast(shapes: list[Shape]) -> Shape | None:
    """The broadcast of `shapes` (numpy rules, `?` compatible with anything), or None."""
    out: list[int | None] = []
    for shape in shapes:
        if len(shape) > len(out):
            out = [1] * (len(shape) - len(out)) + out
        tail = out[len(out) - len(shape):]
        for i, d in enumerate(shape):
            ok, tail[i] = _broadcast_dim(tail[i], d)
            if not ok:
                return None
        out[len(out) - len(shape):] = tail
    return tuple(out)


def _same_shape(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(dim_eq(x, y) for x, y in zip(a, b))


def row_shape(ops: list[Op], extra: list[Shape] = ()) -> Shape | None:
    """The row shape that rows ops `ops` (and the shapes in `extra`) share, or None when they
    do not share one: their results and reduction inputs broadcast to the shape of one of
    them, and every reduction reads exactly that shape (a smaller reduction, broadcast into
    the group, would be recomputed for every row it is broadcast to)."""
    shapes = list(extra)
    reductions = []
    for op in ops:
        shapes.append(op.result.type.shape)
        if reduces_last_dim(op):
            x = op.operands[0].type
            shapes.append(x.shape)
            reductions.append(x.shape)
    if not shapes:
        return None
    rows = _broadcast(shapes)
    if rows is None or not any(_same_shape(s, rows) for s in shapes):
        return None
    if any(not r or not _same_shape(r, rows) for r in reductions):
        return None
    return rows


# ------------------------------------------------------------------ the lorc pattern


def lorc_of(op: Op) -> tuple[Op, Op, Op] | None:
    """(B-linear, A-linear, add) when compressed linear `op` carries `lorc`'s correction
    `add(op(x), linear(linear(x, B), A))`; None otherwise."""
    if not has_trait(op, COMPRESSED_LINEAR) or len(op.result.uses) != 1:
        return None
    add = op.result.uses[0]
    if add.name != "aten.add.Tensor" or len(add.operands) != 2 or add.attributes:
        return None
    y = op.result
    corr = add.operands[1] if add.operands[0] is y else add.operands[0]
    a = corr.defining_op
    if corr is y or a is None or a.name != "aten.linear" or len(a.operands) != 2 or len(corr.uses) != 1:
        return None
    low = a.operands[0]
    b = low.defining_op
    if b is None or b.name != "aten.linear" or len(b.operands) != 2 or len(low.uses) != 1:
        return None
    if b.operands[0] is not op.operands[0] or b.parent is not op.parent or a.parent is not op.parent:
        return None
    return b, a, add


# ------------------------------------------------------------------ groups


class Group:
    """A would-be fused group: its ops in program order, its kind (None for an op that never
    fuses) and the program position of its last op (see `_Planner._cycle`)."""

    __slots__ = ("ops", "kind", "last")

    def __init__(self, ops: list[Op], kind: str | None, last: int):
        self.ops = ops
        self.kind = kind
        self.last = last

    def __repr__(self) -> str:
        return f"<Group {self.kind} {[o.name for o in self.ops]}>"


class _Planner:
    """Greedy producer-consumer grouping of one block (see the module docstring)."""

    def __init__(self, block: Block, kinds: frozenset[str], cost: CostModelAnalysis,
                 ctx: PassContext, pass_name: str):
        self.block, self.kinds, self.cost, self.ctx, self.name = block, kinds, cost, ctx, pass_name
        self.pos = {op: i for i, op in enumerate(block.ops)}
        self.role = {op: _role(op) for op in block.ops}
        self.group: dict[Op, Group] = {}
        self.graph = nx.DiGraph()
        for op in block.ops:
            r = self.role[op]
            g = Group([op], _ROWS if r == _ROWS else "gemm" if r == _LINEAR else
                      r if r == _ATTENTION else None, self.pos[op])
            self.group[op] = g
            self.graph.add_node(g)
        for op in block.ops:
            for value in _reads(op):
                d = value.defining_op
                if d is not None and d.parent is block and d is not op:
                    self.graph.add_edge(self.group[d], self.group[op])

    # -------------------------------------------------------------- the walk

    def plan(self) -> list[Group]:
        for op in self.block.ops:
            role = self.role[op]
            if role == _ATTENTION or role is None:
                continue
            lorc = self._lorc_at(op)
            if lorc is not None:
                self._try(op, [self.group[o] for o in lorc])
            for producer in self._producers(op):
                if producer is not self.group[op]:
                    self._try(op, [producer, self.group[op]])
        out, seen = [], set()
        for op in self.block.ops:
            g = self.group[op]
            if id(g) in seen or g.kind is None:
                continue
            seen.add(id(g))
            if len(g.ops) >= 2 or (g.kind == "attention" and "attention" in self.kinds):
                out.append(g)
        return out

    def _lorc_at(self, op: Op) -> list[Op] | None:
        """[linear, B, A, add] when `op` is the add of a lorc correction."""
        if op.name != "aten.add.Tensor":
            return None
        for v in op.operands:
            d = v.defining_op
            if d is not None and d.parent is self.block:
                found = lorc_of(d)
                if found is not None and found[2] is op:
                    return [d, found[0], found[1], op]
        return None

    def _producers(self, op: Op) -> list[Group]:
        """Distinct groups writing `op`'s operands: those with a linear first, then by operand."""
        out: list[Group] = []
        for v in op.operands:
            d = v.defining_op
            if d is None or d.parent is not self.block or self.role[d] is None:
                continue
            g = self.group[d]
            if g.kind is not None and all(g is not o for o in out):
                out.append(g)
        return sorted(out, key=lambda g: g.kind != "gemm")  # stable: operand order within

    # -------------------------------------------------------------- one merge

    def _try(self, op: Op, parts: list[Group]) -> bool:
        unique: list[Group] = []
        for g in parts:
            if all(g is not u for u in unique):
                unique.append(g)
        if len(unique) < 2:
            return False
        ops = sorted((o for g in unique for o in g.ops), key=self.pos.__getitem__)
        kind = self.classify(ops)
        if kind is None or kind not in self.kinds:
            return False
        bound = max(g.last for g in unique)
        closing = self._cycle(unique, bound)
        if closing is not None:
            self.ctx.remark(op, f"fuse: {op.name} not fused with the group of "
                                f"{unique[0].ops[0].name}: the path through {closing.ops[0].name} "
                                f"would make a cycle")
            self.ctx.stat(self.name, "merges refused (cycle)")
            return False
        apart = sum((self.cost.cost(g.ops) for g in unique[1:]), self.cost.cost(unique[0].ops))
        if not self.cost.cost(ops) < apart:
            self.ctx.stat(self.name, "merges refused (cost)")
            return False
        self._contract(unique, ops, kind, bound)
        return True

    def _cycle(self, parts: list[Group], bound: int) -> Group | None:
        """An outside node on a path from one of `parts` to another (contracting them would
        close a cycle through it), or None. Every node on such a path holds only ops at
        positions up to `bound` (the last op of the parts): an edge runs from a definition to
        a later use, and the parts hold the last visited op."""
        members = {id(g) for g in parts}
        queue = deque()
        first: dict[int, Group] = {}  # node -> the outside node its path left the parts by
        for g in parts:
            for s in self.graph.successors(g):
                if id(s) not in members and s.last <= bound and id(s) not in first:
                    first[id(s)] = s
                    queue.append(s)
        while queue:
            n = queue.popleft()
            for s in self.graph.successors(n):
                if id(s) in members:
                    return first[id(n)]
                if s.last <= bound and id(s) not in first:
                    first[id(s)] = first[id(n)]
                    queue.append(s)
        return None

    def _contract(self, parts: list[Group], ops: list[Op], kind: str, bound: int) -> None:
        keep = parts[0]
        for other in parts[1:]:
            for p in list(self.graph.predecessors(other)):
                if p is not keep:
                    self.graph.add_edge(p, keep)
            for s in list(self.graph.successors(other)):
                if s is not keep:
                    self.graph.add_edge(keep, s)
            self.graph.remove_node(other)
        keep.ops, keep.kind, keep.last = ops, kind, bound
        for o in ops:
            self.group[o] = keep

    # -------------------------------------------------------------- kinds

    def classify(self, ops: list[Op]) -> str | None:
        """The kind of group `ops` (in program order) would be, or None when it is none."""
        roles = [self.role[o] for o in ops]
        if _ATTENTION in roles or None in roles:
            return None
        linears = [o for o, r in zip(ops, roles) if r == _LINEAR]
        rows = [o for o, r in zip(ops, roles) if r == _ROWS]
        if not linears:
            return "rows" if row_shape(rows) is not None else None
        if self._is_prologue(ops, linears, rows):
            return "prologue"
        if self._is_gemm(ops, linears, rows):
            return "gemm"
        return None

    def _is_gemm(self, ops: list[Op], linears: list[Op], rows: list[Op]) -> bool:
        anchor = ops[0]
        if self.role[anchor] != _LINEAR:
            return False
        lorc = lorc_of(anchor)
        extra = set(linears) - {anchor}
        if extra:
            if lorc is None or extra != {lorc[0], lorc[1]} or lorc[2] not in ops:
                return False
        # every epilogue op reads the linear's result, directly or through the group
        reached = {id(anchor.result)}
        for o in rows:
            if not any(id(v) in reached for v in o.operands):
                return False
            reached.add(id(o.result))
        y = anchor.result.type.shape
        rows_of = row_shape(rows, [y])
        return rows_of is not None and _same_shape(rows_of, y)

    def _is_prologue(self, ops: list[Op], linears: list[Op], rows: list[Op]) -> bool:
        if not rows or any(not has_trait(o, ACTIVATION_INT8) or lorc_of(o) is not None
                           for o in linears):
            return False
        x = linears[0].operands[0]
        if any(o.operands[0] is not x for o in linears) or x.defining_op not in rows:
            return False
        if max(self.pos[o] for o in rows) > min(self.pos[o] for o in linears):
            return False
        outs = {id(o.result) for o in linears}
        if any(id(v) in outs for o in ops for v in o.operands):
            return False
        rows_of = row_shape(rows)
        return rows_of is not None and _same_shape(rows_of, x.type.shape)


def _reads(op: Op) -> list[Value]:
    """The values `op` depends on: its operands and what ops in its regions read."""
    out = list(op.operands)
    for r in op.regions:
        for b in r.blocks:
            for inner in b.ops:
                out.extend(_reads(inner))
    return out


def _parse_kinds(text: str) -> frozenset[str]:
    return frozenset(k.strip() for k in text.split("|"))


@dataclass
class Fuse(Pass):
    """Group rows ops, GEMM epilogues, w8a8 prologues and attention into `spk.fused` ops,
    merging groups where the cost model says one kernel is cheaper than two."""

    name = "fuse"
    kinds: str = option("|".join(KINDS), help="the group kinds to form, '|'-separated: "
                        + ", ".join(KINDS))

    def validate(self) -> None:
        super().validate()
        unknown = sorted(_parse_kinds(self.kinds) - set(KINDS))
        if unknown or not self.kinds.strip():
            raise PipelineError(f"pass 'fuse': option 'kinds' takes '|'-separated group kinds "
                                f"from {', '.join(KINDS)}; got {self.kinds!r}")

    def run(self, module: Module, ctx: PassContext) -> bool:
        cost = ctx.analyses.get(CostModelAnalysis, module)
        kinds = _parse_kinds(self.kinds)
        changed = False
        for f in module.functions:
            changed |= self._fuse(f, kinds, cost, ctx)
        return changed

    def _fuse(self, f: Function, kinds: frozenset[str], cost: CostModelAnalysis,
              ctx: PassContext) -> bool:
        groups = _Planner(f.body, kinds, cost, ctx, self.name).plan()
        rw = Rewriter()
        for g in groups:
            rw.outline(g.ops, attributes={"kind": g.kind})
            ctx.stat(self.name, "groups")
            ctx.stat(self.name, f"{g.kind} groups")
            ctx.stat(self.name, "ops fused", len(g.ops))
        return bool(groups)
