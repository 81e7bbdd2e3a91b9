"""spokeshave's core: IR, text form, verifier, torch.export frontend, pass manager, API.

    import compiler
    cm = compiler.compile(model, (x,), pipeline="canonicalize,cse,dce")
    y = cm(x); print(cm.module)
"""
from .api import DEFAULT_PIPELINE, CompiledModel, compile, parse
from .errors import (ExportError, ParseError, PipelineError, SpokeshaveError, UnsupportedError,
                     VerifyError)
from .ir import Function, Module, Op, TensorType, Value
from . import report
from .passmanager import Pass, PassContext, PassManager, parse_pipeline, print_pipeline, register_pass
from .printer import print_module
from .verifier import verify
from .weights import WeightStore

__all__ = [
    "compile", "parse", "CompiledModel", "DEFAULT_PIPELINE", "Module", "Function", "Op", "Value",
    "TensorType", "Pass", "PassContext", "PassManager", "parse_pipeline", "print_pipeline",
    "register_pass", "print_module", "verify", "WeightStore", "SpokeshaveError", "ParseError",
    "VerifyError", "PipelineError", "ExportError", "UnsupportedError",
]
