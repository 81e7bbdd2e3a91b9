"""The CPU backend's executable: compiled groups run through ctypes, the rest interpreted.

`build(module, weights, target)` lowers every `spk.fused` group (and every fusable op
left on its own) with `schedule.plan_module` and the C++ of `lowering.CpuCodegen`, writes
one translation unit per distinct group (identical groups in different layers generate
identical text, so they compile once), builds them into one shared object (`toolchain.build_library`, cached) and runs
the function through the core interpreter with those groups swapped in. Ops with no
kernel are extern calls through the interpreter's ATen path, listed in `extern_ops` and
in the compile summary. A group whose unit fails to compile, or every group when there is
no compiler, falls back to the reference path with one warning naming the group and the
kept compiler log; a call that does not fit a group's compiled assumptions takes the
reference path for that call only.
"""
from __future__ import annotations

import ctypes
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spokeshave.compiler.backend import KernelInfo
from spokeshave.compiler.interpreter import Interpreter
from spokeshave.compiler.ir import Module, Op
from spokeshave.compiler.printer import print_module
from spokeshave.compiler.target import Target
from spokeshave.compiler.weights import WeightStore

from ..schedule import GroupPlan, kernel_infos, plan_module, plan_runner
from . import toolchain
from .lowering import CpuCodegen
from .prelude import PRELUDE
from .replay import Replayer


class CpuBackendWarning(UserWarning):
    """A group runs on the reference path (its C++ did not build)."""


def unit_sources(plans: Mapping[Op, GroupPlan]) -> dict[str, str]:
    """One translation unit per group with generated code; each C++ function is defined in
    the first unit that needs it, so identical groups add nothing and the link never sees
    a symbol twice."""
    emitted: set[str] = set()
    units: dict[str, str] = {}
    for plan in plans.values():
        parts, needs = [], []
        for step in plan.steps:
            if step.symbol is None or step.symbol in emitted:
                continue
            emitted.add(step.symbol)
            parts.append(step.source)
            needs += [n for n in step.needs if n not in needs]
        if not parts:
            continue
        kernels = "".join(plan.kernels[n] for n in needs if n in plan.kernels)
        text = PRELUDE + kernels + "\n" + "\n".join(parts)
        name = f"group_{len(units)}.cpp"
        units[name] = text
        plan.unit = name
    return units


class CpuExecutable:
    """An `Executable`: the interpreter with compiled groups swapped in."""

    def __init__(self, module: Module, weights: WeightStore, target: Target):
        start = time.perf_counter()
        self.module = module
        self.target = target
        self.plans = plan_module(module, weights, CpuCodegen(target))
        self._sources = unit_sources(self.plans)
        self.library: toolchain.Library | None = None
        self.failed: dict[str, str] = {}      # group name -> reason
        self._build()
        self.compile_seconds = time.perf_counter() - start
        self.extern_ops = Counter(op.name for op in module.entry.body.ops[:-1]
                                  if op not in self.plans or not self._compiled(self.plans[op]))
        self._interpreter = Interpreter(module, weights, select=self._select)
        self._run: Callable[..., list[Any]] = self._interpreter
        if self.library is not None and hasattr(self.library.cdll, "spk_replay"):
            self._run = Replayer(self._interpreter, self.library.cdll.spk_replay)

    def _build(self) -> None:
        needs = {p.unit for p in self.plans.values() if p.unit}
        if not needs:
            return
        try:
            self.library = toolchain.build_library(self._sources, self.target)
        except toolchain.ToolchainError as e:
            names = [p.name for p in self.plans.values() if any(s.symbol for s in p.steps)]
            warnings.warn(f"spokeshave cpu: {len(names)} group(s) run on the reference path "
                          f"({', '.join(names[:3])}{' ...' if len(names) > 3 else ''}): {e}",
                          CpuBackendWarning, stacklevel=3)
            for n in names:
                self.failed[n] = str(e)
            return
        bad = {f.unit: f for f in self.library.failures}
        for plan in self.plans.values():
            try:
                for step in plan.steps:
                    if step.symbol is not None:
                        fn = getattr(self.library.cdll, step.symbol)
                        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                        fn.restype = None
                        step.bind(fn)
            except AttributeError:
                f = bad.get(plan.unit) or next(iter(bad.values()), None)
                reason = f"{f.first_error} (compiler log: {f.log})" if f else "a kernel is missing"
                self.failed[plan.name] = reason
        for unit, f in bad.items():
            names = [p.name for p in self.plans.values() if p.name in self.failed]
            warnings.warn(f"spokeshave cpu: compiling {unit} failed, so {', '.join(names[:3])} "
                          f"{'run' if len(names) > 1 else 'runs'} on the reference path: "
                          f"{f.first_error} (compiler log: {f.log})", CpuBackendWarning, stacklevel=3)

    def _compiled(self, plan: GroupPlan) -> bool:
        return plan.name not in self.failed and any(s.kind != "extern" for s in plan.steps)

    def _select(self, op: Op):
        plan = self.plans.get(op)
        if plan is None or plan.name in self.failed:
            return None
        return plan_runner(plan, len(op.results) == 1)

    def __call__(self, *inputs: Any) -> list[Any]:
        return self._run(*inputs)

    @property
    def sources(self) -> Mapping[str, str]:
        return {**self._sources, "module.mlir": print_module(self.module)}

    @property
    def kernels(self) -> Sequence[KernelInfo]:
        return kernel_infos(self.plans, self.extern_ops)

    def summary(self) -> str:
        """The compile report: groups, generated kernels, library calls, extern ops."""
        steps = Counter(s.kind for p in self.plans.values() for s in p.steps)
        lib = self.library
        lines = [f"cpu backend for {self.target.describe()}: {len(self.plans)} groups, "
                 f"{len(self._sources)} translation units "
                 f"({lib.compiled if lib else 0} compiled, {lib.hits if lib else 0} cached) "
                 f"in {self.compile_seconds:.2f} s",
                 "  steps: " + ", ".join(f"{n} {k}" for k, n in sorted(steps.items()))]
        if self.extern_ops:
            lines.append("  extern (interpreter ATen path): " +
                         ", ".join(f"{n}x {k}" for k, n in sorted(self.extern_ops.items())))
        for name, reason in self.failed.items():
            lines.append(f"  reference path: {name}: {reason}")
        return "\n".join(lines)


def build(module: Module, weights: WeightStore, target: Target) -> CpuExecutable:
    return CpuExecutable(module, weights, target)


def generate(module: Module, weights: WeightStore, target: Target) -> dict[str, str]:
    """The translation units `build` would compile, with the shared prelude elided (what
    `spokeshave-opt --emit=cpp` prints for FileCheck)."""
    units = unit_sources(plan_module(module, weights, CpuCodegen(target)))
    return {name: text.replace(PRELUDE, "// prelude: backends/cpu/prelude.py\n", 1)
            for name, text in units.items()}
