"""The reference backend: the core interpreter, registered as a backend.

It runs any ATen op through `torch.ops` and every `spk` op through its record's reference
semantics (`compiler.interpreter`), so it is the oracle of every differential test. What
it "generates" is the IR it interprets: `sources` holds that text and `kernels` one entry
per op kind it runs, so tests can check both like any backend's output.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from spokeshave.compiler.backend import Backend, KernelInfo
from spokeshave.compiler.interpreter import Interpreter
from spokeshave.compiler.ir import Module
from spokeshave.compiler.printer import print_module
from spokeshave.compiler.target import Target
from spokeshave.compiler.weights import WeightStore


class ReferenceExecutable:
    """`Interpreter` plus what it runs, as an `Executable`."""

    def __init__(self, module: Module, weights: WeightStore):
        self._interpreter = Interpreter(module, weights)
        self._module = module

    def __call__(self, *inputs: Any) -> list[Any]:
        return self._interpreter(*inputs)

    @property
    def sources(self) -> Mapping[str, str]:
        return {"module.mlir": print_module(self._module)}

    @property
    def kernels(self) -> Sequence[KernelInfo]:
        counts = Counter(op.name for op in self._module.entry.walk() if op.name != "func.return")
        return [KernelInfo(f"interpret {name}", (name,)) for name in sorted(counts)]


def build(module: Module, weights: WeightStore, target: Target) -> ReferenceExecutable:
    return ReferenceExecutable(module, weights)


BACKEND = Backend("reference", device="cpu", build=build, default_pipeline="canonicalize,cse,dce",
                  provides=frozenset({"any-aten-op", "dynamic-shapes", "exact-quant-emulation"}),
                  doc=__doc__)
