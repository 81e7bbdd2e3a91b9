"""The interpreter's run of a long block costs no memory-mapping per op, wherever the caller's
Python stack ends: its block function gets a CPython stack chunk of its own
(`compiler.interpreter._CHUNK_SLOTS`), so the ops' call chains never open and unmap one."""
from __future__ import annotations

import resource

import torch

import spokeshave
from spokeshave.compiler.interpreter import Interpreter
from spokeshave.compiler.weights import complete_weights

OPS = 300


def _chain(n: int) -> str:
    t = "tensor<4xf32>"
    lines = [f"func.func @forward(%x: {t}) -> ({t}) {{"]
    prev = "%x"
    for i in range(n):
        lines.append(f'  %{i} = "aten.neg"({prev}) : ({t}) -> {t}')
        prev = f"%{i}"
    lines += [f"  return {prev} : {t}", "}"]
    return "\n".join(lines) + "\n"


def _nested(depth: int, f):
    return f() if depth == 0 else _nested(depth - 1, f)


def test_a_long_block_maps_no_stack_chunk_per_op_at_any_caller_depth():
    m = spokeshave.parse(_chain(OPS))
    run = Interpreter(m, complete_weights(m, None))
    x = torch.randn(4)
    assert torch.equal(run(x)[0], x)  # an even number of negations
    worst = (0.0, 0)  # (faults a call, caller depth)
    # each extra Python frame moves where the block's frame lands by ~100 bytes: 320 depths
    # sweep well over one 16 KiB chunk, so some depth puts an unpadded frame at a chunk's
    # end (there: one mmap, munmap and page fault per op, ~OPS faults a call)
    for depth in range(320):
        _nested(depth, lambda: run(x))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(2):
            _nested(depth, lambda: run(x))
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 2
        worst = max(worst, (faults, depth))
    assert worst[0] < OPS / 10, f"{worst[0]:.0f} page faults a call at caller depth {worst[1]}"
