"""spokeshave: a graph compiler for PyTorch models. This package is the front door.

    import spokeshave
    cm = spokeshave.compile(model, (x,), pipeline="canonicalize,cse,dce")
    y = cm(x); print(cm.module)

It is the only place that wires the layers together: the core (`spokeshave.compiler`), the
passes (`spokeshave.passes`), the backends (`spokeshave.backends`) and the cost models
(`spokeshave.costmodel`). `load_builtin()` fills the registries (op records, passes,
backends) with what ships with the package; importing `spokeshave` calls it once.
"""
from .compiler.backend import BACKENDS
from .compiler.dialect import OPS
from .compiler.passmanager import PASSES


def load_builtin() -> None:
    """Register the built-in op records, passes and backends (idempotent)."""
    from .backends import load_builtin as load_backends
    from .compiler.dialect import load_builtin as load_ops
    from .passes import load_builtin as load_passes

    load_ops(OPS)
    load_passes(PASSES)
    load_backends(BACKENDS)


load_builtin()

from .api import CompiledModel, compile, compile_module, import_model, parse  # noqa: E402
from .artifact import load, save  # noqa: E402
from .compiler.errors import (ExportError, ParseError, PipelineError, SpokeshaveError,  # noqa: E402
                              UnsupportedError, VerifyError)
from .compiler.ir import Module  # noqa: E402
from .compiler.passmanager import parse_pipeline  # noqa: E402
from .compiler.target import Target  # noqa: E402
from .compiler.verifier import verify  # noqa: E402

__all__ = ["compile", "compile_module", "import_model", "parse", "save", "load", "CompiledModel", "Module",
           "Target", "verify", "parse_pipeline", "load_builtin", "OPS", "PASSES", "BACKENDS",
           "SpokeshaveError", "ParseError", "VerifyError", "PipelineError", "ExportError",
           "UnsupportedError"]
