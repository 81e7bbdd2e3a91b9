"""The Triton backend's code for the steps `backends.schedule` plans: one kernel per step.

`TritonCodegen` is the scheduler's `Codegen`: a linear with a format in `gemm.FORMATS`
(every compressed op, and a dense `aten.linear` that has an epilogue to fuse) becomes one
GEMM kernel whose store applies the step's epilogue (activation, residual add, the `lorc`
correction, any pointwise chain on the result); a run of row ops becomes one row kernel
(`rows.py`), which also writes the int8 rows and scales of a w8a8 GEMM's input (the
prologue). Each GEMM launch's block sizes, warps, stages and split-K come from
`launch.LaunchTuner` (cost-model ranked, timed on a GPU, cached beside the kernels); on a
GPU a 2:4 GEMM with no epilogue is also timed against torch's semi-structured kernels, and
the faster kept. Launches are ordinary Triton launches on the tensors' device (CPU tensors
under `TRITON_INTERPRET=1`).
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from spokeshave.compiler.ir import Op, Value, torch_dtype
from spokeshave.compiler.target import INTERPRETER_ARCH
from spokeshave.compiler.numerics.quant import quantize_per_token_int8
from spokeshave.compiler.numerics.sparse import decompress_24

from ..schedule import Quantized, Step, bias_value, epilogue_kind, gemm_buffers, row_step
from . import rows
from .gemm import FORMATS, TritonGemm, gemm_kernel, kernel_source
from .launch import LaunchConfig, LaunchTuner
from .rows import FLOAT_TYPES, triton_expression


def _fused_lines(op: Op, epilogue: list[Op], extras: list[Value]) -> str:
    chain: dict[Value, str] = {op.result: "acc"}

    def ref(v: Value) -> str:
        return chain[v] if v in chain else f"e{extras.index(v)}"
    lines = []
    for i, e in enumerate(epilogue):
        lines.append(f"    t{i} = {triton_expression(e, [ref(a) for a in e.operands], ref)}\n")
        chain[e.result] = f"t{i}"
    if epilogue:
        lines.append(f"    acc = t{len(epilogue) - 1}\n")
    return "".join(lines)


def _split_k_locks(box: dict[str, Any], tiles: int, device: torch.device) -> torch.Tensor:
    """The step's split-K arrival counters, one per output tile: zeroed once, and left zeroed
    by every launch (its last slice per tile resets its counter)."""
    locks = box.get("locks")
    if locks is None or locks.numel() < tiles or locks.device != device:
        locks = box["locks"] = torch.zeros(tiles, dtype=torch.int32, device=device)
    return locks


def _semi_structured(kernel: TritonGemm, box: dict[str, Any]) -> torch.Tensor:
    """A 2:4 linear's weight as torch's semi-structured sparse tensor (cuSPARSELt / CUTLASS),
    made on first need from the kernel's own values and positions."""
    if "semi" not in box:
        from torch.sparse import to_sparse_semi_structured

        box["semi"] = to_sparse_semi_structured(decompress_24(*kernel.weights[:2]))
    return box["semi"]


def gemm_step(op: Op, kernel: TritonGemm, epilogue: list[Op], extras: list[Value],
              tuner: LaunchTuner) -> Step:
    """A linear with a pointwise epilogue, as one generated kernel."""
    kinds = [epilogue_kind(v, kernel.n, FLOAT_TYPES) for v in extras]
    fused = _fused_lines(op, epilogue, extras)
    floats = op.operands[0].type.dtype
    text = kernel_source(op.name, "KERNEL", fused, kinds, floats)
    symbol = f"{kernel.symbol}_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    source = text.replace("KERNEL", symbol, 1)
    bias_v = bias_value(op)
    inputs = [op.operands[0], *([bias_v] if bias_v is not None else []), *extras]
    result = epilogue[-1].result if epilogue else op.result
    box: dict[str, Any] = {}
    ops = (op, *epilogue)
    n, k = kernel.n, kernel.k
    x_dtype = torch_dtype(floats)
    dot = ({"DOT_F32": tuner.target.arch == INTERPRETER_ARCH}
           if floats == "bf16" and not kernel.act_row_bytes else {})
    y_dtype = torch_dtype(result.type.dtype)
    int8 = kernel.act_row_bytes > 0
    split = FORMATS[op.name].split

    def call(args: list[Any]) -> list[Any] | None:
        x = args[0]
        b = args[1] if bias_v is not None else None
        ex = args[2 if bias_v is not None else 1:]
        if isinstance(x, Quantized):
            shape, x2, xs = x.shape, x.q, x.scale.reshape(-1)
        else:
            if not isinstance(x, torch.Tensor) or x.dtype != x_dtype or x.shape[-1] != k:
                return None
            shape = tuple(x.shape)
            x2 = x.reshape(-1, k).contiguous()
            if split:  # the outlier columns apart in float32, zeroed in x
                xo = x2.index_select(1, kernel.weights[3]).float().contiguous()
                x2 = x2.clone()
                x2[:, kernel.weights[3]] = 0
            if int8:  # not fused into a producer: quantized here, as the reference does
                x2, xs = quantize_per_token_int8(x2.float())
                xs = xs.reshape(-1).contiguous()
        buffers = gemm_buffers(ex, kinds, b, (*shape[:-1], n), x2.device, y_dtype)
        if buffers is None:
            return None
        ready, b, y = buffers
        m = y.numel() // n if n else 0
        if m:
            weights = [*kernel.weights[:2], *([xs] if int8 else [])]
            if split:
                weights += [xo, kernel.weights[2], xo.shape[1]]
            else:
                weights += kernel.weights[2:]

            def launch(c: LaunchConfig) -> None:
                grid = (-(-m // c.block_m), -(-n // c.block_n), c.split_k)
                ws, locks = y, y
                if c.split_k > 1:
                    ws = torch.empty((c.split_k, m, n), device=y.device,
                                     dtype=torch.int32 if int8 else torch.float32)
                    locks = _split_k_locks(box, grid[0] * grid[1], y.device)
                box["fn"][grid](x2, *weights, b if b is not None else y, *ready, y, ws, locks, m, n, k,
                                x2.stride(0), n, HAS_BIAS=b is not None, **kernel.consts, **dot,
                                BM=c.block_m, BN=c.block_n, BK=c.block_k, SPLIT_K=c.split_k,
                                num_warps=c.num_warps, num_stages=c.num_stages)
            libraries = {}
            if op.name == "spk.linear_sparse24" and not epilogue and tuner.timed:
                libraries["torch-2:4"] = lambda: torch.nn.functional.linear(x2, _semi_structured(kernel, box), b)
            chosen = tuner.choose(symbol, ops, m, launch, FORMATS[op.name].min_block_k, libraries)
            if chosen.library:
                return [torch.nn.functional.linear(x2, _semi_structured(kernel, box), b)
                        .reshape(*shape[:-1], n)]
            box.pop("semi", None)  # the generated kernel won: the library's weight copy goes
            launch(chosen)
        return [y]

    return Step("gemm", (op, *epilogue), inputs, [result], symbol, source, (), call,
                lambda fn: box.__setitem__("fn", fn))


class TritonCodegen:
    """The scheduler's `Codegen` for Triton (f32, f16 and bf16 tensors); `tuner` picks each
    GEMM launch's configuration."""

    float_types = FLOAT_TYPES
    defers_bias = False   # its row kernels do not add a deferred bias (`Codegen`)

    def __init__(self, tuner: LaunchTuner):
        self.tuner = tuner

    def gemm_kernel(self, op: Op, weights: list[torch.Tensor]) -> TritonGemm | None:
        return gemm_kernel(op, weights)

    def quantize_row(self, kernel: TritonGemm) -> str:
        return "int8-per-token"

    def gemm_step(self, op: Op, kernel: TritonGemm, epilogue: list[Op], extras: list[Value],
                  quantized_input: bool) -> Step:
        return gemm_step(op, kernel, epilogue, extras, self.tuner)

    def rows_step(self, ops: list[Op], inputs: list[Value], outputs: list[Value],
                  quantize: dict[Value, tuple[str, int]], donated: list[Value],
                  biased: dict[Value, Value]) -> Step:
        return row_step(rows.generate(ops, inputs, outputs, quantize))

    def attention_step(self, op: Op) -> Step | None:
        return None   # torch's SDPA (flash / memory-efficient kernels on CUDA)
