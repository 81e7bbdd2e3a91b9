"""Row kernels in Triton: a run of pointwise ops and last-dim reductions as one kernel.

One program per row of the iteration space (all dims but the last); the row's `C`
elements are one `[BC]` block in registers (`BC` the next power of two, the tail masked),
so a reduction (LayerNorm's statistics, softmax's max and sum) and the ops before and
after it share the loaded row and nothing is written between them. A value is a *vector*
(the row's block) or a *scalar* (one float per row: a reduction's result, a `[..., 1]`
input), as in the CPU's row kernels (`backends/cpu/rows.py`). Every reduction reads its
input through `tl.where(mask, x, identity)`, since masked lanes hold whatever the ops made
of the `other=0` loads.

Values are f32, f16 or bf16 tensors: loaded into float32, computed there, stored in their
own type (no rounding between the ops of one kernel, as in Inductor).

Inputs broadcast in the outer dims by run-time strides (0 where a dim broadcasts, one
compile for every shape) and in the last dim by kind. A value the scheduler marked for a
w8a8 prologue is also written as int8 rows and per-row scales, bit for bit as
`compiler.numerics.quant.quantize_per_token_int8` computes them: `amax / 127` and
`x / scale` with IEEE division (`tl.div_rn`), round half to even (adding and subtracting
1.5 * 2**23, exact for |x| <= 127.5), clamp at +-127.

Only `triton.language` builtins appear (see `gemm.py` on why `tl.sum` and `tl.max`, `@jit`
helpers, are avoided): reductions are `tl.reduce` with the combine functions `tl.sum` and
`tl.max` use (`SUM`, `MAX`), passed, never called from here.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from spokeshave.compiler.ir import Op, TensorType, Value, torch_dtype
from spokeshave.compiler.numerics.quant import INT8_MAX, ZERO_RANGE

from ..rowops import (REDUCTIONS, SCALAR, VEC, Lang, LayoutCache, RowKernelRecord, RowLayout,
                      expression, is_row_scalar, norm_affine, operands)

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)

# the activation element types the kernels read and write (computing in float32 within a
# kernel, as Inductor does: intermediates are not rounded to the 16-bit type between ops)
TL_TYPES = {"f32": "tl.float32", "f16": "tl.float16", "bf16": "tl.bfloat16"}
FLOAT_TYPES = frozenset(TL_TYPES)
FLOAT_DTYPES = tuple(torch_dtype(t) for t in sorted(FLOAT_TYPES))


def py_float(x: float) -> str:
    """A float attribute as a Triton literal of its float32 value (torch rounds a Python
    scalar to the tensor's float32 before applying it)."""
    x = float(np.float32(x))
    if x != x:
        return "float('nan')"
    if math.isinf(x):
        return "float('inf')" if x > 0 else "float('-inf')"
    return repr(x)


TRITON = Lang(literal=py_float, num=lambda s: s,
              fn={"exp": "tl.exp", "erf": "tl.erf", "tanh": "spk_tanh", "sigmoid": "spk_sigmoid",
                  "relu": "spk_relu", "max": "spk_max", "min": "spk_min", "sqrt": "tl.sqrt",
                  "log": "tl.log", "abs": "tl.abs", "pow": "spk_pow"})

# The combine functions of `tl.sum` and `tl.max`: the interpreter recognises them and reduces
# with numpy (any other combine function it calls once per element, ~1000x slower). The
# element-wise max ignores NaN there; a row with a NaN still comes out NaN through softmax's
# exp and sum, and `aten.amax`, whose result is the max itself, reduces with `spk_max`.
SUM = "tl.standard._sum_combine"
MAX = "tl.standard._elementwise_max"

# the kernel file's helpers, the Triton counterpart of the CPU prelude
HELPERS = '''
@triton.jit
def spk_max(a, b):
    # NaN-propagating, as torch.maximum; nested `where`s, since `|` of a row scalar's and a
    # block's comparisons is refused by the interpreter (a fuzzing find)
    return tl.where(a != a, a, tl.where(a > b, a, b))


@triton.jit
def spk_min(a, b):
    return tl.where(a != a, a, tl.where(a < b, a, b))


@triton.jit
def spk_relu(a):
    return tl.where(a > 0.0, a, 0.0)


@triton.jit
def spk_sigmoid(a):
    return 1.0 / (1.0 + tl.exp(-a))


@triton.jit
def spk_tanh(a):
    t = 1.0 - 2.0 / (tl.exp(2.0 * tl.abs(a)) + 1.0)
    return tl.where(a < 0.0, -t, t)


@triton.jit
def spk_pow(a, e):
    return tl.exp(e * tl.log(a))
'''


def triton_expression(op: Op, args: list[str], ref) -> str:
    """Pointwise `op` as a Triton expression (blocks or scalars alike)."""
    return expression(op, args, ref, TRITON)


def quantize_lines(x: str, q_ptr: str, s_ptr: str, row: str, mask: str, cols: str) -> list[str]:
    """Per-token int8 quantization of row `x` (a `[BC]` block), stored at `q_ptr + row*cols`."""
    return [f"qa = tl.reduce(tl.where({mask}, tl.abs({x}), 0.0), 0, {MAX})",
            f"qs = tl.where(qa > {py_float(ZERO_RANGE)}, tl.div_rn(qa, {float(INT8_MAX)}), 1.0)",
            f"qv = (tl.div_rn({x}, qs) + 12582912.0) - 12582912.0",
            f"qv = tl.minimum(tl.maximum(qv, {-float(INT8_MAX)}), {float(INT8_MAX)})",
            f"tl.store({q_ptr} + {row} * {cols} + c, qv.to(tl.int8), mask={mask})",
            f"tl.store({s_ptr} + {row}, qs)"]


@dataclass
class TritonRowKernel(RowKernelRecord):
    """One generated Triton row kernel and how to launch it."""

    nd: int = 0                    # outer dims the kernel was generated for
    fn: Any = None
    _layouts: LayoutCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._layouts = LayoutCache(self.input_kinds, self.outputs, self.output_kinds,
                                    lambda lay: len(lay.outer) == self.nd,
                                    self.identityless_reduction())
        self._out_dtypes = [torch_dtype(v.type.dtype) for v in self.outputs]

    def run(self, args: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Launch on `args`; the outputs, then each quantized value's (int8 rows, scales);
        None when the call does not fit what was generated."""
        hit = self._layouts.get(args, FLOAT_DTYPES)
        if hit is None or not hit[1]:
            return None
        lay: RowLayout = hit[0]
        dev = args[0].device
        alive = [t.contiguous() if c else t for t, c in zip(args, lay.contiguous)]
        outs = [torch.empty(s, dtype=dt, device=dev) for s, dt in zip(lay.out_shapes, self._out_dtypes)]
        quant = []
        for _ in self.quantized:
            quant += [torch.empty((lay.rows, lay.cols), dtype=torch.int8, device=dev),
                      torch.empty((lay.rows,), dtype=torch.float32, device=dev)]
        if lay.rows:
            bc = 1 << max(lay.cols - 1, 0).bit_length()
            self.fn[(lay.rows,)](*alive, *outs, *quant, lay.rows, lay.cols, *lay.outer,
                                 *(s for st in lay.strides for s in st), BC=bc,
                                 num_warps=4 if bc >= 1024 else 1)
        return outs + quant


def generate(ops: list[Op], inputs: list[Value], outputs: list[Value],
             quantize: dict[Value, tuple[str, int]] | None = None) -> TritonRowKernel:
    """The Triton row kernel computing `outputs` (and the int8 rows of `quantize`'s values)
    from `inputs` through `ops`, in order."""
    quantize = dict(quantize or {})
    kind: dict[Value, str] = {}
    name: dict[Value, str] = {}
    body: list[str] = []
    for i, v in enumerate(inputs):
        kind[v] = SCALAR if is_row_scalar(v) else VEC
        name[v] = f"in{i}"
        body.append(f"in{i} = tl.load(a{i} + o{i} + c, mask=cm, other=1.0).to(tl.float32)"
                    if kind[v] == VEC else f"in{i} = tl.load(a{i} + o{i}).to(tl.float32)")

    def ref(v: Value) -> str:
        return name[v]

    for op in ops:
        k = len(name)
        v = op.result
        if op.name in REDUCTIONS:
            x = op.operands[0]
            if kind[x] != VEC:
                raise NotImplementedError("a last-dim reduction of a [..., 1] value")
            expr, scalar = _reduction(op, name[x], k, body, ref)
        else:
            expr = triton_expression(op, [name[a] for a in op.operands], ref)
            scalar = all(kind[a] == SCALAR for a in op.operands)
        name[v], kind[v] = f"v{k}", SCALAR if scalar else VEC
        body.append(f"v{k} = {expr}")
    for i, v in enumerate(outputs):
        val = name[v] if v.type.dtype == "f32" else f"{name[v]}.to(out{i}.dtype.element_ty)"
        body.append(f"tl.store(out{i} + r * C + c, {val}, mask=cm)" if kind[v] == VEC
                    else f"tl.store(out{i} + r, {val})")
    for i, v in enumerate(quantize):
        if kind[v] != VEC:
            raise NotImplementedError("a w8a8 prologue of a [..., 1] value")
        x = name[v]
        if v.type.dtype != "f32":  # quantize the value the IR holds (as the reference does)
            x = f"{x}.to({TL_TYPES[v.type.dtype]}).to(tl.float32)"
        body += quantize_lines(x, f"q{i}", f"qs{i}", "r", "cm", "C")
    ranks = [x.type.rank for x in (*inputs, *outputs, *quantize) if isinstance(x.type, TensorType)]
    nd = max(max(ranks, default=1) - 1, 0)
    index = ["rem = r"]
    for d in reversed(range(nd)):
        index.append(f"i{d} = rem % n{d}")
        if d:
            index.append(f"rem = rem // n{d}")
    for i in range(len(inputs)):
        index.append(f"o{i} = " + (" + ".join(f"i{d} * st{i}_{d}" for d in range(nd)) or "0"))
    params = ([f"a{i}" for i in range(len(inputs))] + [f"out{i}" for i in range(len(outputs))]
              + [p for i in range(len(quantize)) for p in (f"q{i}", f"qs{i}")]
              + ["R", "C"] + [f"n{d}" for d in range(nd)]
              + [f"st{i}_{d}" for i in range(len(inputs)) for d in range(nd)] + ["BC: tl.constexpr"])
    lines = ["r = tl.program_id(0).to(tl.int64)", "c = tl.arange(0, BC)", "cm = c < C",
             *index, *body]
    what = ", ".join(op.name.removeprefix("aten.") for op in ops) or "copy"
    text = (f"def KERNEL({', '.join(params)}):\n    \"\"\"rows: {what}\"\"\"\n"
            + "".join(f"    {s}\n" for s in lines))
    symbol = "spk_rows_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    source = "\n@triton.jit\n" + text.replace("KERNEL", symbol, 1)
    return TritonRowKernel(symbol, source, tuple(ops), list(inputs), [kind[v] for v in inputs],
                           list(outputs), [kind[v] for v in outputs],
                           [(v, rb) for v, (_, rb) in quantize.items()], nd)


def _reduction(op: Op, x: str, k: int, body: list[str], ref) -> tuple[str, bool]:
    """Lines computing reduction `op` of row `x`; returns (its value's expression, scalar?)."""
    vals = operands(op)
    a = op.attributes
    add = f"0, {SUM})"
    if op.name in ("aten.mean.dim", "aten.sum.dim_IntList"):
        s = f"tl.reduce(tl.where(cm, {x}, 0.0), {add}"
        return (f"{s} / C" if op.name == "aten.mean.dim" else s), True
    if op.name == "aten.amax":
        return f"tl.reduce(tl.where(cm, {x}, float('-inf')), 0, spk_max)", True
    if op.name == "aten.layer_norm":
        eps = py_float(a.get("eps", 1e-5))
        # corrected two-pass (Bjorck), as the CPU kernel: the deviations' own sum repairs
        # the mean's rounding, which 1/sigma amplifies on a nearly constant row
        body += [f"m{k} = tl.reduce(tl.where(cm, {x}, 0.0), {add} / C",
                 f"d{k} = tl.where(cm, {x} - m{k}, 0.0)",
                 f"c{k} = tl.reduce(d{k}, {add} / C",
                 f"sq{k} = tl.reduce(d{k} * d{k}, {add} / C",
                 f"m{k} = m{k} + c{k}",
                 f"r{k} = 1.0 / tl.sqrt(tl.maximum(sq{k} - c{k} * c{k}, 0.0) + {eps})"]
        expr = f"(({x} - m{k}) * r{k})"
        expr = norm_affine(expr, vals, ref)
        return expr, False
    if op.name == "aten.rms_norm":
        eps = a.get("eps")
        eps = py_float(FLOAT32_EPS if eps is None else eps)
        body += [f"sq{k} = tl.reduce(tl.where(cm, {x} * {x}, 0.0), {add} / C",
                 f"r{k} = 1.0 / tl.sqrt(sq{k} + {eps})"]
        expr = f"({x} * r{k})"
        expr = norm_affine(expr, vals, ref)
        return expr, False
    # softmax over the last dim
    body += [f"mx{k} = tl.reduce(tl.where(cm, {x}, float('-inf')), 0, {MAX})",
             f"e{k} = tl.where(cm, tl.exp({x} - mx{k}), 0.0)",
             f"z{k} = 1.0 / tl.reduce(e{k}, {add}"]
    return f"(e{k} * z{k})", False
