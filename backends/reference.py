"""The reference backend: interprets the IR op by op with torch eager ops.

It is the oracle of every differential test, so it favours exactness over speed. ATen ops
(`aten.*`, `prims.*`) run through `torch.ops` via `compiler.aten.CallPlan`, so any ATen op is
executable without declaring it; the project's own ops (`spk.*`) and symbolic-size
arithmetic (`py.*`) have kernels registered here with `@kernel(name)`. Values are freed after
their last use to keep peak memory near eager's.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from spokeshave.compiler import aten
from spokeshave.compiler.errors import SpokeshaveError, UnsupportedError
from spokeshave.compiler.frontend import _PY_FUNCS
from spokeshave.compiler.ir import Block, Function, Module, Op, Value
from spokeshave.compiler.weights import WeightStore

from . import register_backend

Kernel = Callable[[Op, list[Any]], Any]
Observer = Callable[[Value, Any], Any]
KERNELS: dict[str, Kernel] = {}


def kernel(*names: str):
    """Register the reference semantics of non-ATen ops (one kernel may serve several)."""
    def deco(fn: Kernel) -> Kernel:
        for name in names:
            KERNELS[name] = fn
        return fn
    return deco


@kernel("spk.constant")
def _constant(op: Op, args: list[Any]) -> Any:
    return op.attributes["value"]


@kernel("spk.none")
def _none(op: Op, args: list[Any]) -> Any:
    return None


@kernel("spk.fused")
def _fused(op: Op, args: list[Any]) -> Any:
    outs = _BlockProgram(op.regions[0].block, "spk.yield").run(args)
    return outs[0] if len(outs) == 1 else outs


# The IR has value semantics: types carry no strides, so passes may drop a `clone`/`contiguous`
# or compose permutes. `view` must then not depend on the memory layout its input happens to
# have: where torch's view would refuse the strides, reshape a contiguous copy (same values).
_VIEW_OPS = ("aten.view", "aten._unsafe_view")


def _layout_free_view(plan: aten.CallPlan) -> Callable[[list[Any]], Any]:
    def run(args: list[Any]) -> Any:
        try:
            return plan.call(args)
        except RuntimeError:
            x = args[0]
            if not isinstance(x, torch.Tensor) or x.is_contiguous():
                raise
            return plan.call([x.contiguous(), *args[1:]])
    return run


def _runner(op: Op) -> Callable[[list[Any]], Any]:
    if op.name in KERNELS:
        k = KERNELS[op.name]
        return lambda args: k(op, args)
    if op.name.startswith("py."):
        fn = _PY_FUNCS.get(op.name[3:])
        if fn is None:
            raise UnsupportedError(f"{op.describe()}: unknown Python function")
        return lambda args: fn(*args)
    if aten.is_aten_like(op.name):
        plan = aten.CallPlan(op)
        if op.name in _VIEW_OPS:
            return _layout_free_view(plan)
        return plan.call
    raise UnsupportedError(f"the reference backend has no kernel for {op.describe()}; "
                           f"register one with @backends.reference.kernel")


class _BlockProgram:
    """A block prepared for repeated execution: per-op runners and last-use frees."""

    def __init__(self, block: Block, terminator: str):
        self.block = block
        ops = block.ops
        if not ops or ops[-1].name != terminator:
            raise SpokeshaveError(f"block does not end with {terminator}")
        self.body = ops[:-1]
        self.outputs = ops[-1].operands
        self.runners = [_runner(op) for op in self.body]
        last_use: dict[Value, int] = {}
        for i, op in enumerate(self.body):
            for v in op.operands:
                last_use[v] = i
        keep = set(self.outputs)
        self.frees: list[list[Value]] = [[] for _ in self.body]
        for v, i in last_use.items():
            if v not in keep:
                self.frees[i].append(v)

    def run(self, args: list[Any], observe: Observer | None = None) -> list[Any]:
        """Run the block. `observe(value, data)`, if given, sees every block argument and
        every op result as it is produced (calibration statistics are collected this way).
        For an op result it may return a replacement that the rest of the block computes with
        (sequential calibration simulates a rewrite this way, see `compiler.lockstep`); None
        keeps the value."""
        env: dict[Value, Any] = dict(zip(self.block.args, args))
        if observe is not None:
            for a, x in zip(self.block.args, args):
                observe(a, x)
        for op, run, frees in zip(self.body, self.runners, self.frees):
            try:
                out = run([env[v] for v in op.operands])
            except SpokeshaveError:
                raise
            except Exception as e:
                raise SpokeshaveError(f"reference backend: {op.describe()} failed: "
                                      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            if len(op.results) == 1:
                env[op.results[0]] = out
            else:
                for r, o in zip(op.results, out):
                    env[r] = o
            if observe is not None:
                for r in op.results:
                    new = observe(r, env[r])
                    if new is not None:
                        env[r] = new
            for v in frees:
                del env[v]
        return [env[v] for v in self.outputs]


class ReferenceExecutable:
    """Runs `module.entry` with parameters taken from the weight store."""

    def __init__(self, module: Module, weights: WeightStore):
        self.func: Function = module.entry
        self.program = _BlockProgram(self.func.body, "func.return")
        missing = [n for n in self.func.params() if n not in weights]
        if missing:
            raise SpokeshaveError(f"the weight store lacks parameters: {', '.join(missing[:5])}"
                                  f"{' ...' if len(missing) > 5 else ''}")
        self.params = {a: weights[n] for a in self.func.args
                       if (n := self.func.param_name(a)) is not None}
        self.n_inputs = len(self.func.user_inputs())

    def __call__(self, *inputs: Any, observe: Observer | None = None) -> list[Any]:
        if len(inputs) != self.n_inputs:
            raise SpokeshaveError(f"@{self.func.name} takes {self.n_inputs} inputs, got {len(inputs)}")
        it = iter(inputs)
        args = [self.params[a] if a in self.params else next(it) for a in self.func.args]
        with torch.no_grad():
            return self.program.run(args, observe)


@register_backend("reference", device="cpu", features={"any-aten-op", "dynamic-shapes",
                                                       "exact-quant-emulation"})
def build(module: Module, weights: WeightStore) -> ReferenceExecutable:
    return ReferenceExecutable(module, weights)


# The quantized linears' kernels live in their own module; importing it registers them.
from . import reference_quant  # noqa: E402,F401
from . import reference_sparse  # noqa: E402,F401
from . import reference_outliers  # noqa: E402,F401
