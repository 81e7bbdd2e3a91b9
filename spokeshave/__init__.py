"""spokeshave: a graph compiler for PyTorch models. This package is the front door.

    import spokeshave
    cm = spokeshave.compile(model, (x,), pipeline="canonicalize,cse,dce")
    y = cm(x); print(cm.module)

It is the only place that wires the layers together: the core (`spokeshave.compiler`), the
passes (`spokeshave.passes`), the backends (`spokeshave.backends`) and the cost model
(`spokeshave.costmodel`).
"""
from .api import DEFAULT_PIPELINE, CompiledModel, compile, parse
from .compiler.errors import (ExportError, ParseError, PipelineError, SpokeshaveError,
                              UnsupportedError, VerifyError)
from .compiler.ir import Module
from .compiler.verifier import verify
from .compiler.passmanager import parse_pipeline

__all__ = ["compile", "parse", "CompiledModel", "DEFAULT_PIPELINE", "Module", "verify",
           "parse_pipeline", "SpokeshaveError", "ParseError", "VerifyError", "PipelineError",
           "ExportError", "UnsupportedError"]
