"""GPU speed of the Triton backend next to cuBLAS, torch's 2:4 kernels, inductor and torchao.

    python benchmarks/speed_gpu.py [--parts gemm,models] [--reps 7] [--no-write] [--out BENCHMARKS.md]
    python benchmarks/speed_gpu.py --smoke      # no GPU: tiny shapes under TRITON_INTERPRET=1

One prepared script for a session that has a GPU (its figures go into `BENCHMARKS.md` with
the device's name and the date); `--smoke` runs every code path of it on the CPU under the
Triton interpreter at tiny shapes, writes nothing, and is what the test suite runs.

GEMM part. `y = x @ W^T` at batch (rows of x) 1, 16 and 128 on (N, K) = 4096 x 4096,
14336 x 4096 (an up projection) and 4096 x 14336 (a down projection), fp16 activations.
Rows: fp16 `torch.matmul` (cuBLAS, the baseline of every ratio); spokeshave's kernels for
`w4g` (group 128), `w8`, `w8a8`, `fp8` and 2:4 (`sparsify{method=magnitude}`), each one
linear compiled with `compile_module(..., backend="triton")` and called as users call it;
and torch's semi-structured 2:4 (`to_sparse_semi_structured`, cuSPARSELt/CUTLASS) on the
same pruned weight, where the device and the shape allow it. Two errors, each relative to
the largest output: against fp16 cuBLAS (what the compression costs), and, at batch <= 16,
against the reference backend's emulation of the same compressed linear on the host (what
the kernel itself costs: a GPU-only bug, in split-K or a 16-bit dot, shows there).

Models part. all-MiniLM-L6-v2 at batch 8 x 128 and SmolLM2-135M prefill 1 x 256 and one
token (1 x 1, no KV cache), in bf16: eager, inductor (`torch.compile`), torchao int4 and
int8 weight-only (+ inductor), and spokeshave `fuse`, `w4g` and `w8a8` on the Triton backend.

Method. Every row is a CUDA graph of one call, captured after a warm-up (the launch tuner
times its candidates then, outside the graph), so the figures are GPU time without Python's
launch overhead, for every row alike (a row that cannot be captured is timed as plain calls,
and says so). Replays are timed interleaved (`_timing.interleaved`: rep r of every row
before rep r + 1 of any, `torch.cuda.synchronize` before each clock read); `us` is the
median rep, `spread` (p90 - p10) / median. Ratios are baseline time / row time (> 1 faster).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from typing import Any

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # noqa: E402  (sets the environment, imports torch)
import torch  # noqa: E402
from _timing import interleaved, log, summarize, write_section  # noqa: E402

import spokeshave  # noqa: E402

BEGIN, END = "<!-- speed_gpu:begin -->", "<!-- speed_gpu:end -->"
SECTION = "## GPU speed (benchmarks/speed_gpu.py)"

SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]        # (N, K)
BATCHES = [1, 16, 128]
SMOKE_SHAPES, SMOKE_BATCHES = [(96, 64)], [1, 5]
GEMM_PIPELINES = {
    "w4g": "quantize{scheme=w4g group=%d}",
    "w8": "quantize{scheme=w8}",
    "w8a8": "quantize{scheme=w8a8}",
    "fp8": "quantize{scheme=fp8}",
    "2:4": "sparsify{method=magnitude}",
}
MODEL_PIPELINES = {
    "spokeshave fuse": "fuse",
    "spokeshave w4g": "quantize{scheme=w4g group=64 skip=*lm_head},fuse",
    "spokeshave w8a8": "quantize{scheme=w8a8 skip=*lm_head},fuse",
}
TORCHAO_ROWS = {"torchao int4 wo": "Int4WeightOnlyConfig", "torchao int8 wo": "Int8WeightOnlyConfig"}


def device() -> torch.device:
    return torch.device("cpu" if SMOKE else "cuda")


def sync() -> None:
    if not SMOKE:
        torch.cuda.synchronize()


def graphed(fn: Callable[[], Any]) -> tuple[Callable[[], Any], str]:
    """`fn` as a CUDA graph replay (warmed up first: compiles and launch tuning happen
    outside the graph), or `fn` itself where it cannot be captured."""
    fn()
    if SMOKE:
        return fn, ""
    sync()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as e:  # noqa: BLE001 - the row is still timed, as plain calls
        return fn, f"not graphed ({type(e).__name__})"
    return graph.replay, ""


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-12))


# ------------------------------------------------------------------ GEMMs


def gemm_rows(n: int, k: int, batches: list[int], dtype: torch.dtype) -> dict[str, dict]:
    """Row name -> {batch -> (step, quality, note)} for one (N, K)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False).to(dtype)
    with torch.no_grad():
        lin.weight.normal_(0, 0.02)
    dev = device()
    imported = spokeshave.import_model(lin, (torch.randn(2, k, dtype=dtype),),
                                       dynamic_shapes=({0: torch.export.Dim("m", max=4096)},))
    w = lin.weight.detach().to(dev)
    xs = {m: torch.randn(m, k, dtype=dtype, device=dev) for m in batches}
    ref = {m: xs[m] @ w.t() for m in batches}
    rows: dict[str, dict] = {"fp16 cuBLAS": {m: (lambda m=m: xs[m] @ w.t(), 0.0, None, "") for m in batches}}
    group = 128 if k % 128 == 0 else 32
    for name, pipeline in GEMM_PIPELINES.items():
        text = pipeline % group if "%d" in pipeline else pipeline
        try:
            cm = spokeshave.compile_module(imported, pipeline=text, backend="triton")
            emulated = spokeshave.compile_module(imported, pipeline=text, backend="reference")
        except Exception as e:  # noqa: BLE001 - a row that cannot build is reported, not fatal
            rows[f"spokeshave {name}"] = {m: (None, None, None, f"n/a ({type(e).__name__}: {e})")
                                          for m in batches}
            continue
        per = {}
        for m in batches:
            y = cm(xs[m])
            # the kernel against the reference backend's emulation of the same compressed
            # linear (on the host, so the small batches only): a GPU-only bug shows here
            vs_ref = rel_err(y.cpu(), emulated(xs[m].cpu())) if m <= 16 else None
            per[m] = (lambda m=m, cm=cm: cm(xs[m]), rel_err(y, ref[m]), vs_ref, "")
        rows[f"spokeshave {name}"] = per
        if name == "2:4":
            rows["torch 2:4 semi-structured"] = semi_structured(emulated, k, xs, ref)
    return rows


def semi_structured(pruned, k: int, xs: dict, ref: dict) -> dict:
    """torch's 2:4 kernels on the same pruned weight (read back from the reference
    backend's emulation of the compressed linear), per batch; n/a where the device or the
    shape does not allow them."""
    out = {}
    try:
        from torch.sparse import to_sparse_semi_structured
        x = next(iter(xs.values()))
        dense = pruned(torch.eye(k, dtype=x.dtype)).t().contiguous()   # [N, K]
        ws = to_sparse_semi_structured(dense.to(device()))
    except Exception as e:  # noqa: BLE001
        return {m: (None, None, None, f"n/a ({type(e).__name__}: {str(e)[:80]})") for m in xs}
    for m, x in xs.items():
        try:
            y = torch.nn.functional.linear(x, ws)
            out[m] = (lambda x=x: torch.nn.functional.linear(x, ws), rel_err(y, ref[m]), None, "")
        except Exception as e:  # noqa: BLE001 - e.g. a batch below the kernel's minimum
            out[m] = (None, None, None, f"n/a ({type(e).__name__}: {str(e)[:80]})")
    return out


def run_gemms(args) -> list[str]:
    shapes, batches = (SMOKE_SHAPES, SMOKE_BATCHES) if SMOKE else (SHAPES, BATCHES)
    dtype = torch.float32 if SMOKE else torch.float16  # the interpreter's numpy has no fast f16 dot
    lines = ["| N x K | batch | row | us | spread | vs fp16 cuBLAS | err vs fp16 | kernel err vs reference | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, k in shapes:
        log(f"gemm {n} x {k}: building")
        rows = gemm_rows(n, k, batches, dtype)
        for m in batches:
            steps, notes, errors = {}, {}, {}
            for name, per in rows.items():
                fn, _, _, note = per[m]
                if fn is not None:
                    steps[name], notes[name] = graphed(fn)
                    notes[name] = notes[name] or note
                else:
                    errors[name] = note
            times = interleaved(steps, args.reps, args.min_rep_s, errors, sync)
            base = summarize(times["fp16 cuBLAS"])["median_ms"] if "fp16 cuBLAS" in times else None
            for name, per in rows.items():
                q, vs_ref = (("" if v is None else f"{v:.1e}") for v in per[m][1:3])
                if name in times:
                    s = summarize(times[name])
                    ratio = f"{base / s['median_ms']:.2f}x" if base else ""
                    lines.append(f"| {n} x {k} | {m} | {name} | {s['median_ms'] * 1e3:.1f} | "
                                 f"{s['spread']:.0%} | {ratio} | {q} | {vs_ref} | {notes.get(name, '')} |")
                else:
                    lines.append(f"| {n} x {k} | {m} | {name} | | | | | | {errors.get(name, '')} |")
            log("\n".join(lines[-len(rows):]))
    return lines


# ------------------------------------------------------------------ models


def model_bundles() -> list[tuple[str, torch.nn.Module, tuple, tuple, dict]]:
    """(name, module, export example, dynamic shapes, workload -> inputs) per model."""
    if SMOKE:  # a 2-layer random-weight Llama: the same code path at interpreter speed
        import spokeshave_models as models
        module, example = models.tiny_llama()
        b, s = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("seq", min=1, max=64)
        return [("tiny llama", module, example, ({0: b, 1: s},), {"1 x 8": (example[0][:1, :8],)})]
    minilm = _peers.load_bundle("minilm", ["minilm8x128"], with_reference=False)
    smollm = _peers.load_bundle("smollm2", ["smollm_prefill", "smollm_token"], with_reference=False)
    return [(b.name, b.module, b.example, b.dynamic_shapes,
             {w.label: w.inputs for w in b.workloads.values()}) for b in (minilm, smollm)]


def model_rows(module: torch.nn.Module, example: tuple, dynamic: tuple) -> dict[str, Any]:
    """Row name -> a callable on the device's inputs, or a reason it is n/a."""
    import copy
    dtype = torch.float32 if SMOKE else torch.bfloat16
    host = copy.deepcopy(module).to(dtype).eval()
    gpu = copy.deepcopy(host).to(device())
    rows: dict[str, Any] = {"eager": gpu}
    try:
        rows["inductor"] = torch.compile(gpu, dynamic=False)
    except Exception as e:  # noqa: BLE001
        rows["inductor"] = f"n/a ({type(e).__name__})"
    for row, config in TORCHAO_ROWS.items():
        reason = _peers.peer_unavailable("ao_int8_wo") or ("needs a GPU" if SMOKE else None)
        if reason:
            rows[row] = f"n/a ({reason})"
            continue
        try:
            import torchao.quantization as q
            m = copy.deepcopy(gpu)
            q.quantize_(m, getattr(q, config)())
            rows[row] = torch.compile(m, dynamic=False)
        except Exception as e:  # noqa: BLE001
            rows[row] = f"n/a ({type(e).__name__}: {str(e)[:80]})"
    imported = spokeshave.import_model(host, example, dynamic_shapes=dynamic)
    for row, pipeline in MODEL_PIPELINES.items():
        try:
            rows[row] = spokeshave.compile_module(imported, pipeline=pipeline, backend="triton")
        except Exception as e:  # noqa: BLE001
            rows[row] = f"n/a ({type(e).__name__}: {str(e)[:80]})"
    return rows


def run_models(args) -> list[str]:
    lines = ["| model | workload | row | ms | spread | vs eager | vs inductor | max rel err vs eager | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, module, example, dynamic, workloads in model_bundles():
        log(f"{name}: building rows")
        rows = model_rows(module, example, dynamic)
        for label, inputs in workloads.items():
            inputs = tuple(t.to(device()) for t in inputs)
            first = lambda o: o[0] if isinstance(o, (tuple, list)) else getattr(o, "logits", o)  # noqa: E731
            want = first(rows["eager"](*inputs))
            steps, notes, errors, quality = {}, {}, {}, {}
            for row, f in rows.items():
                if isinstance(f, str):
                    errors[row] = f
                    continue
                try:
                    quality[row] = rel_err(first(f(*inputs)), want)
                    steps[row], notes[row] = graphed(lambda f=f: f(*inputs))
                except Exception as e:  # noqa: BLE001
                    errors[row] = f"run failed: {type(e).__name__}: {str(e)[:80]}"
            times = interleaved(steps, args.reps, args.min_rep_s, errors, sync)
            ref = {r: summarize(times[r])["median_ms"] for r in ("eager", "inductor") if r in times}
            for row in rows:
                if row not in times:
                    lines.append(f"| {name} | {label} | {row} | | | | | | {errors.get(row, '')} |")
                    continue
                s = summarize(times[row])
                vs = [f"{ref[r] / s['median_ms']:.2f}x" if r in ref else "" for r in ("eager", "inductor")]
                lines.append(f"| {name} | {label} | {row} | {s['median_ms']:.3f} | {s['spread']:.0%} | "
                             f"{vs[0]} | {vs[1]} | {quality[row]:.1e} | {notes.get(row, '')} |")
            log("\n".join(lines[-len(rows):]))
    return lines


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="no GPU: tiny shapes under TRITON_INTERPRET=1; nothing is written")
    p.add_argument("--parts", default="gemm,models", help="comma-separated: gemm, models")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--min-rep-s", type=float, default=0.05, help="seconds per timed repetition")
    p.add_argument("--no-write", action="store_true", help="print the tables only")
    p.add_argument("--out", default=os.path.join(_peers.ROOT, "BENCHMARKS.md"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.reps, args.min_rep_s, args.no_write = min(args.reps, 2), 0.0, True
    elif not torch.cuda.is_available():
        log("speed_gpu: no CUDA GPU is visible; run it where one is, or use --smoke to check it "
            "on the CPU under the Triton interpreter")
        return 2
    torch.set_grad_enabled(False)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"gemm", "models"})
    if unknown:
        log(f"speed_gpu: unknown part(s) {', '.join(unknown)}; the parts are gemm, models")
        return 2
    t0 = time.perf_counter()
    name = "Triton interpreter (smoke)" if SMOKE else torch.cuda.get_device_name()
    text = [f"Device: **{name}**, {datetime.date.today().isoformat()}; torch {torch.__version__}; "
            f"`python benchmarks/speed_gpu.py --parts {','.join(parts)} --reps {args.reps}`.", ""]
    if "gemm" in parts:
        text += ["### GEMMs (fp16 activations, CUDA-graph replays)", "", *run_gemms(args), ""]
    if "models" in parts:
        text += ["### Models (bf16)", "", *run_models(args), ""]
    text.append(f"Wall time {time.perf_counter() - t0:.0f} s.")
    out = "\n".join(text) + "\n"
    print(out)
    if not args.no_write:
        write_section(args.out, out, SECTION, BEGIN, END)
        log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
