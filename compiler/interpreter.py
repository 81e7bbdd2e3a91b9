"""The IR interpreter: runs a function op by op with torch eager ops.

It is the core's way to execute IR, so calibration, sequential calibration (`lockstep`) and
the reference backend all run the same code; it favours exactness over speed. Each op runs
by, in order: a kernel the caller passes in `kernels` (a backend overriding an op), the
op record's `interpret` (the `spk` ops, `py.*` arithmetic), "decode, then a float GEMM" for
a compressed linear without one, its region for a `region_body` op (`spk.fused`), and
`torch.ops` through `compiler.aten.CallPlan` for any ATen op. Values are freed after their
last use to keep peak memory near eager's. A backend that compiles some top-level ops
passes `select(op) -> runner | None`: a runner it returns replaces the op's default (the
CPU backend runs its compiled groups this way and leaves the rest to the interpreter).

The observer hook `observe(value, data)` sees every block argument and op result as it is
produced (values inside regions too); for an op result it may return a replacement that the
rest of the program computes with (sequential calibration simulates a rewrite this way).
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Mapping

import torch

from . import aten
from .dialect import COMPRESSED_LINEAR, REGION_BODY, linear_reference, op_def
from .errors import SpokeshaveError, UnsupportedError
from .ir import Block, Function, Module, Op, Value
from .weights import WeightStore

Kernel = Callable[[Op, list[Any]], Any]
Observer = Callable[[Value, Any], Any]

# The IR has value semantics: types carry no strides, so passes may drop a `clone`/`contiguous`
# or compose permutes. `view` must then not depend on the memory layout its input happens to
# have: a non-contiguous input is reshaped instead (a view where its strides allow one, else a
# contiguous copy: the same values). Asking first, not catching view's error, matters: the
# raised-and-caught RuntimeError cost ~40 us per call, paid by every decode step.
_VIEW_OPS = ("aten.view", "aten._unsafe_view")


def _layout_free_view(plan: aten.CallPlan) -> Callable[[list[Any]], Any]:
    reshape = copy.copy(plan)
    reshape.overload = torch.ops.aten.reshape.default   # same (self, size) signature
    reshape.specialize()

    def run(args: list[Any]) -> Any:
        x = args[0]
        if isinstance(x, torch.Tensor) and not x.is_contiguous():
            return reshape.call(args)
        return plan.call(args)
    return run


Select = Callable[[Op], "Callable[[list[Any]], Any] | None"]


class _Program:
    """A block prepared for repeated execution: per-op runners and last-use frees."""

    def __init__(self, block: Block, kernels: Mapping[str, Kernel], select: Select | None = None,
                 own_chunk: bool = False):
        self.block = block
        self.own_chunk = own_chunk
        self.kernels = kernels
        self.select = select
        self.body = block.ops[:-1]
        self.outputs = block.ops[-1].operands
        self.runners = [self._runner(op) for op in self.body]
        last_use: dict[Value, int] = {}
        for i, op in enumerate(self.body):
            for v in op.operands:
                last_use[v] = i
        keep = set(self.outputs)
        self.frees: list[list[Value]] = [[] for _ in self.body]
        for v, i in last_use.items():
            if v not in keep:
                self.frees[i].append(v)

    def _runner(self, op: Op) -> Callable[[list[Any], Observer | None], Any]:
        chosen = self.select(op) if self.select is not None else None
        if chosen is not None:
            return lambda args, observe: chosen(args)
        k = self.kernels.get(op.name)
        if k is not None:
            return lambda args, observe: k(op, args)
        d = op_def(op.name)
        if d is not None and d.interpret is not None:
            return lambda args, observe: d.interpret(op, args)
        if d is not None and COMPRESSED_LINEAR in d.traits:
            return lambda args, observe: linear_reference(op, args)
        if d is not None and REGION_BODY in d.traits:
            body = _Program(op.regions[0].block, self.kernels)

            def run_region(args, observe):
                outs = body.run(args, observe)
                return outs[0] if len(outs) == 1 else outs
            return run_region
        if aten.is_aten_like(op.name):
            plan = aten.CallPlan(op)
            call = _layout_free_view(plan) if op.name in _VIEW_OPS else plan.call
            return lambda args, observe: call(args)
        raise UnsupportedError(f"the interpreter has no semantics for {op.describe()}: declare it "
                               f"with an op record that has `interpret`, or pass a kernel")

    def run(self, args: list[Any], observe: Observer | None = None) -> list[Any]:
        if observe is None:
            return self._straight(args)
        env: dict[Value, Any] = dict(zip(self.block.args, args))
        for a, x in zip(self.block.args, args):
            observe(a, x)
        for i, (op, run, frees) in enumerate(zip(self.body, self.runners, self.frees)):
            try:
                out = run([env[v] for v in op.operands], observe)
            except SpokeshaveError:
                raise
            except Exception as e:
                raise self._failure(i, e) from e
            if len(op.results) == 1:
                env[op.results[0]] = out
            else:
                for r, o in zip(op.results, out):
                    env[r] = o
            for r in op.results:
                new = observe(r, env[r])
                if new is not None:
                    env[r] = new
            for v in frees:
                del env[v]
        return [env[v] for v in self.outputs]

    def _failure(self, i: int, e: Exception) -> SpokeshaveError:
        first = str(e).splitlines()[0] if str(e) else ""
        return SpokeshaveError(f"interpreting {self.body[i].describe()} failed: "
                               f"{type(e).__name__}: {first}")

    def _compile_straight(self) -> Callable[[list[Any]], list[Any]]:
        """The block as one generated Python function: values are locals, each op one call
        and the frees `del`s, so a run pays no dict lookups or loop bookkeeping per op (a
        decode step runs ~1,000 ops). Same semantics as the observed loop above."""
        names: dict[Value, str] = {}

        def name(v: Value) -> str:
            if v not in names:
                names[v] = f"v{len(names)}"
            return names[v]

        params = [name(a) for a in self.block.args]
        lines = ["def straight(args):", f"    {', '.join(params)}, = args" if params else "    pass",
                 "    i = -1", "    try:"]
        for i, (op, frees) in enumerate(zip(self.body, self.frees)):
            call = f"R[{i}]([{', '.join(name(v) for v in op.operands)}], None)"
            if len(op.results) == 1:
                lines.append(f"        i = {i}; {name(op.results[0])} = {call}")
            elif op.results:
                outs = ", ".join(name(r) for r in op.results)
                lines.append(f"        i = {i}; {outs}, = {call}")
            else:
                lines.append(f"        i = {i}; {call}")
            if frees:
                lines.append(f"        del {', '.join(name(v) for v in frees)}")
        lines.append(f"        return [{', '.join(name(v) for v in self.outputs)}]")
        lines.append("    except SPK:")
        lines.append("        raise")
        lines.append("    except Exception as e:")
        lines.append("        raise FAIL(i, e) from e")
        scope = {"R": self.runners, "FAIL": self._failure, "SPK": SpokeshaveError}
        return define_function(lines, len(names), scope, f"<spokeshave block of {len(self.body)} ops>",
                               self.own_chunk)

    @functools.cached_property
    def _straight(self) -> Callable[[list[Any]], list[Any]]:
        return self._compile_straight()


# CPython (3.11+) keeps frames on per-thread stack chunks of 16 KiB (2048 slots), mmapped,
# and unmaps a chunk as soon as the frame that opened it returns. A block function's frame
# holds a slot per value (~1,000 in a decode step) and lands wherever the caller's stack
# ends, so the room left in its chunk is chance: when it is less than what one op's call
# chain needs, every op opens a chunk and closes it again, an mmap, a munmap and a page
# fault per op (SmolLM2's w4g token: 37 -> 52 ms, by the caller's stack depth alone). A frame
# wider than a chunk never fits a standard one, so CPython gives it a chunk of its own with
# at least 1,000 slots (8 KiB) spare, where every op's calls then go: one mmap per call of
# the whole function. Only the top-level block gets this: a region body runs inside a
# top-level op's call chain, where a frame that size would open a chunk per call.
_CHUNK_SLOTS = 2100


def define_function(lines: list[str], n_locals: int, scope: dict[str, Any], filename: str,
                    own_chunk: bool) -> Callable[..., Any]:
    """Compile the generated function `lines` (one `def`, indented by four) in `scope` and
    return it; `own_chunk` widens a function with `n_locals` locals past a CPython stack
    chunk, for one called from anywhere that runs a long chain of ops (see above)."""
    pad = _CHUNK_SLOTS - n_locals if own_chunk else 0
    if pad > 0:  # never executed: the names only widen the frame
        lines = [*lines, "    " + " = ".join(f"_pad{j}" for j in range(pad)) + " = None"]
    exec(compile("\n".join(lines), filename, "exec"), scope)
    name = lines[0].split()[1].split("(")[0]
    return scope[name]


class Interpreter:
    """Runs `module.entry` with parameters taken from the weight store: call it with the
    user inputs (flat, in argument order); it returns the list of outputs."""

    def __init__(self, module: Module, weights: WeightStore,
                 kernels: Mapping[str, Kernel] | None = None, select: Select | None = None):
        self.func: Function = module.entry
        body = self.func.body
        if not body.ops or body.ops[-1].name != "func.return":
            raise SpokeshaveError(f"@{self.func.name} does not end with return")
        self.program = _Program(body, dict(kernels or {}), select, own_chunk=True)
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


def reference_runner(op: Op) -> Callable[[list[Any]], Any]:
    """How the interpreter runs `op` on its own (a region op runs its body): a backend's
    path for an op it has no kernel for, and its fallback for a group it could not build."""
    run = _Program._runner(_NO_OVERRIDES, op)  # type: ignore[arg-type]
    return lambda args: run(args, None)


class _NoOverrides:
    kernels: Mapping[str, Kernel] = {}
    select = None


_NO_OVERRIDES = _NoOverrides()
