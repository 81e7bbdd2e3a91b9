"""CPU speed of spokeshave's compiled models next to their peers, every row in one run.

    python benchmarks/speed_cpu.py [--workloads minilm8x128,minilm1x16,smollm_prefill,smollm_token]
                                   [--rows eager,inductor,...] [--reps N] [--backend cpu|reference]
                                   [--strip-missing] [--no-workers] [--no-write] [--out BENCHMARKS.md]

Workloads: all-MiniLM-L6-v2 at batch 8 x seq 128 and 1 x 16 (token ids of real sentences,
padded/truncated to the length); SmolLM2-135M (`use_cache=False`) prefill 1 x 256 and a
single-token forward (1 x 1, no KV cache: the GEMV shapes of decoding). Rows (`ROWS` below):
peers - torch eager fp32, torch.compile (inductor, default mode, `dynamic=False`: one graph
specialised per shape), torchao int8 dynamic-activation and int8 weight-only (each + inductor,
with torchao's recommended inductor settings applied to its own calls only), onnxruntime fp32
and `quantize_dynamic` int8 (per-channel, reduce_range; MiniLM), llama.cpp on the bundled
GGUF (SmolLM2; skipped when `import llama_cpp` fails) - and spokeshave pipelines compiled
with `compile_module` on `--backend` from one `import_model` per model (dynamic batch and
sequence dims: one compile serves both workloads of a model). A row that cannot run here (a
missing peer package, backend or pass) prints as "n/a (reason)"; `--strip-missing` instead
drops unregistered passes from the pipelines (for developing before `fuse` exists).

Method. Timing runs in this one process, *interleaved*: rep 1 of every row, then rep 2 of
every row, ... (the row order rotates by one each rep), so a slow drift of the shared
machine (other jobs, thermal state, frequency) lands on every row alike instead of on
whichever row ran during it. One rep is k back-to-back calls, k chosen per row after a
warm-up so that a rep lasts about `--min-rep-s`; its time is the mean call. `ms` is the
median rep, `spread` (p90 - p10) / median over the reps. `vs eager` and `vs best peer` are
speedups (eager ms / row ms; > 1 is faster); the best peer is the fastest non-spokeshave row
of that workload (eager included) and is named under the table. All rows run with
torch/ORT/llama.cpp threads = the usable cores (`os.sched_getaffinity`); onnxruntime's thread
spinning is off, since in an interleaved run its idle spinning workers would steal the cores
of the rows timed after it (torch's OpenMP spins only briefly, left as it is).

Quality, once per row (not per rep), next to its speed. MiniLM: the min cosine, over the 32
evaluation sentences of `benchmarks/_minilm.py`, between the row's and eager fp32's
mean-pooled embeddings, run at the workload's own shape (4 batches of 8 x 128; 32 batches of
1 x 16, so a sentence longer than 16 tokens is truncated for both sides): the figure is for
exactly what was timed, and no compiled peer recompiles for another shape. SmolLM2:
perplexity / eager fp32 perplexity on `--ppl-windows` windows of 256 held-out tokens (the
text and `perplexity()` of `benchmarks/perplexity_smollm2.py`), once per row for both
SmolLM2 workloads. Calibration: `_minilm.py`'s 144 sentences; SmolLM2 `--calib` windows of
128 tokens (perplexity_smollm2.py's calibration text), batches of 4.

Memory and compile time come from a fresh worker process per (row, model) (`--worker`,
run one at a time before the timing, never alongside it), so rows do not pollute each
other: it loads the model (and spokeshave's import), resets the RSS high-water mark
(`/proc/self/clear_refs`), builds the row and runs each workload a few times. `peak RSS Δ`
is the high-water mark of the build and of that workload's calls above the RSS with the
fp32 model loaded (the row's own weights, compile transients and activations; memory of
child processes, e.g. inductor's compile workers, not counted). `run peak Δ` is that
workload's calls alone: the high-water mark of the calls above the RSS just before them,
with the row built (activations, scratch and workspaces; what running costs beyond the
model's own weights, comparable across rows). `compile s cold / cached`:
the build plus the first call at the workload's shape, first with empty caches (the worker
points SPOKESHAVE_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR at fresh folders), then a second
build in the same process with the caches warm: spokeshave compile_module again (passes and
calibration rerun, kernels from the cache); inductor/torchao torch.compile of a fresh copy
of the model; onnxruntime a session from the exported file; llama.cpp loading again. A
spokeshave build is shape-generic, so both workloads of a model show the same build and
differ by the first call. With `--no-workers`, the memory column is empty and compile
shows this process's build + first call (cold only).

Writes the tables between `<!-- speed_cpu:begin -->` and `<!-- speed_cpu:end -->` of
`--out` (default BENCHMARKS.md; the section is appended when the markers are absent) and
prints them; `--no-write` only prints. `--json FILE` keeps the raw figures.
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

# fresh, private caches for every process (the main one and each worker)
_TMP = tempfile.mkdtemp(prefix="speed_cpu_")
atexit.register(shutil.rmtree, _TMP, True)
os.environ["SPEED_CPU_TMP"] = _TMP
for _var in ("TORCHINDUCTOR_CACHE_DIR", "SPOKESHAVE_CACHE_DIR"):
    os.environ[_var] = os.path.join(_TMP, _var.lower())

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # sets the environment, imports torch
from _timing import interleaved, log, summarize, write_section  # noqa: E402

HERE = os.path.abspath(__file__)
BEGIN, END = "<!-- speed_cpu:begin -->", "<!-- speed_cpu:end -->"
SECTION = "## CPU speed (benchmarks/speed_cpu.py)"


@dataclass(frozen=True)
class Row:
    name: str
    what: str = ""                        # peers: what it is
    pipeline: str | dict | None = None    # spokeshave: one text, or model -> text
    models: tuple[str, ...] = ("minilm", "smollm2")


# ---------------------------------------------------------------- the rows (edit here)
# gqa-attention is exact and matches nothing in MiniLM (BERT has no grouped-query heads).
ROWS = [
    Row("eager", "torch eager fp32"),
    Row("inductor", "torch.compile (inductor, default mode)"),
    Row("ao_int8_dyn", "torchao Int8DynamicActivationInt8Weight + inductor"),
    Row("ao_int8_wo", "torchao Int8WeightOnly + inductor"),
    Row("ort_fp32", "onnxruntime fp32", models=("minilm",)),
    Row("ort_int8", "onnxruntime quantize_dynamic int8 per-channel, reduce_range",
        models=("minilm",)),
    Row("llamacpp", "llama.cpp, bundled GGUF (Q4_1)", models=("smollm2",)),
    Row("fusion", pipeline="fold-constants,canonicalize,cse,dce,gqa-attention,fuse"),
    Row("w8", pipeline={  # MiniLM: GPTQ, the w8 recipe at min cosine >= 0.999 (BENCHMARKS.md)
        "minilm": "quantize{scheme=w8 method=gptq},canonicalize,cse,dce,gqa-attention,fuse",
        "smollm2": "quantize{scheme=w8},canonicalize,cse,dce,gqa-attention,fuse"}),
    Row("w8a8_smooth", pipeline={  # the best smoothing recipe of each model (BENCHMARKS.md)
        "minilm": "smooth{alpha=0.75},quantize{scheme=w8a8 method=gptq},"
                  "canonicalize,cse,dce,gqa-attention,fuse",
        "smollm2": "smooth{alpha=0.65},quantize{scheme=w8a8 method=gptq},"
                   "canonicalize,cse,dce,gqa-attention,fuse"}),
    # activations per token and group, asymmetric: int8 everywhere at MiniLM min cosine
    # >= 0.999 (BENCHMARKS.md); SmolLM2's in-features (576) take groups of 64
    Row("w8a8g", pipeline={
        "minilm": "smooth{alpha=0.6},quantize{scheme=w8a8g group=128 method=gptq},"
                  "canonicalize,cse,dce,gqa-attention,fuse",
        "smollm2": "smooth{alpha=0.65},quantize{scheme=w8a8g group=64 method=gptq},"
                   "canonicalize,cse,dce,gqa-attention,fuse"}),
    # SmolLM2: w8a8g only where per-token codes cost most (down_proj: the massive-activation
    # channel reaches its input unnormalised), w8a8 elsewhere (BENCHMARKS.md)
    Row("w8a8_mixed", pipeline="smooth{alpha=0.65},quantize{scheme=w8a8g group=128 method=gptq "
                               "layers=*down_proj*},quantize{scheme=w8a8 method=gptq},"
                               "canonicalize,cse,dce,gqa-attention,fuse",
        models=("smollm2",)),
    # threshold 2: the w8a8 recipe that reaches min cosine 0.999 on MiniLM (BENCHMARKS.md)
    Row("w8a8_split", pipeline="outlier-split{scheme=w8a8 threshold=2.0},"
                               "canonicalize,cse,dce,gqa-attention,fuse",
        models=("minilm",)),
    Row("w4g", pipeline={  # in-features: MiniLM 384/1536, SmolLM2 576/1536
        "minilm": "quantize{scheme=w4g group=128 symmetric=false method=gptq act-order=true},"
                  "canonicalize,cse,dce,gqa-attention,fuse",
        "smollm2": "quantize{scheme=w4g group=64 method=gptq act-order=true},"
                   "canonicalize,cse,dce,gqa-attention,fuse"}),
    Row("sparse24", pipeline="sparsify{pattern=2:4 method=wanda},canonicalize,cse,dce,gqa-attention,fuse"),
]
ROW = {r.name: r for r in ROWS}
MEMORY_CALLS = 3  # calls per workload in the worker after the first


def is_peer(row: Row) -> bool:
    return row.pipeline is None


def split_pipeline(text: str) -> list[str]:
    """Top-level comma-separated pass items (commas inside {...} stay)."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur.strip())
    return items


def resolve(row: Row, model: str, backend: str, strip: bool) -> tuple[str | None, str | None]:
    """(pipeline text or None for a peer, why the row cannot run here or None)."""
    if is_peer(row):
        return None, _peers.peer_unavailable(row.name)
    import spokeshave
    pipeline = row.pipeline[model] if isinstance(row.pipeline, dict) else row.pipeline
    if backend not in spokeshave.BACKENDS:
        return pipeline, f"backend '{backend}' is not registered"
    items = split_pipeline(pipeline)
    missing = [i.split("{")[0].strip() for i in items if i.split("{")[0].strip() not in spokeshave.PASSES]
    if missing and strip:
        pipeline = ",".join(i for i in items if i.split("{")[0].strip() not in missing)
        missing = []
    if missing:
        return pipeline, f"pass '{missing[0]}' is not registered"
    try:
        spokeshave.parse_pipeline(pipeline)
    except spokeshave.SpokeshaveError as e:
        return pipeline, f"bad pipeline: {e}"
    return pipeline, None


def build_row(row: Row, bundle, pipeline: str | None, backend: str, again: bool = False):
    if is_peer(row):
        return _peers.build_peer(row.name, bundle, again)
    import spokeshave
    cm = spokeshave.compile_module(bundle.imported(), pipeline=pipeline, backend=backend,
                                   calibration=bundle.calibration)
    skipped = cm.report.skipped()
    notes = [f"{len(skipped)} layer(s) skipped by the pipeline"] if skipped else []
    return _peers.Built(cm, notes)


def rows_for(model: str, names: list[str]) -> list[Row]:
    return [ROW[n] for n in names if model in ROW[n].models]


# ---------------------------------------------------------------- worker (one row, one model)


def worker(args) -> dict:
    row, model = ROW[args.worker], args.model
    names = [w for w in args.workloads if _peers.WORKLOADS[w][0] == model]
    out: dict = {"row": row.name, "model": model, "workloads": {}}
    pipeline, reason = resolve(row, model, args.backend, args.strip_missing)
    if reason:
        out["error"] = reason
        return out
    bundle = _peers.load_bundle(model, names, args.ppl_windows, args.calib, with_reference=False)
    if not is_peer(row):
        bundle.imported()
        out["export_s"] = bundle.export_s
    gc.collect()
    base = _peers.rss_mib()
    out["hwm_reset"] = _peers.reset_hwm()
    t0 = time.perf_counter()
    built = build_row(row, bundle, pipeline, args.backend)
    out["build_s"] = time.perf_counter() - t0
    build_peak = _peers.hwm_mib() - base
    out["build_peak_mib"] = build_peak
    for name in names:
        gc.collect()
        _peers.reset_hwm()
        before_calls = _peers.rss_mib()
        w = bundle.workloads[name]
        t0 = time.perf_counter()
        step = built.step(w)
        step()
        first = time.perf_counter() - t0
        for _ in range(MEMORY_CALLS):
            step()
        hwm = _peers.hwm_mib()
        out["workloads"][name] = {"first_s": first,
                                  "peak_mib": max(build_peak, hwm - base),
                                  # what running needs beyond the built model: activations,
                                  # scratch, workspaces (the build's transients excluded)
                                  "run_peak_mib": hwm - before_calls,
                                  "model_mib": before_calls - base,
                                  "cold_s": out["build_s"] + first}
    t0 = time.perf_counter()
    again = build_row(row, bundle, pipeline, args.backend, again=True)
    out["build_again_s"] = time.perf_counter() - t0
    for name in names:
        t0 = time.perf_counter()
        again.step(bundle.workloads[name])()
        out["workloads"][name]["cached_s"] = out["build_again_s"] + time.perf_counter() - t0
    return out


def run_workers(args, models: list[str]) -> dict:
    """(row, model) -> the worker's figures, one worker process at a time."""
    results = {}
    for model in models:
        for row in rows_for(model, args.rows):
            _, reason = resolve(row, model, args.backend, args.strip_missing)
            if reason:
                continue
            fd, path = tempfile.mkstemp(suffix=".json", dir=_TMP)
            os.close(fd)
            cmd = [sys.executable, HERE, "--worker", row.name, "--model", model,
                   "--workloads", ",".join(args.workloads), "--backend", args.backend,
                   "--ppl-windows", str(args.ppl_windows), "--calib", str(args.calib),
                   "--worker-out", path] + (["--strip-missing"] if args.strip_missing else [])
            log(f"  worker {row.name} / {model} ...")
            t0 = time.perf_counter()
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout,
                                   check=False)
                with open(path) as f:
                    res = json.load(f) if os.path.getsize(path) else {}
                if p.returncode != 0 or not res:
                    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
                    res = {"error": f"worker exited {p.returncode}: {' | '.join(tail)[-300:]}"}
            except subprocess.TimeoutExpired:
                res = {"error": f"worker timed out after {args.worker_timeout} s"}
            log(f"    {time.perf_counter() - t0:.0f} s" + (f"; {res['error']}" if "error" in res else ""))
            results[(row.name, model)] = res
    return results


# ---------------------------------------------------------------- timing (interleaved)


# ---------------------------------------------------------------- main


def measure_model(args, model: str, names: list[str], workers: dict) -> dict:
    """Build every row of `model` here, score it, time its workloads interleaved."""
    log(f"{model}: loading ...")
    bundle = _peers.load_bundle(model, names, args.ppl_windows, args.calib)
    rows = rows_for(model, args.rows)
    built, info = {}, {}
    for row in rows:
        pipeline, reason = resolve(row, model, args.backend, args.strip_missing)
        info[row.name] = {"what": row.what if is_peer(row) else
                          f"`{pipeline}`" if pipeline else "(no passes)", "notes": []}
        w = workers.get((row.name, model), {})
        if not reason and w.get("error"):
            reason = w["error"]
        if reason:
            info[row.name]["na"] = reason
            continue
        log(f"  build {row.name}")
        t0 = time.perf_counter()
        try:
            built[row.name] = build_row(row, bundle, pipeline, args.backend)
            info[row.name]["build_s"] = time.perf_counter() - t0
            info[row.name]["notes"] += built[row.name].notes
        except Exception as e:  # noqa: BLE001 - one broken row must not hide the others
            if args.verbose:
                traceback.print_exc()
            info[row.name]["na"] = f"build failed: {type(e).__name__}: {str(e)[:200]}"
    out = {"export_s": bundle.export_s, "workloads": {}}
    quality: dict[tuple[str, str], float] = {}
    for name in names:
        w = bundle.workloads[name]
        res = {"label": w.label, "quality_name": bundle.quality_name,
               "quality_what": bundle.quality_reference(w), "rows": {}}
        steps, errors = {}, {}
        for row in rows:
            r = res["rows"][row.name] = dict(info[row.name])
            if row.name not in built:
                continue
            b = built[row.name]
            try:
                t0 = time.perf_counter()  # first: at a new shape, inductor compiles here
                steps[row.name] = b.step(w)
                steps[row.name]()
                r["first_s"] = time.perf_counter() - t0
                key = (row.name, w.quality_key)
                if key not in quality:
                    log(f"  {name}: quality of {row.name}")
                    quality[key] = bundle.quality(b.forward, w)
                r["quality"] = quality[key]
                steps[row.name] = b.step(w)  # after the quality runs (llama.cpp: its cache)
            except Exception as e:  # noqa: BLE001
                if args.verbose:
                    traceback.print_exc()
                r["na"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
                steps.pop(row.name, None)
        log(f"  {name}: timing {len(steps)} rows x {args.reps} interleaved reps")
        times = interleaved(steps, args.reps, args.min_rep_s, errors)
        for rname, r in res["rows"].items():
            if rname in errors:
                r["na"] = errors[rname]
            if rname in times:
                r.update(summarize(times[rname]))
            wk = workers.get((rname, model), {}).get("workloads", {}).get(name)
            if wk:
                r.update(peak_mib=wk["peak_mib"], run_peak_mib=wk.get("run_peak_mib"),
                         model_mib=wk.get("model_mib"), cold_s=wk["cold_s"], cached_s=wk.get("cached_s"))
            elif "build_s" in r and "first_s" in r and not workers:
                r["cold_s"] = r["build_s"] + r["first_s"]
        out["workloads"][name] = res
    del built, bundle
    gc.collect()
    return out


def fmt(x, spec: str, empty: str = "") -> str:
    return empty if x is None else format(x, spec)


def secs(x) -> str:
    return "" if x is None else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def speedup(ref_ms, ms) -> str:
    return "" if not ref_ms else f"{ref_ms / ms:.2f}x"


def table(name: str, res: dict) -> str:
    rows = res["rows"]
    timed = {n: r for n, r in rows.items() if "median_ms" in r and "na" not in r}
    eager = timed.get("eager", {}).get("median_ms")
    peers = {n: r["median_ms"] for n, r in timed.items() if is_peer(ROW[n])}
    best = min(peers, key=peers.get) if peers else None
    lines = [f"### {res['label']} (`{name}`)", "",
             (f"| row | what | ms | spread | vs eager | vs best peer | {res['quality_name']} "
              "| peak RSS Δ MiB | run peak Δ MiB | compile s cold / cached |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        if "na" in r:
            lines.append(f"| {n} | {r['what']} | n/a ({r['na']}) | | | | | | | |")
            continue
        if n not in timed:
            continue
        ms = r["median_ms"]
        q = r.get("quality")
        qs = "" if q is None else (f"{q:.5f}" if res["quality_name"] == "min cos" else f"{q:.3f}")
        comp = secs(r.get("cold_s")) + (" / " + secs(r.get("cached_s"))
                                         if r.get("cached_s") is not None else "")
        lines.append(f"| {n} | {r['what']} | {ms:.2f} | {r['spread'] * 100:.1f}% | "
                     f"{speedup(eager, ms)} | {speedup(peers.get(best), ms)} | {qs} | "
                     f"{fmt(r.get('peak_mib'), '.0f')} | {fmt(r.get('run_peak_mib'), '.0f')} | {comp} |")
    lines += ["", f"Best peer: {best} ({peers[best]:.2f} ms)." if best else "No peer timed.",
              f"Quality: {res['quality_what']}."]
    notes = [f"{n}: {'; '.join(r['notes'])}" for n, r in rows.items() if r.get("notes")]
    if notes:
        lines.append("Notes: " + " ".join(f"{x}." for x in notes))
    return "\n".join(lines)


def report(args, results: dict, wall_s: float, load: tuple[float, float]) -> str:
    import spokeshave
    v = _peers.versions()
    head = [f"`{' '.join(['python', 'benchmarks/speed_cpu.py'] + sys.argv[1:])}` "
            f"({datetime.date.today().isoformat()}, {wall_s / 60:.1f} min wall). "
            f"Machine: {spokeshave.Target.host().describe()}; {_peers.usable_cores()} usable "
            f"core(s) = threads of every row. spokeshave backend `{args.backend}`"
            + (" (unregistered passes stripped from the pipelines)" if args.strip_missing else "")
            + "; " + ", ".join(f"{k} {x}" for k, x in v.items()) + f". Load average "
            f"(1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end (other jobs on the "
            "machine inflate times and spread)."
            + (" **The machine was busy at the start: torch's OpenMP rows slow down many times "
               "over when another job takes a core; rerun on a quiet machine.**"
               if load[0] > 0.5 else ""),
            "",
            f"Each rep: k back-to-back calls lasting about {args.min_rep_s} s; {args.reps} reps "
            "per row, interleaved across the rows (method: the docstring of "
            "`benchmarks/speed_cpu.py`). `ms`: median rep (mean call); `spread`: "
            "(p90 - p10) / median; `vs eager`, `vs best peer`: speedups (> 1 is faster); "
            "`peak RSS Δ`: high-water mark above the loaded fp32 model during the build and "
            "the calls, in a fresh process per row; `run peak Δ`: the calls alone, above the "
            "RSS of the built row just before them; `compile`: build + first call at this "
            "shape with empty caches / again with warm caches (same process). "
            + ("" if not args.no_workers else "Run with --no-workers: no memory figures; "
               "compile is this process's build + first call."), ""]
    for model, res in results.items():
        if res.get("export_s") is not None:
            head.append(f"{model}: spokeshave import_model (export) {res['export_s']:.1f} s, "
                        "shared by its spokeshave rows and not in their compile times.")
    head.append("")
    return "\n".join(head + [table(n, r) + "\n" for m in results.values()
                             for n, r in m["workloads"].items()]).rstrip() + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(_peers.WORKLOADS),
                    help="comma-separated, of: %(default)s")
    ap.add_argument("--rows", default=",".join(ROW), help="comma-separated, of: %(default)s")
    ap.add_argument("--reps", type=int, default=15, help="interleaved reps per row")
    ap.add_argument("--min-rep-s", type=float, default=0.25, help="seconds one rep should last")
    ap.add_argument("--backend", default="cpu", help="spokeshave backend (cpu | reference)")
    ap.add_argument("--strip-missing", action="store_true",
                    help="drop passes that are not registered from the pipelines")
    ap.add_argument("--ppl-windows", type=int, default=8, help="SmolLM2 held-out 256-token windows")
    ap.add_argument("--calib", type=int, default=64, help="SmolLM2 calibration 128-token windows "
                    "(a multiple of 4)")
    ap.add_argument("--no-workers", action="store_true",
                    help="skip the per-row processes (no memory, cold compile from this process)")
    ap.add_argument("--worker-timeout", type=int, default=3600)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--out", default=os.path.join(_peers.ROOT, "BENCHMARKS.md"))
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--verbose", action="store_true", help="tracebacks of failing rows")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for w in args.workloads:
        if w not in _peers.WORKLOADS:
            ap.error(f"unknown workload {w!r}; known: {', '.join(_peers.WORKLOADS)}")
    for r in args.rows:
        if r not in ROW:
            ap.error(f"unknown row {r!r}; known: {', '.join(ROW)}")
    if args.calib % 4 or args.reps < 1:
        ap.error("--calib must be a multiple of 4 and --reps at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _peers.setup_torch(_peers.usable_cores())
    if args.worker:
        try:
            res = worker(args)
        except Exception as e:  # noqa: BLE001 - reported as the row's reason
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        with open(args.worker_out, "w") as f:
            json.dump(res, f)
        return 0
    wall0, load0 = time.perf_counter(), os.getloadavg()[0]
    models = [m for m in ("minilm", "smollm2")
              if any(_peers.WORKLOADS[w][0] == m for w in args.workloads)]
    workers = {}
    if not args.no_workers:
        log("memory and compile time: one worker process per row")
        workers = run_workers(args, models)
    results = {}
    for model in models:
        names = [w for w in args.workloads if _peers.WORKLOADS[w][0] == model]
        results[model] = measure_model(args, model, names, workers)
    text = report(args, results, time.perf_counter() - wall0, (load0, os.getloadavg()[0]))
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results,
                       "workers": {f"{r}/{m}": v for (r, m), v in workers.items()},
                       "python": platform.python_version()}, f, indent=1, default=str)
    if not args.no_write:
        write_section(args.out, text, SECTION, BEGIN, END)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
