"""SmolLM2-135M's single-token forward on the CPU backend, called from different Python stack
depths: latency and minor page faults per call, per pipeline, side by side in one process.

    python benchmarks/caller_depth.py [--depths 0:64:3] [--calls 10]
                                      [--pipelines "A;B"]

Why: CPython 3.11+ keeps frames in 16 KiB stack chunks and unmaps a chunk when the frame
that opened it returns, so a block function whose frame ends near a chunk's edge made every
op map and unmap one: the same compiled model slowed by ~40% depending only on how deep the
caller's stack was (`compiler/interpreter.py`, `_CHUNK_SLOTS`). This prints, per pipeline and
depth, the median of `--calls` calls (ms) and the minor faults per call (`getrusage`), with
the depths interleaved across the pipelines. Default pipelines: RTN w4g group 64, with and
without `gqa-attention`. Eager fp32 is timed at depth 0 in every round, for the ratio.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # noqa: E402

import spokeshave  # noqa: E402
import torch  # noqa: E402

W4G = "quantize{scheme=w4g group=64},canonicalize,cse,dce"
PIPELINES = f"{W4G},fuse;{W4G},gqa-attention,fuse"


def _nested(depth: int, f):
    return f() if depth == 0 else _nested(depth - 1, f)


def _measure(f, depth: int, calls: int) -> tuple[float, float]:
    for _ in range(2):
        _nested(depth, f)
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        t = time.perf_counter()
        _nested(depth, f)
        times.append(time.perf_counter() - t)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
    return statistics.median(times) * 1e3, faults


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="0:64:3", help="start:stop:step of extra Python frames")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--pipelines", default=PIPELINES, help="';'-separated pipeline texts")
    args = ap.parse_args(argv)
    _peers.setup_torch(_peers.usable_cores())
    bundle = _peers.load_bundle("smollm2", ["smollm_token"], with_reference=False)
    x = bundle.workloads["smollm_token"].inputs
    imported = spokeshave.import_model(bundle.module, bundle.example,
                                       dynamic_shapes=bundle.dynamic_shapes)
    pipelines = args.pipelines.split(";")
    built = [spokeshave.compile_module(imported, pipeline=p, backend="cpu") for p in pipelines]
    start, stop, step = (int(v) for v in args.depths.split(":"))
    rows = {p: [] for p in pipelines}
    eager_ms = []
    for depth in range(start, stop, step):
        with torch.no_grad():  # eager once per round too, so a drifting machine hits it alike
            eager_ms.append(_measure(lambda: bundle.module(*x), 0, args.calls)[0])
        for p, cm in zip(pipelines, built):
            rows[p].append((depth, *_measure(lambda: cm(*x), depth, args.calls)))
    eager = statistics.median(eager_ms)
    print(f"eager fp32 at depth 0: median {eager:.1f} ms over {len(eager_ms)} rounds "
          f"({min(eager_ms):.1f}-{max(eager_ms):.1f})")
    for p in pipelines:
        ms = [r[1] for r in rows[p]]
        print(f"\n{p}\n  ms {min(ms):.1f}-{max(ms):.1f} ({min(ms) / eager:.2f}x-"
              f"{max(ms) / eager:.2f}x eager), faults a call "
              f"{min(r[2] for r in rows[p]):.1f}-{max(r[2] for r in rows[p]):.1f}")
        print("  " + "  ".join(f"{d}:{m:.1f}ms/{f:.0f}" for d, m, f in rows[p]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
