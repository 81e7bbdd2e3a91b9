"""Sequential calibration: run all calibration batches in lockstep through chosen values.

Some compression methods choose a layer's transform from the activations of the model whose
*earlier* layers are already compressed (SliceGPT computes each block's PCA on the outputs
of the sliced blocks before it; GPTQ feeds each layer inputs from quantized predecessors).
`run_lockstep` gives a pass that view in one pass over the calibration data, without
rewriting the IR first:

    def visit(value, xs):          # xs: this value in every batch, in batch order
        ...                        # statistics over all batches at once
        return [f(x) for x in xs]  # or None: the batches go on with what they computed
    run_lockstep(module, ctx, [v0, v1, ...], visit, pass_name="slice")

The interpreter runs every batch (one thread per batch, one computing at a time, so
peak memory is the values live at a watched value in every batch, never their outputs).
Whenever a batch produces one of `values` it waits until every batch has, `visit` runs
once, and the batches go on with the values it returns, i.e. with the effect of the
rewrite the pass is about to make. Execution stops after the last of `values`. The values
must be op results of the entry function (visited in program order).
"""
from __future__ import annotations

import threading
from typing import Callable

import torch

from .calibration import check_batch, require_calibration
from .errors import SpokeshaveError
from .interpreter import Interpreter
from .ir import Module, Value

Visit = Callable[[Value, list[torch.Tensor]], "list[torch.Tensor] | None"]


class _Stop(Exception):
    """Raised by the observer once the last watched value is visited: skip the rest."""


def run_lockstep(module: Module, ctx, values: list[Value], visit: Visit, pass_name: str) -> None:
    """Run every calibration batch up to the last of `values`, calling `visit` once per value
    with that value in all batches (and continuing with what it returns, if anything)."""
    batches = require_calibration(ctx, pass_name)
    func = module.entry
    inputs = func.user_inputs()
    flats = [check_batch(b, inputs, i) for i, b in enumerate(batches)]
    for v in values:
        if v.defining_op is None or v.defining_op.parent is not func.body:
            raise SpokeshaveError(f"run_lockstep: {v!r} is not an op result of @{func.name}")
    watched = set(values)
    last = max(values, key=lambda v: func.body.ops.index(v.defining_op))
    exe = Interpreter(module, ctx.weights)
    n = len(flats)
    slots: list = [None] * n
    state: dict = {}

    def action() -> None:  # runs once per value, in the last thread to arrive
        v = state["value"]
        xs = list(slots)
        slots[:] = [None] * n
        state["result"] = visit(v, xs)

    barrier = threading.Barrier(n, action=action)
    # One batch computes at a time (with all of torch's intra-op threads): the others wait
    # at the barrier holding only their live values, so memory and CPU stay bounded.
    running = threading.Semaphore(1)
    errors: list[BaseException | None] = [None] * n

    def worker(i: int) -> None:
        def observe(v: Value, x):
            if v not in watched:
                return None
            slots[i] = x
            state["value"] = v  # every batch runs the same ops in the same order
            running.release()
            try:
                barrier.wait()
            finally:
                running.acquire()
            out = state["result"]
            if v is last:
                raise _Stop
            return None if out is None else out[i]
        running.acquire()
        try:
            exe(*flats[i], observe=observe)
        except _Stop:
            pass
        except threading.BrokenBarrierError as e:
            errors[i] = e
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors[i] = e
            barrier.abort()
        finally:
            running.release()

    threads = [threading.Thread(target=worker, args=(i,), name=f"calibration-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
    if real:
        raise real[0]
    if any(errors):
        raise SpokeshaveError("calibration batches did not reach the same values; "
                              "sequential calibration needs a straight-line program")
