"""Lowering one fused group (or one fusable op) to the steps the CPU runtime calls.

A group's region becomes a short sequence of steps, scheduled in dependency order:

* `rows`: a generated row-wise loop nest (`rows.py`) for a run of pointwise ops and
  last-dim reductions;
* `gemm`: a generated compressed-linear kernel (`gemm.py`) with the pointwise ops that
  consume its result fused into its store (the epilogue: activation, residual add, the
  `lorc` correction computed by two skinny library GEMMs ahead of it); when its input
  comes from a row kernel of the same group, that kernel writes the int8 rows and scales
  (the w8a8 prologue) and this step reads them;
* `library`: a dense float GEMM or attention through torch (oneDNN/MKL, flash-style
  SDPA), as Inductor calls extern kernels; what follows it fuses into the next row kernel;
* `extern`: any other op, through the interpreter's ATen path (listed in the report).

A step returns None when a call does not fit what it was compiled for (a dynamic dim that
broadcasts at run time); the group then runs on the reference path for that call, so a
shape never fails and never recompiles.
"""
from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from spokeshave.compiler.dialect import (
    COMPRESSED_LINEAR,
    LINEAR,
    POINTWISE,
    has_trait,
    op_def,
)
from spokeshave.compiler.interpreter import reference_runner
from spokeshave.compiler.ir import Op, TensorType, Value
from spokeshave.compiler.target import Target

from . import gemm, rows
from .rows import POINTWISE_EMITTERS, RowKernel, row_op_supported

ATTENTION = ("aten.scaled_dot_product_attention",)


@dataclass
class Quantized:
    """Activation rows a prologue quantized for a w8a8 GEMM: int8 codes and scales."""

    q: torch.Tensor
    scale: torch.Tensor
    shape: tuple[int, ...]


@dataclass
class Step:
    kind: str                      # rows | gemm | library | extern
    ops: tuple[Op, ...]
    inputs: list[Value]
    outputs: list[Value]
    symbol: str | None = None      # the C++ function, for generated steps
    source: str | None = None      # its definition (without the prelude)
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


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


# ------------------------------------------------------------------ gemm steps


def _epilogue_ref(v: Value, chain: dict[Value, str], extras: list[Value]) -> str:
    if v in chain:
        return chain[v]
    i = extras.index(v)
    t = v.type
    if t.rank == 0 or all(d == 1 for d in t.shape):
        return f"e{i}[0]"
    if t.rank == 1 or all(d == 1 for d in t.shape[:-1]):
        return f"e{i}[n]"
    if t.shape[-1] == 1:
        return f"e{i}[m]"
    return f"e{i}[m * ldy + n]"


def _epilogue_kind(v: Value, n: int) -> str | None:
    """How an epilogue reads an extra operand: per element, per column, per row, once."""
    t = v.type
    if not isinstance(t, TensorType) or t.dtype != "f32":
        return None
    if t.rank == 0 or all(d == 1 for d in t.shape):
        return "one"
    if t.rank == 1 or all(d == 1 for d in t.shape[:-1]):  # [N], [1, 1, N]: one value per column
        return "col" if t.shape[-1] == n else None
    if t.shape[-1] == 1:
        return "row"
    return "full" if t.shape[-1] == n else None


def _check_extra(t: torch.Tensor, kind: str, y_shape: tuple[int, ...]) -> torch.Tensor | None:
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


def gemm_step(op: Op, kernel: gemm.GemmKernel, epilogue: list[Op], extras: list[Value],
              quantized_input: bool) -> Step:
    """A compressed linear with a pointwise epilogue, as one generated call."""
    chain: dict[Value, str] = {op.result: "v"}
    lines = []
    for i, e in enumerate(epilogue):
        args = [_epilogue_ref(a, chain, extras) for a in e.operands]
        expr = POINTWISE_EMITTERS[e.name](e, args, lambda v: _epilogue_ref(v, chain, extras))
        lines.append(f"const float t{i} = {expr};")
        chain[e.result] = f"t{i}"
    result = epilogue[-1].result if epilogue else op.result
    lam = " ".join(lines) + f" return {chain[result]};"
    npk = len(kernel.packed)
    body = ["const int64_t M = meta[0];",
            "const float* x = (const float*)ptrs[0];",
            "float* y = (float*)ptrs[1];",
            "const float* bias = (const float*)ptrs[2];",
            "void* const* w = ptrs + 5;",
            f"const int64_t ldy = {kernel.n};"]
    body += [f"const float* e{i} = (const float*)ptrs[{5 + npk + i}];" for i in range(len(extras))]
    epi = f"[=](float v, int64_t m, int64_t n) {{ (void)m; (void)n; {lam} }}"
    if quantized_input:
        body.append(f"{kernel.symbol}_q((const void*)ptrs[3], (const float*)ptrs[4], x, M, {kernel.k}, "
                    f"y, ldy, w, bias, {epi});")
    else:
        body.append(f"{kernel.symbol}(x, M, {kernel.k}, y, ldy, w, bias, {epi});")
    fn = "\n".join("  " + s for s in body)
    symbol = "spk_gemm_" + hashlib.sha256((kernel.symbol + fn).encode()).hexdigest()[:16]
    source = f'extern "C" void {symbol}(const int64_t* meta, void* const* ptrs) {{\n{fn}\n}}\n'
    kinds = [_epilogue_kind(v, kernel.n) for v in extras]
    bias_v = _bias_value(op)
    inputs = [op.operands[0], *([bias_v] if bias_v is not None else []), *extras]
    box: dict[str, Any] = {}
    packed = kernel.packed
    packed_ptrs = tuple(t.data_ptr() for t in packed)
    n_ptrs = 5 + len(packed) + len(extras)

    def call(args: list[Any]) -> list[Any] | None:
        x = args[0]
        b = args[1] if bias_v is not None else None
        ex = args[2 if bias_v is not None else 1:]
        if isinstance(x, Quantized):
            shape = x.shape
            q, s, xf = x.q, x.scale, None
        else:
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.shape[-1] != kernel.k:
                return None
            shape = tuple(x.shape)
            xf = x.reshape(-1, kernel.k).contiguous()
            q = s = None
        y_shape = (*shape[:-1], kernel.n)
        ready = []
        for t, kind in zip(ex, kinds):
            c = _check_extra(t, kind, y_shape) if isinstance(t, torch.Tensor) else None
            if c is None:
                return None
            ready.append(c)
        if b is not None and (b.dtype != torch.float32 or not b.is_contiguous()):
            b = b.float().contiguous()
        y = torch.empty(y_shape, dtype=torch.float32)
        m = y.numel() // kernel.n if kernel.n else 0
        if m:
            # ctypes arrays, not tensors: a call's Python overhead is what single-token
            # decoding pays ~200 times per token
            ptrs = (ctypes.c_int64 * n_ptrs)(_ptr(xf), y.data_ptr(), _ptr(b), _ptr(q), _ptr(s),
                                             *packed_ptrs, *(r.data_ptr() for r in ready))
            box["fn"](ctypes.byref(ctypes.c_int64(m)), ptrs)
        return [y]

    return Step("gemm", (op, *epilogue), inputs, [result], symbol, source, (kernel.symbol,), call,
                lambda fn: box.__setitem__("fn", fn))


def _bias_value(op: Op) -> Value | None:
    d = op_def(op.name)
    ops = d.bind(op)
    pos = ops.positions_of("bias")
    return op.operands[pos[0]] if pos else None


# ------------------------------------------------------------------ library and extern


def library_step(op: Op, kind: str = "library") -> Step:
    run = reference_runner(op)

    def call(args: list[Any]) -> list[Any]:
        if any(isinstance(a, Quantized) for a in args):
            return None
        out = run(args)
        return list(out) if len(op.results) > 1 else [out]
    return Step(kind, (op,), list(op.operands), list(op.results), call=call)


def rows_step(kernel: RowKernel) -> Step:
    box: dict[str, Any] = {}
    nout = len(kernel.outputs)

    def call(args: list[Any]) -> list[Any] | None:
        if any(isinstance(a, Quantized) for a in args):
            return None
        got = kernel.run(args)
        if got is None:
            return None
        outs = got[:nout]
        for i, (v, _) in enumerate(kernel.quantized):
            q, s = got[nout + 2 * i], got[nout + 2 * i + 1]
            outs.append(Quantized(q, s, _quant_shape(args)))
        return outs

    def bind(fn):
        kernel.fn = fn
        box["fn"] = fn
    outputs = list(kernel.outputs) + [_QKey(v) for v, _ in kernel.quantized]
    return Step("rows", kernel.ops, kernel.inputs, outputs, kernel.symbol, kernel.source, (), call, bind)


def _quant_shape(args: list[Any]) -> tuple[int, ...]:
    """A row kernel iterates the broadcast of its inputs: the quantized value's shape."""
    return tuple(torch.broadcast_shapes(*(tuple(a.shape) for a in args)))


@dataclass(frozen=True)
class _QKey:
    """The env key of a value's quantized rows (beside its float value, if kept)."""

    value: Value


# ------------------------------------------------------------------ the scheduler


def lower_group(name: str, ops: list[Op], inputs: list[Value], outputs: list[Value],
                constant: Callable[[Value], torch.Tensor | None], target: Target,
                fallback: Callable[[list[Any]], Any]) -> GroupPlan:
    """Steps computing `outputs` from `inputs` through `ops` (a region body or one op).
    `constant(v)` is the weight-store tensor behind a parameter value (None otherwise)."""
    index = {op: i for i, op in enumerate(ops)}
    users: dict[Value, list[Op]] = {}
    for op in ops:
        for v in op.operands:
            users.setdefault(v, []).append(op)
    out_set = set(outputs)
    kernels: dict[Op, gemm.GemmKernel] = {}
    for op in ops:
        if has_trait(op, COMPRESSED_LINEAR) and op.operands[0].type.dtype == "f32":
            weights = [constant(v) for v in op_def(op.name).bind(op).by_role("weight")]
            if all(w is not None for w in weights):
                k = gemm.gemm_kernel(op, weights, target)
                if k is not None:
                    kernels[op] = k
    # epilogues: single-use pointwise chains on a generated GEMM's result
    epilogue_of: dict[Op, list[Op]] = {}
    extras_of: dict[Op, list[Value]] = {}
    claimed: set[Op] = set()
    for g, k in kernels.items():
        chain, extras, cur = [], [], g.result
        while cur not in out_set and len(users.get(cur, [])) == 1:
            c = users[cur][0]
            if (not has_trait(c, POINTWISE) or not row_op_supported(c) or c in claimed
                    or c.result.type.shape != g.result.type.shape):
                break
            others = [v for v in c.operands if v is not cur]
            if any(_epilogue_kind(v, k.n) is None or _depends_on(v, g, ops) for v in others):
                break
            chain.append(c)
            extras += [v for v in others if v not in extras]
            cur = c.result
        epilogue_of[g], extras_of[g] = chain, extras
        claimed.update(chain)
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
    for g, k in kernels.items():
        x = g.operands[0]
        p = producers.get(x)
        # the split ops read float outlier columns too: their input stays float
        float_too = "oweight" in op_def(g.name).bind(g).values
        if (k.act_row_bytes and not float_too and p is not None and p not in kernels
                and row_op_supported(p) and unit_of.get(p) is None):
            if x not in quantize:
                quantize[x] = (f"{k.symbol}_quantize_row", k.act_row_bytes)
                quantizer_of[x] = k.symbol
            elif quantize[x][1] != k.act_row_bytes:
                quantize.pop(x)
    steps: list[Step] = []
    run: list[Op] = []

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
                if r in out_set or any(u not in run and not (u in kernels and r in q)
                                       for u in users.get(r, []))]
        if not outs and not q:
            run.clear()
            return
        try:
            kernel = rows.generate(list(run), ins, outs, q)
        except NotImplementedError:
            steps.extend(library_step(op, "extern") for op in run)
        else:
            step = rows_step(kernel)
            step.needs = tuple(dict.fromkeys(quantizer_of[v] for v in q))
            steps.append(step)
        run.clear()
    for u in order:
        if u in kernels:
            flush()
            steps.append(gemm_step(u, kernels[u], epilogue_of[u], extras_of[u],
                                   u.operands[0] in quantize))
        elif row_op_supported(u) and not (run and not _same_space(run, u)):
            run.append(u)
        else:
            flush()
            if row_op_supported(u):
                run.append(u)
            else:
                kind = "library" if (has_trait(u, LINEAR) or u.name in ATTENTION) else "extern"
                steps.append(library_step(u, kind))
    flush()
    _route_quantized(steps, quantize)
    plan = GroupPlan(name, tuple(ops), list(inputs), list(outputs), steps, fallback)
    plan.kernels = {k.symbol: k.source for k in kernels.values()}
    return plan


def _route_quantized(steps: list[Step], quantize: dict[Value, tuple[str, int]]) -> None:
    """GEMM steps whose input was quantized by a prologue read its `_QKey` entry."""
    produced = {o.value for s in steps for o in s.outputs if isinstance(o, _QKey)}
    for s in steps:
        if s.kind == "gemm" and s.inputs[0] in produced:
            s.inputs = [_QKey(s.inputs[0]), *s.inputs[1:]]


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
