"""What a backend is, and what it gives back: the registry record and the `Executable`.

A backend registers, per device, the features it provides and the target features it
needs (as Inductor's backends declare theirs), its default pipeline, and a builder
`(module, weights, target) -> Executable`. `compile()` checks the target against the
backend's needs and says why a backend does not fit. An `Executable` runs the compiled
function and exposes what the backend generated (source files, kernels), so tests can
FileCheck generated source as Inductor's do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from .errors import SpokeshaveError
from .ir import Module
from .registry import Registry
from .target import Target
from .weights import WeightStore


@dataclass(frozen=True)
class KernelInfo:
    """One kernel an executable runs: its name, the ops it covers, and the file in
    `Executable.sources` that holds its code (None for a library call)."""

    name: str
    ops: tuple[str, ...]
    source: str | None = None


@runtime_checkable
class Executable(Protocol):
    """A compiled function: called with the user inputs (flat, in argument order), returns
    the outputs as a list."""

    @property
    def sources(self) -> Mapping[str, str]:
        """Generated source files: name -> text."""
        ...

    @property
    def kernels(self) -> Sequence[KernelInfo]:
        ...

    def __call__(self, *inputs: Any) -> list[Any]: ...


Build = Callable[[Module, WeightStore, Target], Executable]
# What a code-generating backend would build, without building it: file name -> source
Generate = Callable[[Module, WeightStore, Target], Mapping[str, str]]


@dataclass(frozen=True)
class Backend:
    """A registered backend. `requires` are target features it cannot run without."""

    name: str
    device: str
    build: Build
    default_pipeline: str
    provides: frozenset[str] = frozenset()
    requires: frozenset[str] = frozenset()
    doc: str = field(default="", compare=False)
    generate: Generate | None = field(default=None, compare=False)  # `spokeshave-opt --emit`
    language: str | None = None   # what `generate` writes ("cpp", "triton"): the --emit name
    # The target a compile gets when it names none (default: the host, or the first GPU for
    # a cuda backend); a backend that can also run elsewhere (Triton's interpreter) says so.
    default_target: Callable[[], Target] | None = field(default=None, compare=False)

    def misfit(self, target: Target) -> str | None:
        """Why this backend cannot run on `target`, or None when it can."""
        if target.device != self.device:
            return (f"backend '{self.name}' runs on {self.device} but the target is "
                    f"{target.describe()}")
        missing = target.missing(self.requires)
        if missing:
            return (f"backend '{self.name}' needs {', '.join(sorted(missing))}, which the target "
                    f"({target.describe()}) lacks")
        return None

    def check(self, target: Target) -> None:
        reason = self.misfit(target)
        if reason is not None:
            raise SpokeshaveError(reason)


BACKENDS: Registry[Backend] = Registry("backend")


def register_backend(backend: Backend, registry: Registry[Backend] | None = None) -> Backend:
    return (BACKENDS if registry is None else registry).register(backend.name, backend)
