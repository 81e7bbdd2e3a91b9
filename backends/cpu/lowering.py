"""The CPU backend's code for the steps `backends.schedule` plans: C++ per step.

`CpuCodegen` is the scheduler's `Codegen`: a compressed linear gets a generated GEMM
(`gemm.py`) whose store applies the step's epilogue as a C++ lambda, and a run of row ops
becomes one row loop nest (`rows.py`), writing int8 rows and scales for a w8a8 prologue.
Each step's function takes `(const int64_t* meta, void* const* ptrs)`, called through
ctypes.
"""
from __future__ import annotations

import ctypes
import hashlib
from typing import Any

import torch
from spokeshave.compiler.ir import Op, Value
from spokeshave.compiler.target import Target

from ..rowops import F32
from ..schedule import Quantized, Step, bias_value, epilogue_kind, gemm_buffers, row_step
from . import attention, gemm, rows
from .replay import invoke
from .rows import cpp_expression


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


def gemm_step(op: Op, kernel: gemm.GemmKernel, epilogue: list[Op], extras: list[Value],
              quantized_input: bool) -> Step:
    """A compressed linear with a pointwise epilogue, as one generated call."""
    chain: dict[Value, str] = {op.result: "v"}
    lines = []
    for i, e in enumerate(epilogue):
        args = [_epilogue_ref(a, chain, extras) for a in e.operands]
        expr = cpp_expression(e, args, lambda v: _epilogue_ref(v, chain, extras))
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
    kinds = [epilogue_kind(v, kernel.n) for v in extras]
    bias_v = bias_value(op)
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
        buffers = gemm_buffers(ex, kinds, b, (*shape[:-1], kernel.n), torch.device("cpu"))
        if buffers is None:
            return None
        ready, b, y = buffers
        m = y.numel() // kernel.n if kernel.n else 0
        if m:
            # ctypes arrays, not tensors: a call's Python overhead is what single-token
            # decoding pays ~200 times per token
            ptrs = (ctypes.c_int64 * n_ptrs)(_ptr(xf), y.data_ptr(), _ptr(b), _ptr(q), _ptr(s),
                                             *packed_ptrs, *(r.data_ptr() for r in ready))
            invoke(box["fn"], (ctypes.c_int64 * 1)(m), ptrs)
        return [y]

    return Step("gemm", (op, *epilogue), inputs, [result], symbol, source, (kernel.symbol,), call,
                lambda fn: box.__setitem__("fn", fn))


class CpuCodegen:
    """The scheduler's `Codegen` for C++ on `target` (float32 tensors)."""

    float_types = F32
    defers_bias = True

    def __init__(self, target: Target):
        self.target = target

    def gemm_kernel(self, op: Op, weights: list[torch.Tensor]) -> gemm.GemmKernel | None:
        return gemm.gemm_kernel(op, weights, self.target)

    def quantize_row(self, kernel: gemm.GemmKernel) -> str:
        return f"{kernel.symbol}_quantize_row"

    def gemm_step(self, op: Op, kernel: gemm.GemmKernel, epilogue: list[Op], extras: list[Value],
                  quantized_input: bool) -> Step:
        return gemm_step(op, kernel, epilogue, extras, quantized_input)

    def rows_step(self, ops: list[Op], inputs: list[Value], outputs: list[Value],
                  quantize: dict[Value, tuple[str, int]], donated: list[Value],
                  biased: dict[Value, Value]) -> Step:
        return row_step(rows.generate(ops, inputs, outputs, quantize, donated, biased))

    def attention_step(self, op: Op) -> Step | None:
        lanes = 16 if self.target.simd_bits >= 512 else 8
        return attention.attention_step(op, self.target.cache("l1d"), lanes)
