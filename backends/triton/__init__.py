"""The Triton backend (NVIDIA GPUs; any machine under `TRITON_INTERPRET=1`).

Every fused group and fusable op is scheduled by `backends.schedule` (as on the CPU) and
written as Triton kernels (`lowering.py`): row kernels for pointwise ops and last-dim
reductions (`rows.py`), GEMMs for every compressed linear (and dense linears with an
epilogue) that decode their stored weight tile by tile in registers before a dense `tl.dot`
and apply the group's epilogue before the store (`gemm.py`), the w8a8 activation
quantization fused into the producing row kernel. Launch configurations are ranked by the
cost model and timed on a GPU (`launch.py`); the rest runs through the interpreter's ATen
path on the same device (`runtime.py`).
"""
from __future__ import annotations

from spokeshave.compiler.backend import Backend

from .runtime import build, default_target, generate

BACKEND = Backend(
    "triton", device="cuda", build=build, default_pipeline="canonicalize,cse,dce",
    provides=frozenset({"any-aten-op", "dynamic-shapes", "generated-triton", "compressed-gemm"}),
    doc=__doc__, generate=generate, language="triton", default_target=default_target)
