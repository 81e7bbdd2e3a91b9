"""The Triton backend (NVIDIA GPUs; any machine under `TRITON_INTERPRET=1`).

This first slice generates the compressed-linear GEMMs (`gemm.py`: w8, w8a8, fp8, w4g and
2:4, each decoding its stored weight tile by tile in registers before a dense `tl.dot`)
and runs every other op through the interpreter's ATen path on the same device
(`runtime.py`). Fused groups (`spk.fused`) as single Triton kernels, cost-model-ranked
launch configurations and bf16/fp16 activations come next.
"""
from __future__ import annotations

from spokeshave.compiler.backend import Backend

from .runtime import build, default_target, generate

BACKEND = Backend(
    "triton", device="cuda", build=build, default_pipeline="canonicalize,cse,dce",
    provides=frozenset({"any-aten-op", "dynamic-shapes", "generated-triton", "compressed-gemm"}),
    doc=__doc__, generate=generate, language="triton", default_target=default_target)
