"""The offline differential fuzzer: `python -m tests.fuzz --cases 10000 [--seed S] [--start N]`.

Run from the repository root (`tests` has no `__init__.py`: `tests.fuzz` is a namespace
package, which `-m` finds on the current directory). Nothing touches the network.

Two phases, both Hypothesis runs of the same `@given` test over `graphs.graphs()`:

1. explore: `--cases` examples (generation only), each checked by `check.check`; nothing
   raises, so every case is counted: passed, mismatches (by kind), skipped (by reason),
   C++ compile-cache hits, passes that needed the float64 condition check.
2. shrink: for each kind of failure (up to `--shrink`), the same seeded run again, now
   raising on the first failure of that kind; generation repeats exactly up to it (every
   earlier example behaved the same), then Hypothesis shrinks it. The minimal example is
   printed as IR ready for `spokeshave-opt` (input shapes and seed in comments) and saved
   to `--out` (`<kind>.mlir`, its weights as `<kind>.safetensors` for `--weights`, the two
   calls' inputs as `<kind>.inputs.safetensors`).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings

# the directory's modules import each other by plain name, as under pytest (rootdir-less
# `tests/fuzz` is put on sys.path there): do the same here, so there is one `graphs` module
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check import Result, check  # noqa: E402
from graphs import Case, graphs  # noqa: E402


class _Found(Exception):
    pass


def _settings(n: int, phases) -> settings:
    return settings(max_examples=n, database=None, deadline=None, derandomize=False,
                    phases=phases, suppress_health_check=list(HealthCheck),
                    verbosity=Verbosity.quiet, print_blob=False)


def explore(n: int, s: int, max_steps: int, progress: bool, show_skips: bool = False,
            start: int = 0, backend: str = "cpu") -> tuple[Counter, dict, list]:
    stats: Counter = Counter()
    first: dict[str, tuple[int, Result]] = {}   # kind -> (index, result)
    ops: Counter = Counter()
    info: dict[str, str] = {}
    t0 = time.perf_counter()

    @_settings(n, [Phase.generate])
    @seed(s)
    @given(graphs(max_steps=max_steps))
    def run(case: Case):
        i = stats["cases"]
        stats["cases"] += 1
        if i < start:  # generated (so the sequence stays the seed's) but not checked
            stats["not checked"] += 1
            return
        r = check(case, backend)
        stats[r.status] += 1
        stats["cache hits"] += r.hits
        stats["compiled"] += r.compiled
        stats["conditioned"] += r.conditioned
        stats["not bitwise"] += r.not_bitwise
        stats["replayed"] += r.replayed > 0
        for k, v in r.steps.items():
            stats["step " + k] += v
        for k, v in r.groups.items():
            stats["group " + k] += v
        for op in case.ops:
            ops[op] += 1
        for cat, text in r.info:  # keep the shortest example of each
            if cat not in info or len(text) < len(info[cat]):
                info[cat] = text
        if r.status == "skip" and show_skips:
            cat = "skipped: " + r.kind
            if cat not in info or len(r.report) < len(info[cat]):
                info[cat] = r.report
        if r.status != "pass":
            stats[f"{r.status}: {r.kind}"] += 1
            first.setdefault(r.kind, (i, r))
        if progress and stats["cases"] % 100 == 0:
            dt = time.perf_counter() - t0
            print(f"  {stats['cases']} cases, {stats['fail']} failed, {dt:.0f} s", file=sys.stderr, flush=True)
    run()
    stats["seconds"] = time.perf_counter() - t0
    return stats, first, ops, info


def shrink(n: int, s: int, max_steps: int, kind: str, start: int = 0,
           backend: str = "cpu") -> tuple[Result | None, int]:
    """The shrunk failing example of `kind`, and the index where the replay first met it."""
    last: list = [None]
    index = [0, -1]

    @_settings(n, [Phase.generate, Phase.shrink])
    @seed(s)
    @given(graphs(max_steps=max_steps))
    def run(case: Case):
        if index[1] < 0:
            index[0] += 1
            if index[0] <= start:
                return
        r = check(case, backend)
        if r.status == "fail" and r.kind == kind:
            if index[1] < 0:
                index[1] = index[0] - 1
            last[0] = (r, case)
            raise _Found(kind)
    try:
        run()
    except _Found:
        pass
    return last[0], index[1]


def save(out: str, kind: str, case: Case) -> str:
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-"))
    with open(stem + ".mlir", "w") as f:
        f.write(case.describe())
    save_file({k: v.contiguous() for k, v in case.weights.items()}, stem + ".safetensors")
    inputs = {f"{call}.{i}": t.contiguous() for call in (0, 1) for i, t in enumerate(case.tensors(call))}
    save_file(inputs, stem + ".inputs.safetensors")
    return stem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000, help="examples to generate (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--max-steps", type=int, default=8, help="op-family draws per graph (default 8)")
    p.add_argument("--shrink", type=int, default=3, help="failure kinds to shrink and report (default 3)")
    p.add_argument("--out", default=".pytest_cache/fuzz-differential",
                   help="where shrunk failures are saved (default .pytest_cache/fuzz-differential)")
    p.add_argument("--progress", action="store_true", help="a line every 100 cases on stderr")
    p.add_argument("--show-skips", action="store_true", help="print the shortest case of each skip reason")
    p.add_argument("--start", type=int, default=0,
                   help="check from this case on (earlier ones are generated, not checked): "
                        "replays a long run's failure in minutes")
    p.add_argument("--backend", choices=("cpu", "triton"), default="cpu",
                   help="the backend checked (triton: its kernels under TRITON_INTERPRET=1)")
    args = p.parse_args(argv)
    if args.backend == "triton":
        os.environ["TRITON_INTERPRET"] = "1"

    stats, first, ops, info = explore(args.cases, args.seed, args.max_steps, args.progress,
                                      args.show_skips, args.start, args.backend)
    print(f"backend {args.backend}")
    n = stats["cases"]
    print(f"seed {args.seed}: {n} cases in {stats['seconds']:.1f} s "
          f"({1000 * stats['seconds'] / max(n, 1):.0f} ms per case)")
    if stats["not checked"]:
        print(f"  not checked {stats['not checked']} (before --start)")
    print(f"  passed      {stats['pass']}  (of them {stats['conditioned']} output(s) passed by the "
          f"float64 condition check)")
    print(f"  outputs of EXACT ops only that were not bit-identical: {stats['not bitwise']} "
          f"(must be 0: w8a8 inputs rely on it)")
    print(f"  mismatches  {stats['fail']}")
    print(f"  cases whose later calls the cpu replay runtime served: {stats['replayed']}")
    for k in sorted(k for k in stats if isinstance(k, str) and k.startswith("fail: ")):
        print(f"    {k[6:]:<40} {stats[k]}")
    print(f"  skipped     {stats['skip']}")
    for k in sorted(k for k in stats if isinstance(k, str) and k.startswith("skip: ")):
        print(f"    {k[6:]:<60} {stats[k]}")
    total = stats["cache hits"] + stats["compiled"]
    print(f"  compile cache: {stats['cache hits']} hits, {stats['compiled']} compiled "
          f"({100 * stats['cache hits'] / max(total, 1):.0f}% hits; units and links)")
    print("  kernel steps: " + ", ".join(f"{k[5:]} {v}" for k, v in sorted(stats.items())
                                         if isinstance(k, str) and k.startswith("step ")))
    print("  fused groups: " + ", ".join(f"{k[6:]} {v}" for k, v in sorted(stats.items())
                                         if isinstance(k, str) and k.startswith("group ")))
    print("  cases per op: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))

    for cat, text in sorted(info.items()):
        print(f"\n--- {cat} (the shortest example; not a failure):\n{text}")

    for kind, (i, r) in sorted(first.items(), key=lambda kv: kv[1][0]):
        if r.status != "fail":
            continue
        if args.shrink <= 0:
            print(f"\n=== {kind} (first at case {i}, not shrunk)\n{r.report}", flush=True)
            continue
        args.shrink -= 1
        found, j = shrink(args.cases, args.seed, args.max_steps, kind, args.start, args.backend)
        if found is None:
            print(f"\n=== {kind}: first at case {i}; the replay did not meet it again. Unshrunk:\n{r.report}")
            continue
        res, case = found
        stem = save(args.out, kind, case)
        note = "" if j == i else f" (the replay met it at case {j})"
        print(f"\n=== {kind}: first at case {i}{note}; shrunk:\n{res.report}\n"
              f"// saved: {stem}.mlir, weights {stem}.safetensors, inputs {stem}.inputs.safetensors\n"
              f"// spokeshave-opt {stem}.mlir --weights {stem}.safetensors -p fuse --emit=cpp")
    return 1 if stats["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
