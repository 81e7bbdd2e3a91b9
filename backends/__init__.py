"""Backends turn a compiled IR module + weight store into something callable.

Each backend registers itself per device with the features it supports (as Inductor does),
so the compile entry point can pick one and say clearly why another does not fit.
Backends read `compiler.ir` and never import `passes`.
"""
from __future__ import annotations
if __name__ != "spokeshave.backends":  # its folder is on sys.path: refuse a second copy
    raise ImportError(f"import spokeshave.backends, not {__name__}: one package, one name")


from dataclasses import dataclass
from typing import Any, Callable, Protocol

from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.ir import Module
from spokeshave.compiler.weights import WeightStore


class Executable(Protocol):
    """A compiled function: takes the user inputs (flat, in argument order), returns outputs."""

    def __call__(self, *inputs: Any) -> list[Any]: ...


@dataclass(frozen=True)
class BackendInfo:
    name: str
    device: str
    features: frozenset[str]
    build: Callable[[Module, WeightStore], Executable]


_BACKENDS: dict[str, BackendInfo] = {}


def register_backend(name: str, device: str, features: set[str]):
    """Class or function decorator: `build(module, weights) -> Executable` under `name`."""
    def deco(build):
        _BACKENDS[name] = BackendInfo(name, device, frozenset(features), build)
        return build
    return deco


def get_backend(name: str) -> BackendInfo:
    _load_builtin()
    try:
        return _BACKENDS[name]
    except KeyError:
        raise SpokeshaveError(f"unknown backend '{name}'; known backends: "
                              f"{', '.join(sorted(_BACKENDS))}") from None


def available_backends() -> dict[str, BackendInfo]:
    _load_builtin()
    return dict(_BACKENDS)


def _load_builtin() -> None:
    from . import reference  # noqa: F401  (registers itself)
