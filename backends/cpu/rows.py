"""Row-wise loop nests: pointwise ops and last-dim reductions as one C++ function.

Every value of a row kernel is, per row of the iteration space (all dims but the last,
parallelised with OpenMP), either a *vector* (the row's `C` elements) or a *scalar* (one
float: a reduction's result, a `[..., 1]` input). Ops are emitted in order into
segments: consecutive pointwise ops on vectors share one `#pragma omp simd` loop over the
row, their intermediates living in registers; a reduction ends the segment (its passes
read a stored row) and its elementwise tail (LayerNorm's normalisation, softmax's
division) opens the next one. A vector is stored only when it crosses a segment or leaves
the kernel, into the kernel's output row or a per-thread scratch row (`C` floats, in L1).

Inputs broadcast in the outer dims by runtime strides (so one compile serves every shape)
and in the last dim by kind: a `[..., 1]` input is a scalar per row. A value the fusion
pass marked for a w8a8 prologue is written as quantized int8 rows plus their scales
instead of floats, by the consuming kernel's own `quantize_row`.

The Python side (`RowKernel.run`) computes the iteration shape, strides and output
buffers per call and returns None when a call does not fit what was compiled (a dim the
types left dynamic turns out to broadcast), so the caller takes the reference path.
"""
from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from spokeshave.compiler.ir import Op, Value

from ..rowops import (REDUCTIONS, SCALAR, VEC, Lang, LayoutCache, RowKernelRecord, RowLayout,
                      expression, is_row_scalar, norm_affine, operands)
from .replay import invoke

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


def c_float(x: float) -> str:
    """A float attribute as an exact C++ literal (hex float), rounded to float as torch does
    when it applies a Python scalar to a float32 tensor."""
    x = float(x)
    if x != x:
        return "NAN"
    if x in (float("inf"), float("-inf")):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    return f"((float){x.hex()})"


CPP = Lang(literal=c_float, num=lambda s: s + "f",
           fn={"exp": "spk_exp", "erf": "spk_erf", "tanh": "spk_tanh", "sigmoid": "spk_sigmoid",
               "relu": "spk_relu", "max": "spk_max", "min": "spk_min", "sqrt": "sqrtf",
               "log": "logf", "abs": "fabsf", "pow": "powf"})


def cpp_expression(op: Op, args: list[str], ref: Callable[[Value], str]) -> str:
    """Pointwise `op` as a C++ float expression (the prelude's functions)."""
    return expression(op, args, ref, CPP)


@dataclass
class RowKernel(RowKernelRecord):
    """One generated C++ row-wise function and how to call it."""

    fn: Any = None
    inplace: int | None = None   # the input whose buffer the output may reuse (`generate`)

    def __post_init__(self) -> None:
        self._layouts = LayoutCache(self.input_kinds, self.outputs, self.output_kinds, self._meta,
                                    self.identityless_reduction())

    def _meta(self, lay: RowLayout):
        meta = [lay.rows, lay.cols, len(lay.outer), *lay.outer, *(s for st in lay.strides for s in st)]
        # an empty last dim still has per-row results (a mean over nothing is NaN): the
        # kernel runs whenever there are rows; its loops over C simply do nothing
        return (ctypes.c_int64 * len(meta))(*meta) if lay.rows else None

    def run(self, args: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Call the kernel on `args` (tensors for `inputs`); returns the outputs (then the
        (q, scale) pair of each quantized value), or None when the call does not fit.
        What a call's shapes and strides imply is worked out once per signature and kept."""
        hit = self._layouts.get(args)
        if hit is None:
            return None
        lay, meta = hit
        # the contiguous copies must outlive the call: hold them, not just their pointers
        alive = [t.contiguous() if c else t for t, c in zip(args, lay.contiguous)]
        ptrs = [t.data_ptr() for t in alive]
        if self.inplace is not None and _reusable(alive[self.inplace], lay.out_shapes[0]):
            outs = [alive[self.inplace]]
        else:
            outs = [torch.empty(s, dtype=torch.float32) for s in lay.out_shapes]
        ptrs += [o.data_ptr() for o in outs]
        for _, row_bytes in self.quantized:
            q = torch.empty((lay.rows, row_bytes), dtype=torch.uint8)
            s = torch.empty((lay.rows,), dtype=torch.float32)
            outs += [q, s]
            ptrs += [q.data_ptr(), s.data_ptr()]
        if meta is not None:
            invoke(self.fn, meta, (ctypes.c_int64 * len(ptrs))(*ptrs))
        return outs


def _reusable(t: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """`t` can be the output buffer itself: exactly the output's shape, densely laid out."""
    return tuple(t.shape) == shape and t.is_contiguous()


def inplace_input(ops: list[Op], inputs: list[Value], outputs: list[Value], kinds_in: list[str],
                  quantize: dict, donated: list[Value]) -> int | None:
    """The donated input whose buffer the kernel may write its output into, if any.

    Safe when the output is the last op's result and the kernel's only output: it is then
    stored last in the final segment, where row r's element j is written after every read
    of the input's element j (the simd loop reads its inputs at j alone, and earlier
    segments only read), and rows are disjoint between threads. The input must have the
    output's type (a broadcast input is read by other rows)."""
    if len(outputs) != 1 or quantize or outputs[0] is not ops[-1].result:
        return None
    out = outputs[0].type
    for i, v in enumerate(inputs):
        if v in donated and kinds_in[i] == VEC and v.type == out:
            return i
    return None


class _Emitter:
    def __init__(self, ops: list[Op], inputs: list[Value], outputs: list[Value],
                 quantize: dict[Value, str], biased: dict[Value, Value]):
        self.ops = ops
        self.biased = biased
        self.inputs = inputs
        self.outputs = outputs
        self.quantize = quantize
        self.kind: dict[Value, str] = {}
        self.name: dict[Value, str] = {}
        self.lines: list[str] = []
        self.loop: list[str] = []        # the open simd loop's body
        self.scratch = 0
        self.segment: dict[Value, int] = {}
        self.seg = 0
        self.stored: dict[Value, str] = {}
        # a norm's row statistics by (norm, row, eps): smoothing leaves two LayerNorms of one
        # row (its own weights, and the smoothed ones for the next GEMMs), which share them
        self.stats: dict[tuple[str, Value, str], int] = {}

    def ref(self, v: Value) -> str:
        """The C++ expression of `v` inside the current loop (or as a scalar)."""
        if v in self.biased:   # a linear's result whose library call left the bias out
            return f"({self._ref(v)} + {self._ref(self.biased[v])})"
        return self._ref(v)

    def _ref(self, v: Value) -> str:
        if self.kind[v] == SCALAR or v in self.local:
            return self.name[v]
        return f"{self.stored[v]}[j]"

    def build(self) -> tuple[str, list[str], list[str]]:
        ops = self.ops
        inside = {r for op in ops for r in op.results}
        for i, v in enumerate(self.inputs):
            self.kind[v] = SCALAR if is_row_scalar(v) else VEC
            self.name[v] = f"in{i}"
            if self.kind[v] == VEC:
                self.stored[v] = f"in{i}"
        # segments: a reduction starts a new one; values used in a later segment are stored
        seg = 0
        for op in ops:
            if op.name in REDUCTIONS:
                seg += 1
            self.segment[op.result] = seg
        later_use: set[Value] = set(self.outputs) | set(self.quantize)
        for op in ops:
            for v in op.operands:
                if v in inside and (op.name in REDUCTIONS or self.segment[op.result] != self.segment[v]):
                    later_use.add(v)
        self.later = later_use
        self.local: set[Value] = set()
        body: list[str] = []
        for op in ops:
            if op.name in REDUCTIONS:
                self._close(body)
                self.seg = self.segment[op.result]
                self._reduction(op, body)
            else:
                self.seg = self.segment[op.result]
                self._pointwise(op, body)
        self._close(body)
        for v in self.quantize:
            src = self.stored[v] if self.kind[v] == VEC else None
            qi = list(self.quantize).index(v)
            body.append(f"{self.quantize[v]}({src}, (uint8_t*)qo{qi} + r * qb{qi}, qs{qi} + r);")
        kinds_in = [self.kind[v] for v in self.inputs]
        kinds_out = [self.kind[v] for v in self.outputs]
        return "\n".join(body), kinds_in, kinds_out

    def _store_target(self, v: Value) -> str:
        if v in self.outputs:
            return f"out{self.outputs.index(v)} + r * C"
        self.scratch += 1
        return f"scratch + {self.scratch - 1} * C"

    def _close(self, body: list[str]) -> None:
        if self.loop:
            body.append("#pragma omp simd")
            body.append("for (int64_t j = 0; j < C; ++j) {")
            body.extend("  " + s for s in self.loop)
            body.append("}")
        self.loop = []
        self.local = set()

    def _new_vec(self, v: Value, expr: str) -> None:
        """`v` = expr, elementwise in the open loop; stored if read later or output."""
        n = f"v{len(self.name)}"
        self.name[v] = n
        self.kind[v] = VEC
        self.loop.append(f"const float {n} = {expr};")
        self.local.add(v)
        if v in self.later:
            ptr = f"p{n}"
            self.pre.append(f"float* {ptr} = {self._store_target(v)};")
            self.stored[v] = ptr
            self.loop.append(f"{ptr}[j] = {n};")

    def _pointwise(self, op: Op, body: list[str]) -> None:
        v = op.result
        args = [self.ref(a) for a in op.operands]
        expr = cpp_expression(op, args, self.ref)
        if all(self.kind[a] == SCALAR for a in op.operands):
            n = f"s{len(self.name)}"
            self.name[v] = n
            self.kind[v] = SCALAR
            body.append(f"const float {n} = {expr};")
            if v in self.outputs:
                body.append(f"out{self.outputs.index(v)}[r] = {n};")
            return
        self._new_vec(v, expr)

    def _stored_row(self, v: Value) -> str:
        if self.kind[v] != VEC:
            raise NotImplementedError("a last-dim reduction of a [..., 1] value")
        return self.stored[v]

    def _reduction(self, op: Op, body: list[str]) -> None:
        vals = operands(op)
        x = self._stored_row(op.operands[0])
        k = len(self.name)
        a = op.attributes
        if op.name in ("aten.mean.dim", "aten.sum.dim_IntList", "aten.amax"):
            n = f"s{k}"
            if op.name == "aten.amax":
                body += [f"float {n} = -INFINITY;", f"for (int64_t j = 0; j < C; ++j) {n} = spk_max({x}[j], {n});"]
            else:
                body += [f"float {n} = 0.0f;", "#pragma omp simd reduction(+:" + n + ")",
                         f"for (int64_t j = 0; j < C; ++j) {n} += {x}[j];"]
                if op.name == "aten.mean.dim":
                    body.append(f"{n} /= (float)C;")
            self.name[op.result] = n
            self.kind[op.result] = SCALAR
            if op.result in self.outputs:
                body.append(f"out{self.outputs.index(op.result)}[r] = {n};")
            return
        if op.name == "aten.layer_norm":
            eps = c_float(a.get("eps", 1e-5))
            k = self.stats.setdefault((op.name, op.operands[0], eps), k)
            if k == len(self.name):
                body += [f"float m{k} = 0.0f;", f"#pragma omp simd reduction(+:m{k})",
                         f"for (int64_t j = 0; j < C; ++j) m{k} += {x}[j];", f"m{k} /= (float)C;",
                         # corrected two-pass (Bjorck): the deviations' own sum repairs the
                         # mean's rounding, which 1/sigma amplifies when a row is nearly
                         # constant (a fuzzing find: 58x torch's distance to float64)
                         f"float q{k} = 0.0f, s{k} = 0.0f;", f"#pragma omp simd reduction(+:q{k},s{k})",
                         f"for (int64_t j = 0; j < C; ++j) {{ const float d = {x}[j] - m{k}; s{k} += d; q{k} += d * d; }}",
                         f"const float c{k} = s{k} / (float)C;", f"m{k} += c{k};",
                         f"const float r{k} = 1.0f / sqrtf(fmaxf(q{k} / (float)C - c{k} * c{k}, 0.0f) + {eps});"]
            expr = f"(({x}[j] - m{k}) * r{k})"
            expr = norm_affine(expr, vals, self.ref)
        elif op.name == "aten.rms_norm":
            eps = a.get("eps")
            eps = c_float(FLOAT32_EPS if eps is None else eps)
            k = self.stats.setdefault((op.name, op.operands[0], eps), k)
            if k == len(self.name):
                body += [f"float q{k} = 0.0f;", f"#pragma omp simd reduction(+:q{k})",
                         f"for (int64_t j = 0; j < C; ++j) q{k} += {x}[j] * {x}[j];",
                         f"const float r{k} = 1.0f / sqrtf(q{k} / (float)C + {eps});"]
            expr = f"({x}[j] * r{k})"
            expr = norm_affine(expr, vals, self.ref)
        else:  # softmax over the last dim
            e = self._store_target_scratch()
            body += [f"float mx{k} = -INFINITY;", f"for (int64_t j = 0; j < C; ++j) mx{k} = spk_max({x}[j], mx{k});",
                     f"float* e{k} = {e};", f"float z{k} = 0.0f;", f"#pragma omp simd reduction(+:z{k})",
                     f"for (int64_t j = 0; j < C; ++j) {{ e{k}[j] = spk_exp({x}[j] - mx{k}); z{k} += e{k}[j]; }}",
                     f"const float iz{k} = 1.0f / z{k};"]
            expr = f"(e{k}[j] * iz{k})"
        self._new_vec(op.result, expr)

    def _store_target_scratch(self) -> str:
        self.scratch += 1
        return f"scratch + {self.scratch - 1} * C"


def generate(ops: list[Op], inputs: list[Value], outputs: list[Value],
             quantize: dict[Value, tuple[str, int]] | None = None,
             donated: list[Value] | None = None,
             biased: dict[Value, Value] | None = None) -> RowKernel:
    """The row kernel computing `outputs` from `inputs` through `ops` (in order).
    `quantize`: value -> (quantize_row function, bytes per row) for prologue outputs;
    `donated`: inputs dead after this kernel, whose buffer its output may take over;
    `biased`: input -> the bias (also an input) added to it wherever it is read (a linear
    whose library call left the bias out; only pointwise ops may read it)."""
    quantize = quantize or {}
    em = _Emitter(ops, inputs, outputs, {v: fn for v, (fn, _) in quantize.items()}, biased or {})
    em.pre = []
    body, kinds_in, kinds_out = em.build()
    nin, nout = len(inputs), len(outputs)
    inplace = inplace_input(ops, inputs, outputs, kinds_in, quantize, donated or [])
    # the output and the input it may overwrite are one array: no `__restrict` on either
    aliased = {inplace, nin} if inplace is not None else set()

    def restrict(i: int) -> str:
        return "" if i in aliased else " __restrict"
    head = ["const int64_t R = meta[0], C = meta[1], nd = meta[2];",
            "const int64_t* osz = meta + 3;"]
    for i in range(nin):
        head.append(f"const float*{restrict(i)} a{i} = (const float*)ptrs[{i}];")
        head.append(f"const int64_t* st{i} = meta + 3 + nd * {i + 1};")
    for i in range(nout):
        head.append(f"float*{restrict(nin + i)} out{i} = (float*)ptrs[{nin + i}];")
    for i in range(len(quantize)):
        rb = list(quantize.values())[i][1]
        head.append(f"void* qo{i} = ptrs[{nin + nout + 2 * i}];")
        head.append(f"float* qs{i} = (float*)ptrs[{nin + nout + 2 * i + 1}];")
        head.append(f"const int64_t qb{i} = {rb};")
    row = ["int64_t " + ", ".join(f"o{i} = 0" for i in range(nin)) + ";" if nin else "",
           "{ int64_t rem = r; for (int64_t d = nd - 1; d >= 0; --d) { const int64_t i = rem % osz[d]; rem /= osz[d];"
           + "".join(f" o{i} += i * st{i}[d];" for i in range(nin)) + " } }"]
    for i, k in enumerate(kinds_in):
        row.append(f"const float*{restrict(i)} in{i} = a{i} + o{i};" if k == VEC
                   else f"const float in{i} = a{i}[o{i}];")
    row += em.pre + body.splitlines()
    scratch = max(em.scratch, 1)
    text = "\n".join([
        "#pragma omp parallel if (R > 1)",
        "{",
        f"  float* scratch = (float*)spk_scratch({scratch} * C * 4);",
        "  #pragma omp for schedule(static)",
        "  for (int64_t r = 0; r < R; ++r) {",
        *("    " + s for s in row if s),
        "  }",
        "  free(scratch);",
        "}",
    ])
    fn = "\n".join("  " + s for s in head) + "\n" + "\n".join("  " + s for s in text.splitlines())
    symbol = "spk_rows_" + hashlib.sha256(fn.encode()).hexdigest()[:16]
    source = f'extern "C" void {symbol}(const int64_t* meta, void* const* ptrs) {{\n{fn}\n}}\n'
    return RowKernel(symbol, source, tuple(ops), list(inputs), kinds_in, list(outputs), kinds_out,
                     [(v, rb) for v, (_, rb) in quantize.items()], inplace=inplace)
