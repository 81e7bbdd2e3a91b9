"""The passes: one module per pass, `passes/x_y.py` for the pass named `x-y` (its FileCheck
tests in `tests/filecheck/passes/x-y.mlir`). Helper modules start with `_`.

`load_builtin(registry)` registers every pass listed here; the front door calls it. Passes
import the core (`spokeshave.compiler`) and the cost models, never the backends.
"""
if __name__ != "spokeshave.passes":  # its folder is on sys.path: refuse a second copy
    raise ImportError(f"import spokeshave.passes, not {__name__}: one package, one name")

from spokeshave.compiler.passmanager import PASSES, Pass, register_pass
from spokeshave.compiler.registry import Registry


def builtin_passes() -> list[type[Pass]]:
    """Every pass that ships with spokeshave."""
    from . import (canonicalize, cse, dce, fold_constants, fold_norms, fuse, gqa_attention, lorc,
                   outlier_split, quantize, reorder_outliers, slice, smooth, sparsify)

    return [canonicalize.Canonicalize, cse.CSE, dce.DCE, fold_constants.FoldConstants,
            quantize.Quantize, sparsify.Sparsify, fold_norms.FoldNorms, slice.Slice,
            smooth.Smooth, reorder_outliers.ReorderOutliers, outlier_split.OutlierSplit,
            lorc.Lorc, gqa_attention.GqaAttention, fuse.Fuse]


def load_builtin(registry: Registry[type[Pass]] = PASSES) -> None:
    """Register the built-in passes and quantization formats (idempotent)."""
    from .quantize import load_builtin_formats

    for cls in builtin_passes():
        register_pass(cls, registry)
    load_builtin_formats()
