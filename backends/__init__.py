"""The backends: each turns a compiled IR module and its weights into an `Executable`.

`load_builtin(registry)` registers the backends that ship with spokeshave; the front door
calls it. Backends import the core (`spokeshave.compiler`) and the cost models, never the
passes. `reference` interprets the IR (the oracle of every differential test); `cpu`
generates C++ per fused group; `triton` (GPU) comes with a later issue.
"""
if __name__ != "spokeshave.backends":  # its folder is on sys.path: refuse a second copy
    raise ImportError(f"import spokeshave.backends, not {__name__}: one package, one name")

from spokeshave.compiler.backend import BACKENDS, Backend, register_backend
from spokeshave.compiler.registry import Registry


def load_builtin(registry: Registry[Backend] = BACKENDS) -> None:
    """Register the built-in backends (idempotent)."""
    from . import reference
    from .cpu import BACKEND as CPU

    register_backend(reference.BACKEND, registry)
    register_backend(CPU, registry)
