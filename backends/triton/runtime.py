"""Running a module on the Triton backend: every fused group (and fusable op) as the
kernels `backends.schedule` plans and `lowering.TritonCodegen` writes (row kernels, GEMMs
with their epilogues and prologues), the remaining ops through the interpreter's ATen path
(torch, on the same device), listed as extern in `kernels`.

The kernels of a module are written to one Python file in the Triton kernel cache
(`$SPOKESHAVE_TRITON_CACHE`, else `~/.cache/spokeshave/triton`), named by the sha256 of its
text and imported from there: `@triton.jit` reads its function's source back from the file,
so generated source cannot be `exec`'d from a string. Triton compiles (and caches) each
block-size variant on its first launch. A kernel that fails to compile or launch is
reported once, naming its group and the error, and that group runs on the reference path
from then on: never a wrong result, never a crash. A call that does not fit a group's
kernels (a dynamic dim that broadcasts at run time) takes the reference path for that call.

Under `TRITON_INTERPRET=1` (no GPU: CI and these machines) Triton runs the same kernels on
CPU tensors with numpy, exactly; that is how every kernel here is tested.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from collections import Counter
from typing import Any, Mapping, Sequence

import torch

from spokeshave.compiler.backend import KernelInfo
from spokeshave.compiler.errors import InvalidInputError, SpokeshaveError
from spokeshave.compiler.interpreter import Interpreter
from spokeshave.compiler.ir import Module, Op
from spokeshave.compiler.printer import print_module
from spokeshave.compiler.target import INTERPRETER_ARCH, Target
from spokeshave.compiler.weights import WeightStore

from ..schedule import GroupPlan, kernel_infos, plan_module, plan_runner
from .gemm import HEADER, kernel_source
from .launch import LaunchTuner
from .lowering import TritonCodegen
from .rows import HELPERS

CACHE_ENV = "SPOKESHAVE_TRITON_CACHE"


class TritonBackendWarning(UserWarning):
    """A Triton kernel could not run, so its op runs on the reference path."""


def interpreting() -> bool:
    """Whether Triton runs kernels with its interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def default_target() -> Target:
    """This machine's GPU, or the Triton interpreter on the CPU under `TRITON_INTERPRET=1`;
    without either, one error naming the backends that do fit this machine."""
    if torch.cuda.is_available():
        return Target.cuda()
    if interpreting():
        return Target(device="cuda", arch=INTERPRETER_ARCH,
                      name="Triton interpreter on the CPU (TRITON_INTERPRET=1)")
    from spokeshave.compiler.backend import BACKENDS

    host = Target.host()
    fits = [b.name for b in BACKENDS.values() if b.misfit(host) is None]
    raise SpokeshaveError(f"backend 'triton' needs an NVIDIA GPU and none is visible; set "
                          f"TRITON_INTERPRET=1 to run its kernels on the CPU (exact, slow), or use "
                          f"a backend that fits this machine: {', '.join(fits)}")


def module_source(ops: Sequence[str]) -> str:
    """A kernel file of the plain GEMMs (no epilogue) of linear ops `ops`."""
    return HEADER + HELPERS + "".join(kernel_source(op) for op in sorted(set(ops)))


def plans_source(plans: Mapping[Op, GroupPlan]) -> str:
    """The kernel file of a module's plans: every generated step's function, once."""
    seen: dict[str, str] = {}
    for plan in plans.values():
        for step in plan.steps:
            if step.symbol is not None:
                seen.setdefault(step.symbol, step.source)
    return HEADER + HELPERS + "".join(seen.values()) if seen else ""


def _cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "spokeshave", "triton")


def load_kernels(source: str) -> Any:
    """Import `source` from the kernel cache (written atomically on a miss)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    path = os.path.join(_cache_dir(), f"spk_{digest}.py")
    if not os.path.isfile(path):
        os.makedirs(_cache_dir(), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".spk-", suffix=".py", dir=_cache_dir())
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"spokeshave_triton_{digest}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TritonExecutable:
    """An `Executable`: the interpreter with every planned group swapped for its kernels."""

    def __init__(self, module: Module, weights: WeightStore, target: Target):
        self.module, self.target = module, target
        self.device = torch.device("cpu" if target.arch == INTERPRETER_ARCH else "cuda")
        if self.device.type != "cpu":
            weights = WeightStore({n: t.to(self.device) for n, t in weights.items()})
        self.tuner = LaunchTuner(target)
        self.plans = plan_module(module, weights, TritonCodegen(self.tuner))
        self._source = plans_source(self.plans)
        self.failed: dict[str, str] = {}      # group name -> reason
        if self._source:
            kernels = load_kernels(self._source)
            self.tuner.load(kernels.__file__ + ".launch.json")
            for plan in self.plans.values():
                plan.unit = "kernels.py" if self._generated(plan) else None
                for step in plan.steps:
                    if step.symbol is not None:
                        step.bind(getattr(kernels, step.symbol))
        self.extern_ops = Counter(op.name for op in module.entry.body.ops[:-1]
                                  if op not in self.plans or not self._generated(self.plans[op]))
        self._interpreter = Interpreter(module, weights, select=self._select)

    @staticmethod
    def _generated(plan: GroupPlan) -> bool:
        return any(s.symbol is not None for s in plan.steps)

    def _select(self, op: Op):
        plan = self.plans.get(op)
        if plan is None or not self._generated(plan):
            return None

        def attempt(args: list[Any]) -> list[Any] | None:
            if plan.name in self.failed:
                return None
            try:
                return plan.run(args)
            except InvalidInputError:  # the call's fault, not the kernel's: no fallback
                raise
            except Exception as e:  # noqa: BLE001 - a compile/launch failure: the group falls back
                first = str(e).splitlines()[0] if str(e) else ""
                self.failed[plan.name] = f"{type(e).__name__}: {first}"
                warnings.warn(f"spokeshave triton: a kernel of {plan.name} failed "
                              f"({self.failed[plan.name]}); the group runs on the reference "
                              f"path", TritonBackendWarning, stacklevel=3)
                return None
        return plan_runner(plan, len(op.results) == 1, attempt)

    def __call__(self, *inputs: Any) -> list[Any]:
        return self._interpreter(*inputs)

    @property
    def sources(self) -> Mapping[str, str]:
        out = {"module.mlir": print_module(self.module)}
        if self._source:
            out["kernels.py"] = self._source
        return out

    @property
    def kernels(self) -> Sequence[KernelInfo]:
        return kernel_infos(self.plans, self.extern_ops)


def build(module: Module, weights: WeightStore, target: Target) -> TritonExecutable:
    return TritonExecutable(module, weights, target)


def generate(module: Module, weights: WeightStore, target: Target) -> dict[str, str]:
    """What `build` would load: the kernel file (`spokeshave-opt --emit=triton`)."""
    source = plans_source(plan_module(module, weights, TritonCodegen(LaunchTuner(target))))
    return {"kernels.py": source} if source else {}
