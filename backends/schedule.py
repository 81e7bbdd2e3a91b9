"""Scheduling a fused group into the steps a generated-code backend runs, for any backend.

As Inductor's scheduler sits above its C++ and Triton kernel code generators, this module
decides, once for every backend, how a group's region (or one fusable op) is computed; a
`Codegen` (the CPU's C++, Triton) only turns each step into its own source. The steps, in
dependency order:

* `rows`: a run of pointwise ops and last-dim reductions in one row space, as one
  generated row kernel;
* `gemm`: a linear the codegen has a kernel for, with the pointwise ops that consume its
  result fused into its store (the epilogue: activation, residual add, the `lorc`
  correction computed by two skinny GEMMs ahead of it); when its input comes from a row
  kernel of the same group, that kernel writes the int8 rows and scales (the w8a8
  prologue) and this step reads them;
* `attention`: `scaled_dot_product_attention` as a generated kernel, where the codegen
  has one for its form (`Codegen.attention_step`);
* `library`: a linear without a generated kernel, or attention, through torch (oneDNN/MKL,
  cuBLAS, flash-style SDPA), as Inductor calls extern kernels; what follows it fuses into
  the next row kernel (a row kernel that alone reads a dense linear's result also adds its
  bias, and a fresh GEMM result it alone reads becomes its output buffer);
* `extern`: any other op, through the interpreter's ATen path (listed in the report).

A step returns None when a call does not fit what it was compiled for (a dynamic dim that
broadcasts at run time); the group then runs on the reference path for that call, so a
shape never fails and never recompiles.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import networkx as nx
import torch
from spokeshave.compiler.backend import KernelInfo
from spokeshave.compiler.dialect import COMPRESSED_LINEAR, LINEAR, POINTWISE, has_trait, op_def
from spokeshave.compiler.interpreter import reference_runner
from spokeshave.compiler.ir import Module, Op, Value
from spokeshave.compiler.weights import WeightStore

from .rowops import F32, float_of, row_op_supported

ATTENTION = ("aten.scaled_dot_product_attention",)


@dataclass
class Quantized:
    """Activation rows a prologue quantized for a w8a8 GEMM: int8 codes and scales."""

    q: torch.Tensor
    scale: torch.Tensor
    shape: tuple[int, ...]


@dataclass(frozen=True)
class QKey:
    """The env key of a value's quantized rows (beside its float value, if kept)."""

    value: Value


@dataclass
class Step:
    kind: str                      # rows | gemm | library | extern
    ops: tuple[Op, ...]
    inputs: list[Value]
    outputs: list[Value]
    symbol: str | None = None      # the generated function, for generated steps
    source: str | None = None      # its definition
    needs: tuple[str, ...] = ()    # kernel sources (gemm templates) it instantiates
    call: Callable[[list[Any]], list[Any] | None] | None = None
    bind: Callable[[Any], None] | None = None   # gets the loaded function


@dataclass
class GroupPlan:
    """A lowered group: its steps, and the reference runner it falls back to."""

    name: str
    ops: tuple[Op, ...]
    inputs: list[Value]
    outputs: list[Value]
    steps: list[Step]
    fallback: Callable[[list[Any]], Any]
    fallbacks: int = 0             # calls that took the reference path
    kernels: dict[str, str] = field(default_factory=dict)  # gemm template name -> source
    direct: bool = False           # one step reading the inputs and writing the outputs as is
    unit: str | None = None        # the backend's source file holding its functions

    def finish(self) -> None:
        s = self.steps
        self.direct = (len(s) == 1 and s[0].inputs == self.inputs and s[0].outputs == self.outputs)

    def run(self, args: list[Any]) -> list[Any] | None:
        if len(self.steps) == 1 and self.direct:
            return self.steps[0].call(args)
        env: dict[Value, Any] = dict(zip(self.inputs, args))
        for step in self.steps:
            got = step.call([env[v] for v in step.inputs])
            if got is None:
                return None
            env.update(zip(step.outputs, got))
        return [env[v] for v in self.outputs]


class GemmKernelLike(Protocol):
    symbol: str
    source: str
    n: int
    act_row_bytes: int       # > 0: it reads int8 rows a row kernel's prologue can write


class Codegen(Protocol):
    """What a backend supplies: kernels for linears, and the source of each step; its
    kernels read and write tensors of `float_types` (computing in float32). A row kernel may
    write its output over a `donated` input, and adds `biased[v]` to input `v` wherever it
    reads it (only a codegen with `defers_bias` is given any)."""

    float_types: frozenset[str]
    defers_bias: bool

    def gemm_kernel(self, op: Op, weights: list[torch.Tensor]) -> GemmKernelLike | None: ...

    def quantize_row(self, kernel: GemmKernelLike) -> str: ...

    def gemm_step(self, op: Op, kernel: GemmKernelLike, epilogue: list[Op], extras: list[Value],
                  quantized_input: bool) -> Step: ...

    def rows_step(self, ops: list[Op], inputs: list[Value], outputs: list[Value],
                  quantize: dict[Value, tuple[str, int]], donated: list[Value],
                  biased: dict[Value, Value]) -> Step: ...

    def attention_step(self, op: Op) -> Step | None: ...


# ------------------------------------------------------------------ epilogue operands


def epilogue_kind(v: Value, n: int, float_types: frozenset[str] = F32) -> str | None:
    """How an epilogue reads an extra operand: per element, per column, per row, once."""
    t = v.type
    if not float_of(v, float_types):
        return None
    if t.rank == 0 or all(d == 1 for d in t.shape):
        return "one"
    if t.rank == 1 or all(d == 1 for d in t.shape[:-1]):  # [N], [1, 1, N]: one value per column
        return "col" if t.shape[-1] == n else None
    if t.shape[-1] == 1:
        return "row"
    return "full" if t.shape[-1] == n else None


def ready_extra(t: torch.Tensor, kind: str, y_shape: tuple[int, ...]) -> torch.Tensor | None:
    """An extra operand laid out as the epilogue reads it (None: it does not fit)."""
    n = y_shape[-1]
    if kind == "one":
        return t.reshape(1).contiguous() if t.numel() == 1 else None
    if kind == "col":
        return t.reshape(n).contiguous() if t.shape[-1] == n and t.numel() == n else None
    want = (*y_shape[:-1], 1) if kind == "row" else tuple(y_shape)
    if tuple(t.shape) == want:
        return t.contiguous()
    # a static 1 (or a missing leading dim) that broadcasts against a `?` of the output: the
    # kernel reads the operand densely, so materialise the broadcast (a fuzzing find)
    try:
        return t.expand(want).contiguous()
    except RuntimeError:
        return None


def gemm_buffers(extras: list[Any], kinds: list[str], bias: torch.Tensor | None,
                 y_shape: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype = torch.float32
                 ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor] | None:
    """A GEMM step's extra operands laid out for its epilogue, its bias as float32, and its
    `dtype` output buffer; None when an extra does not fit (the group then takes the
    reference path)."""
    ready = []
    for t, kind in zip(extras, kinds):
        c = ready_extra(t, kind, y_shape) if isinstance(t, torch.Tensor) else None
        if c is None:
            return None
        ready.append(c)
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        bias = bias.float().contiguous()
    return ready, bias, torch.empty(y_shape, dtype=dtype, device=device)


def bias_value(op: Op) -> Value | None:
    d = op_def(op.name)
    ops = d.bind(op)
    pos = ops.positions_of("bias")
    return op.operands[pos[0]] if pos else None


def library_step(op: Op, kind: str = "library") -> Step:
    run = reference_runner(op)

    def call(args: list[Any]) -> list[Any]:
        if any(isinstance(a, Quantized) for a in args):
            return None
        out = run(args)
        return list(out) if len(op.results) > 1 else [out]
    return Step(kind, (op,), list(op.operands), list(op.results), call=call)


def drop_bias(step: Step, bias: Value) -> None:
    """Make the library step of a dense linear compute `x @ w.T` alone (a row kernel adds
    `bias` as it reads the result): torch's addmm first copies the bias into every row of
    its output, a full extra write and read of it."""
    step.inputs = [v for v in step.inputs if v is not bias]

    def call(args: list[Any]) -> list[Any] | None:
        x, w = args
        if not isinstance(x, torch.Tensor):
            return None
        return [torch.nn.functional.linear(x, w)]
    step.call = call


def quant_shape(args: list[Any]) -> tuple[int, ...]:
    """A row kernel iterates the broadcast of its inputs: the quantized value's shape."""
    return tuple(torch.broadcast_shapes(*(tuple(a.shape) for a in args)))


class RowKernelLike(Protocol):
    symbol: str
    source: str
    ops: tuple[Op, ...]
    inputs: list[Value]
    outputs: list[Value]
    quantized: list[tuple[Value, int]]   # (value, bytes per row) written as int8 rows
    fn: Any

    def run(self, args: list[Any]) -> list[Any] | None: ...


def row_step(kernel: RowKernelLike) -> Step:
    """The step of a generated row kernel: its outputs, then a `Quantized` per prologue."""
    nout = len(kernel.outputs)

    def call(args: list[Any]) -> list[Any] | None:
        if any(isinstance(a, Quantized) for a in args):
            return None
        got = kernel.run(args)
        if got is None:
            return None
        outs = got[:nout]
        for i in range(len(kernel.quantized)):
            q, s = got[nout + 2 * i], got[nout + 2 * i + 1]
            outs.append(Quantized(q, s, quant_shape(args)))
        return outs

    def bind(fn):
        kernel.fn = fn
    outputs = list(kernel.outputs) + [QKey(v) for v, _ in kernel.quantized]
    return Step("rows", kernel.ops, kernel.inputs, outputs, kernel.symbol, kernel.source, (), call, bind)


# ------------------------------------------------------------------ the scheduler


def lower_group(name: str, ops: list[Op], inputs: list[Value], outputs: list[Value],
                constant: Callable[[Value], torch.Tensor | None], codegen: Codegen,
                fallback: Callable[[list[Any]], Any]) -> GroupPlan:
    """Steps computing `outputs` from `inputs` through `ops` (a region body or one op).
    `constant(v)` is the weight-store tensor behind a parameter value (None otherwise)."""
    index = {op: i for i, op in enumerate(ops)}
    users: dict[Value, list[Op]] = {}
    for op in ops:
        for v in op.operands:
            users.setdefault(v, []).append(op)
    out_set = set(outputs)
    floats = codegen.float_types

    def row_op(op: Op) -> bool:
        return row_op_supported(op, floats)
    kernels: dict[Op, Any] = {}
    for op in ops:
        if ((has_trait(op, COMPRESSED_LINEAR) or has_trait(op, LINEAR))
                and float_of(op.operands[0], floats)):
            weights = [constant(v) for v in op_def(op.name).bind(op).by_role("weight")]
            if all(w is not None for w in weights):
                k = codegen.gemm_kernel(op, weights)
                if k is not None:
                    kernels[op] = k
    # epilogues: single-use pointwise chains on a generated GEMM's result; the compressed
    # linears claim first, so a `lorc` add joins the main GEMM, not the correction's
    epilogue_of: dict[Op, list[Op]] = {}
    extras_of: dict[Op, list[Value]] = {}
    claimed: set[Op] = set()
    for g in sorted(kernels, key=lambda g: not has_trait(g, COMPRESSED_LINEAR)):
        k = kernels[g]
        chain, extras, cur = [], [], g.result
        while cur not in out_set and len(users.get(cur, [])) == 1:
            c = users[cur][0]
            if (not has_trait(c, POINTWISE) or not row_op(c) or c in claimed
                    or c.result.type.shape != g.result.type.shape):
                break
            others = [v for v in c.operands if v is not cur]
            if any(epilogue_kind(v, k.n, floats) is None or _depends_on(v, g, ops) for v in others):
                break
            chain.append(c)
            extras += [v for v in others if v not in extras]
            cur = c.result
        epilogue_of[g], extras_of[g] = chain, extras
        claimed.update(chain)
    # a generated dense GEMM with nothing to fuse is no better than the vendor library's
    for g in [g for g, k in kernels.items() if getattr(k, "library_when_alone", False)]:
        if not epilogue_of[g]:
            del kernels[g], epilogue_of[g], extras_of[g]
    # units: a gemm with its epilogue, or one op; scheduled in dependency order
    unit_of: dict[Op, Op] = {}
    for g, chain in epilogue_of.items():
        for c in chain:
            unit_of[c] = g
    graph = nx.DiGraph()
    producers = {r: op for op in ops for r in op.results}
    for op in ops:
        u = unit_of.get(op, op)
        graph.add_node(u)
        for v in op.operands:
            p = producers.get(v)
            if p is not None and unit_of.get(p, p) is not u:
                graph.add_edge(unit_of.get(p, p), u)
    order = list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    # prologue: a row value read by generated w8a8 GEMMs is written quantized
    quantize: dict[Value, tuple[str, int]] = {}
    quantizer_of: dict[Value, str] = {}
    refused: set[Value] = set()   # read by GEMMs of different row formats: stays float

    def reads_codes(g: Op, k: GemmKernelLike) -> bool:
        # the split ops read float outlier columns too: their input stays float
        return bool(k.act_row_bytes) and "oweight" not in op_def(g.name).bind(g).values

    for g, k in kernels.items():
        x = g.operands[0]
        p = producers.get(x)
        if (reads_codes(g, k) and p is not None and p not in kernels
                and row_op(p) and unit_of.get(p) is None and x not in refused):
            # one row format per value: GEMMs of one format share a quantizer, and the
            # formats' row sizes differ for one K (w8a8: K codes; w8a8g: + group scales)
            if x not in quantize:
                quantize[x] = (codegen.quantize_row(k), k.act_row_bytes)
                quantizer_of[x] = k.symbol
            elif quantize[x][1] != k.act_row_bytes:
                quantize.pop(x)
                refused.add(x)
    steps: list[Step] = []
    run: list[Op] = []
    fresh: set[Value] = set()   # results of this group's linears: new buffers nobody else holds
    # library linears whose bias a row kernel could add instead (`drop_bias`)
    library_of: dict[Value, Step] = {}
    bias_of: dict[Value, Value] = {}

    def flush():
        if not run:
            return
        vals = {r for op in run for r in op.results}
        ins = []
        for op in run:
            for v in op.operands:
                if v not in vals and v not in ins:
                    ins.append(v)
        # a row kernel iterates the broadcast of its inputs: its quantized rows are the
        # value's own rows only when every op of the run has the value's shape (a fuzzing
        # find: a [1, K] value beside a [?, K] one was quantized as ? rows)
        space = {tuple(op.result.type.shape) for op in run}
        q = {v: quantize[v] for op in run for v in op.results
             if v in quantize and space == {tuple(v.type.shape)}}
        for v in [v for op in run for v in op.results if v in quantize and v not in q]:
            quantize.pop(v)
        outs = [r for op in run for r in op.results
                if r in out_set or any(u not in run and not (u in kernels and r in q and reads_codes(u, kernels[u]))
                                       for u in users.get(r, []))]
        if not outs and not q:
            run.clear()
            return
        # a fresh GEMM result read by this run alone may be overwritten by it (in place):
        # one large buffer less per call, and no page faults for a new one
        donated = [v for v in ins if v in fresh and v not in out_set
                   and all(u in run for u in users.get(v, []))]
        biased = {v: bias_of[v] for v in donated if v in bias_of
                  and all(has_trait(u, POINTWISE) for u in users[v])}
        try:
            step = codegen.rows_step(list(run), ins + [b for b in biased.values() if b not in ins],
                                     outs, q, donated, biased)
        except NotImplementedError:
            steps.extend(library_step(op, "extern") for op in run)
        else:
            step.needs = tuple(dict.fromkeys(quantizer_of[v] for v in q))
            steps.append(step)
            for v, b in biased.items():
                drop_bias(library_of[v], b)
        run.clear()
    for u in order:
        if u in kernels:
            flush()
            x = u.operands[0]
            steps.append(codegen.gemm_step(u, kernels[u], epilogue_of[u], extras_of[u],
                                           x in quantize and reads_codes(u, kernels[u])))
            fresh.add((epilogue_of[u] or [u])[-1].result)
        elif row_op(u) and not (run and not _same_space(run, u)):
            run.append(u)
        else:
            flush()
            if row_op(u):
                run.append(u)
            else:
                kind = "library" if (has_trait(u, LINEAR) or u.name in ATTENTION) else "extern"
                generated = codegen.attention_step(u) if u.name in ATTENTION else None
                steps.append(generated or library_step(u, kind))
                if has_trait(u, LINEAR):
                    fresh.add(u.result)
                    b = bias_value(u)
                    if (codegen.defers_bias and u.name == "aten.linear" and b is not None
                            and float_of(b, floats) and b.type.rank == 1):
                        library_of[u.result], bias_of[u.result] = steps[-1], b
    flush()
    _route_quantized(steps, quantize)
    plan = GroupPlan(name, tuple(ops), list(inputs), list(outputs), steps, fallback)
    plan.kernels = {k.symbol: k.source for k in kernels.values()}
    return plan


def _route_quantized(steps: list[Step], quantize: dict[Value, tuple[str, int]]) -> None:
    """GEMM steps whose input was quantized by a prologue read its `QKey` entry."""
    produced = {o.value for s in steps for o in s.outputs if isinstance(o, QKey)}
    for s in steps:
        if s.kind == "gemm" and s.inputs[0] in produced:
            s.inputs = [QKey(s.inputs[0]), *s.inputs[1:]]


def _same_space(run: list[Op], b: Op) -> bool:
    """`b` iterates the same space as the row ops of `run`: the same leading dims, and one
    row length across the run (a reduced dim of 1 aside). A kernel writes each result over
    its whole space, so a [1, K] result beside a [?, K] one would come out with ? rows, and
    a reduction over 8 columns broadcast against a last dim `?` is a different row length
    whenever `?` is not 8 (two fuzzing finds)."""
    ta, tb = run[-1].result.type, b.result.type
    if ta.rank != tb.rank or tuple(ta.shape[:-1]) != tuple(tb.shape[:-1]):
        return False
    lengths = {op.result.type.shape[-1] if op.result.type.rank else 1 for op in (*run, b)}
    return len(lengths - {1}) <= 1


def _depends_on(v: Value, g: Op, ops: list[Op]) -> bool:
    """Does `v` (transitively, within `ops`) depend on `g`'s result?"""
    members = set(ops)
    stack, seen = [v], set()
    while stack:
        cur = stack.pop()
        if cur is g.result:
            return True
        p = cur.defining_op
        if p is None or p not in members or p in seen:
            continue
        seen.add(p)
        stack.extend(p.operands)
    return False


# ------------------------------------------------------------------ a whole module


def group_name(op: Op, i: int) -> str:
    where = f" at {op.loc}" if getattr(op, "loc", None) else ""
    kind = op.attributes.get("kind")
    return f"group {i} ({op.name}{'[' + kind + ']' if kind else ''}{where})"


def lowerable(op: Op, float_types: frozenset[str] = F32) -> bool:
    """A top-level op a backend's plan covers: a group, or one op a step can compute."""
    return (op.name == "spk.fused" or row_op_supported(op, float_types)
            or has_trait(op, COMPRESSED_LINEAR)
            or has_trait(op, LINEAR) or op.name in ATTENTION)


def plan_runner(plan: GroupPlan, single: bool,
                attempt: Callable[[list[Any]], list[Any] | None] | None = None
                ) -> Callable[[list[Any]], Any]:
    """The interpreter's runner of a planned op: `attempt` (the plan's steps by default);
    when it returns None (a call that does not fit), the op's reference runner, counted in
    `plan.fallbacks`."""
    attempt = attempt or plan.run

    def run(args: list[Any]) -> Any:
        got = attempt(args)
        if got is None:
            plan.fallbacks += 1
            return plan.fallback(args)
        return got[0] if single else got
    return run


def kernel_infos(plans: Mapping[Op, GroupPlan], extern_ops: Mapping[str, int]) -> list[KernelInfo]:
    """What an executable ran: each step of each plan (generated ones name the source file
    holding them, `plan.unit`), then each op left to the interpreter's ATen path."""
    out = [KernelInfo(s.symbol or f"{s.kind} {s.ops[0].name}", tuple(o.name for o in s.ops),
                      plan.unit if s.symbol else None)
           for plan in plans.values() for s in plan.steps]
    return out + [KernelInfo(f"extern {name}", (name,)) for name in sorted(extern_ops)]


def plan_module(module: Module, weights: WeightStore, codegen: Codegen) -> dict[Op, GroupPlan]:
    """Lower every group and fusable op of the entry function."""
    func = module.entry
    params = {a: weights[n] for a in func.args if (n := func.param_name(a)) is not None}
    plans: dict[Op, GroupPlan] = {}
    for i, op in enumerate(func.body.ops[:-1]):
        if not lowerable(op, codegen.float_types):
            continue
        if op.name == "spk.fused":
            block = op.regions[0].block
            outer = dict(zip(block.args, op.operands))
            body, inputs, outputs = block.ops[:-1], list(block.args), list(block.ops[-1].operands)

            def constant(v: Value, outer=outer) -> torch.Tensor | None:
                return params.get(outer.get(v))
        else:
            body, inputs, outputs = [op], list(dict.fromkeys(op.operands)), list(op.results)

            def constant(v: Value) -> torch.Tensor | None:
                return params.get(v)
        plan = lower_group(group_name(op, i), list(body), inputs, outputs, constant, codegen,
                           reference_runner(op))
        if op.name != "spk.fused":
            plan.inputs = list(op.operands)
        plan.finish()
        plans[op] = plan
    return plans
