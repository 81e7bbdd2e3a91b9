"""The CPU backend's compressed-linear kernels against torch's float32 `F.linear`, side by side.

    python benchmarks/gemm_cpu.py [--ops w8a8,w4g] [--shapes minilm,prefill,decode] [--reps 15]

Shapes: MiniLM (M = 1024 = 8 x 128 tokens) and SmolLM2-135M prefill (M = 256) and decode
(M = 1) at each model's (N, K). Every kernel is generated for `Target.host()`, compiled by
the backend's toolchain (`-O3 -march=native -fopenmp`, a few translation units, cached on
disk; plain g++ when the toolchain is absent) and called through ctypes with an identity
epilogue; weights come from the real quantizers. Each table cell is `time(F.linear fp32) / time(kernel)` (> 1: the kernel
is faster), medians of interleaved repetitions (torch, then every op, per repetition, so
drifting clocks and other tenants hit all alike). Threads: torch's default (all cores),
which is also what the kernels' OpenMP uses (one libgomp); `--threads 1` compares one core
each, which a busy machine disturbs far less than two gang-scheduled threads.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

import spokeshave
from spokeshave.backends.cpu import gemm as G
from spokeshave.compiler.numerics import quant, sparse
from spokeshave.compiler.target import Target

SHAPES = {
    "minilm": [(1024, 384, 384), (1024, 1536, 384), (1024, 384, 1536)],
    "prefill": [(256, 576, 576), (256, 1536, 576), (256, 576, 1536), (256, 49152, 576)],
    "decode": [(1, 576, 576), (1, 1536, 576), (1, 576, 1536), (1, 49152, 576)],
}
OPS = ("w8a8", "w8a8g", "w8", "w4g", "fp8", "sparse24", "w8a8_split", "w8_split")
GROUP = 64  # w4g / w8a8g groups (`--group`); divides every K here (576 is not a multiple of 128)
OUTLIERS = 6


def _ty(t: torch.Tensor) -> str:
    name = {torch.int8: "i8", torch.uint8: "ui8", torch.float32: "f32", torch.int64: "i64",
            torch.float8_e4m3fn: "f8E4M3FN"}[t.dtype]
    return "tensor<" + "".join(f"{d}x" for d in t.shape) + name + ">"


def build_op(kind: str, n: int, k: int, seed: int = 0, group: int = GROUP):
    """(op, weight-role tensors) for `kind` from a random float weight."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    attrs = ""
    if kind in ("w8", "w8a8", "w8a8g"):
        ws = list(quant.quantize_int8_per_channel(w))
        if kind == "w8a8g":   # activation groups of `group` columns
            attrs = f" {{group = {group}}}"
    elif kind == "fp8":
        ws = list(quant.quantize_fp8_per_channel(w))
    elif kind == "w4g":
        p = quant.int4_group_params(w, group, True)
        ws = [quant.pack_int4(quant.int4_codes(w, p)), p.scale]
        attrs = f" {{group = {group}, symmetric = true}}"
    elif kind == "sparse24":
        ws = list(sparse.compress_24(w, sparse.mask_topk_24(w.abs())))
    else:  # the splits
        idx = torch.randperm(k, generator=g)[:OUTLIERS].sort().values
        rest = w.clone()
        rest[:, idx] = 0
        ws = list(quant.quantize_int8_per_channel(rest)) + [w[:, idx].contiguous(), idx]
    name = f"spk.linear_{kind}"
    types = [f"tensor<?x{k}xf32>"] + [_ty(t) for t in ws]
    args = ", ".join([f"%x: tensor<?x{k}xf32>"] + [f"%w{i}: {t}" for i, t in enumerate(types[1:])])
    operands = ", ".join(["%x"] + [f"%w{i}" for i in range(len(ws))])
    text = (f"func.func @forward({args}) -> tensor<?x{n}xf32> {{\n"
            f"  %0 = \"{name}\"({operands}){attrs} : ({', '.join(types)}) -> tensor<?x{n}xf32>\n"
            f"  return %0 : tensor<?x{n}xf32>\n}}\n")
    op = next(o for o in spokeshave.parse(text).walk() if o.name == name)
    return op, ws


def compile_units(units: list[str]) -> ctypes.CDLL:
    """The backend's toolchain (its flags and disk cache) when present, else g++ here."""
    try:
        from spokeshave.backends.cpu.toolchain import build_library
    except ImportError:
        build_library = None
    if build_library is not None:
        lib = build_library({f"gemm_bench_{i}": u for i, u in enumerate(units)}, Target.host())
        if lib.failures:
            raise SystemExit(f"kernel compile failed: {lib.failures[0].first_error} ({lib.failures[0].log})")
        return lib.cdll
    key = hashlib.sha256("\0".join(units).encode()).hexdigest()[:16]
    tmp = Path(tempfile.gettempdir()) / f"spk_gemm_bench_{os.getuid()}"
    tmp.mkdir(exist_ok=True)
    lib = tmp / f"bench_{key}.so"
    if not lib.exists():
        def build(i: int) -> str:
            src = tmp / f"bench_{key}_{i}.cpp"
            src.write_text(units[i])
            obj = str(src.with_suffix(".o"))
            subprocess.run(["g++", "-O3", "-march=native", "-fopenmp", "-fPIC", "-std=c++17", "-c", str(src), "-o", obj],
                           check=True)
            return obj
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            objs = list(pool.map(build, range(len(units))))
        subprocess.run(["g++", "-shared", "-fopenmp", "-o", str(lib)] + objs, check=True)
    return ctypes.CDLL(str(lib))


WRAPPER = """
extern "C" void b_{i}(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w, const float* bias) {{
  {s}(x, M, ldx, y, ldy, w, bias, BenchIdentity());
}}
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--shapes", default="minilm,prefill,decode")
    ap.add_argument("--reps", type=int, default=0, help="repetitions (default: by problem size)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for torch and the kernels (they share libgomp; default: torch's)")
    ap.add_argument("--group", type=int, default=GROUP, help="w4g weight / w8a8g activation group")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)   # also the OpenMP default of this thread: the kernels' too
    ops = args.ops.split(",")
    shapes = [s for name in args.shapes.split(",") for s in SHAPES[name]]
    target = Target.host()
    print(f"target: {target.describe() if hasattr(target, 'describe') else target.key()}")
    print(f"threads: {torch.get_num_threads()}, int8 isa {G.int8_isa(target)}, weight-only isa "
          f"{G.weight_only_isa(target)}")

    t0 = time.perf_counter()
    kernels = {}   # (op, n, k) -> (GemmKernel, pointer array, index)
    sources: dict[str, str] = {}
    wrappers = []
    for kind in ops:
        for n, k in sorted({(n, k) for _, n, k in shapes}):
            op, ws = build_op(kind, n, k, group=args.group)
            kern = G.gemm_kernel(op, ws, target)
            if kern is None:
                continue
            ptrs = (ctypes.c_void_p * len(kern.packed))(*[t.data_ptr() for t in kern.packed])
            kernels[(kind, n, k)] = (kern, ptrs, len(wrappers))
            sources.setdefault(kern.symbol, kern.source)
            wrappers.append(WRAPPER.format(i=len(wrappers), s=kern.symbol))
    # a few translation units, compiled in parallel; each holds whole kernels + wrappers
    nunits = 4
    units = ["#include <stdint.h>\nstruct BenchIdentity { float operator()(float v, int64_t, int64_t) const { return v; } };\n"
             for _ in range(nunits)]
    for j, (key, (kern, _, i)) in enumerate(kernels.items()):
        units[i % nunits] += kern.source + wrappers[i]
    lib = compile_units(units)
    print(f"generate + compile: {time.perf_counter() - t0:.1f} s ({len(kernels)} kernels)\n")

    header = f"{'M':>5} {'N':>6} {'K':>5} {'fp32 us':>9} | " + " ".join(f"{o:>10}" for o in ops)
    print("speedup over torch fp32 F.linear (time ratio, > 1 = faster)")
    print(header)
    print("-" * len(header))
    for m, n, k in shapes:
        x = torch.randn(m, k)
        wf = torch.randn(n, k) * 0.05
        y = torch.empty(m, n)
        calls = {"fp32": lambda: F.linear(x, wf)}
        for kind in ops:
            if (kind, n, k) in kernels:
                kern, ptrs, i = kernels[(kind, n, k)]
                fn = getattr(lib, f"b_{i}")
                cargs = (ctypes.c_void_p(x.data_ptr()), ctypes.c_int64(m), ctypes.c_int64(k),
                         ctypes.c_void_p(y.data_ptr()), ctypes.c_int64(n), ptrs, ctypes.c_void_p(0))
                calls[kind] = (lambda fn=fn, cargs=cargs: fn(*cargs))
        flops = 2.0 * m * n * k
        reps = args.reps or int(min(60, max(7, 2e10 / max(flops, 1) / 20)))
        for fn in calls.values():   # warm up (page in, thread pool, caches)
            fn(); fn()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(reps):
            for name, fn in calls.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        med = {name: statistics.median(v) for name, v in times.items()}
        cells = " ".join(f"{med['fp32'] / med[o]:>9.2f}x" if o in med else f"{'-':>10}" for o in ops)
        print(f"{m:>5} {n:>6} {k:>5} {med['fp32'] * 1e6:>9.1f} | {cells}", flush=True)
    print(f"\ntotal: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
