"""The backends: each turns a compiled IR module and its weights into an `Executable`.

`load_builtin(registry)` registers the backends that ship with spokeshave; the front door
calls it. Backends import the core (`spokeshave.compiler`) and the cost models, never the
passes. `reference` interprets the IR (the oracle of every differential test); `cpu`
generates C++ per fused group; `triton` generates Triton kernels for NVIDIA GPUs (and runs
them on the CPU under `TRITON_INTERPRET=1`).
"""
if __name__ != "spokeshave.backends":  # its folder is on sys.path: refuse a second copy
    raise ImportError(f"import spokeshave.backends, not {__name__}: one package, one name")

from spokeshave.compiler.backend import BACKENDS, Backend, register_backend
from spokeshave.compiler.registry import Registry


def load_builtin(registry: Registry[Backend] = BACKENDS) -> None:
    """Register the built-in backends (idempotent)."""
    from . import reference
    from .cpu import BACKEND as CPU
    from .triton import BACKEND as TRITON

    register_backend(reference.BACKEND, registry)
    register_backend(CPU, registry)
    register_backend(TRITON, registry)
