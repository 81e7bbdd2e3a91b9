"""Timing and reporting shared by the speed benchmarks (`speed_cpu.py`, `speed_gpu.py`).

`interleaved` runs rep r of every row before rep r + 1 of any (the row order rotating), so
a slow drift of a shared machine lands on every row alike; `summarize` gives the median and
the spread (p90 - p10) / median of the reps; `write_section` keeps one benchmark's table in
its marked section of `BENCHMARKS.md`.
"""
from __future__ import annotations

import gc
import math
import os
import sys
import time
from collections.abc import Callable


def interleaved(steps: dict, reps: int, min_rep_s: float, errors: dict,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Row -> per-rep seconds per call; rep r of every row before rep r + 1 of any. `sync`
    waits for the work the calls queued (a GPU's stream) before a clock is read."""
    ks = {}
    for name, f in list(steps.items()):
        try:
            f()  # a first call at a new shape may compile: not part of the estimate
            sync()
            n, t0 = 0, time.perf_counter()
            while n < 2 or (time.perf_counter() - t0 < min_rep_s and n < 100):
                f()
                sync()
                n += 1
            ks[name] = max(1, math.ceil(min_rep_s / ((time.perf_counter() - t0) / n)))
        except Exception as e:  # noqa: BLE001 - a failing row must not stop the others
            errors[name] = f"run failed: {type(e).__name__}: {str(e)[:200]}"
            del steps[name]
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps if names else 0):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            if name not in steps:
                continue
            f, k = steps[name], ks[name]
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(k):
                    f()
                sync()
                times[name].append((time.perf_counter() - t0) / k)
            except Exception as e:  # noqa: BLE001
                errors[name] = f"run failed: {type(e).__name__}: {str(e)[:200]}"
                del steps[name]
            finally:
                gc.enable()
    return {n: t for n, t in times.items() if n in steps and t}


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(ts: list[float]) -> dict:
    med = percentile(ts, 0.5)
    return {"median_ms": med * 1e3, "spread": (percentile(ts, 0.9) - percentile(ts, 0.1)) / med,
            "min_ms": min(ts) * 1e3, "max_ms": max(ts) * 1e3, "reps": len(ts)}


def write_section(path: str, text: str, section: str, begin: str, end: str) -> None:
    """Put `text` between the markers `begin` and `end` of `path`, or append it under the
    heading `section` with the markers when they are not there yet."""
    old = "# Benchmarks\n"
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    i, j = old.find(begin), old.find(end)
    if i >= 0 and j > i:
        new = old[:i + len(begin)] + "\n" + text + old[j:]
    else:
        new = old.rstrip("\n") + f"\n\n{section}\n\n{begin}\n{text}{end}\n"
    with open(path, "w") as f:
        f.write(new)


def log(msg: str) -> None:
    """Progress on stderr, so stdout carries the tables only."""
    print(msg, file=sys.stderr, flush=True)
