"""The CPU backend: generated C++ per fused group, compiled once with the system compiler.

`toolchain` finds the compiler, compiles translation units in parallel into one shared
object per model and caches them on disk; `gemm` generates the compressed-linear kernels
(int8, int4, fp8, 2:4, the outlier splits) for the ISA of the `Target`; `rows` writes the
row-wise loop nests of pointwise ops and reductions; `lowering` turns a fused group's region
into steps; `runtime` runs the compiled function.
"""
from __future__ import annotations

from spokeshave.compiler.backend import Backend

from .runtime import build, generate

BACKEND = Backend(
    "cpu", device="cpu", build=build, default_pipeline="canonicalize,cse,dce,gqa-attention,fuse",
    provides=frozenset({"any-aten-op", "dynamic-shapes", "fusion", "generated-cpp"}),
    doc=__doc__, generate=generate, language="cpp")
