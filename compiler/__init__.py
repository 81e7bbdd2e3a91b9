"""spokeshave's core (imported as `spokeshave.compiler`): the IR and its text form, the
verifier, the `spk` dialect, the torch.export frontend, the pass manager, the interpreter
and calibration. It imports nothing above it (passes, backends, cost models): the front
door, `spokeshave`, wires those in.
"""
if __name__ != "spokeshave.compiler":  # its folder is on sys.path: refuse a second copy
    raise ImportError(f"import spokeshave.compiler, not {__name__}: one package, one name")

from .errors import (ExportError, ParseError, PipelineError, SpokeshaveError, UnsupportedError,
                     VerifyError)
from .ir import Function, Module, Op, TensorType, Value
from .passmanager import Pass, PassContext, PassManager, parse_pipeline, print_pipeline, register_pass
from .printer import print_module
from .verifier import verify
from .weights import WeightStore

__all__ = [
    "Module", "Function", "Op", "Value", "TensorType", "Pass", "PassContext", "PassManager",
    "parse_pipeline", "print_pipeline", "register_pass", "print_module", "verify", "WeightStore",
    "SpokeshaveError", "ParseError", "VerifyError", "PipelineError", "ExportError",
    "UnsupportedError",
]
