"""The `spokeshave` command: compile a checkpoint offline into an artifact, and inspect one.

    spokeshave compile MODEL -o OUT.spk [--pipeline P | --recipe recipe.toml]
                       [--calibration data.txt|data.jsonl|batches.safetensors]
                       [--target cpu|triton|reference]
    spokeshave info OUT.spk

MODEL is a Hugging Face model directory (config + safetensors, or a GGUF inside it), a
`torch.export` `.pt2` file, or `package.module:factory` (`spokeshave/checkpoints.py`). Each
stage prints its time; the end prints a summary: weight bytes before and after, the scheme
of each layer, the quality on the calibration batches, and the latency against eager. Load
the result with `spokeshave.load(OUT.spk)`. Errors a user can cause print one line
(`spokeshave: error: ...`) and exit 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from typing import Any

import torch

from .compiler.errors import SpokeshaveError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spokeshave", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile a checkpoint into an artifact directory")
    c.add_argument("model", metavar="MODEL")
    c.add_argument("-o", "--output", required=True, metavar="OUT.spk")
    how = c.add_mutually_exclusive_group()
    how.add_argument("--pipeline", help="pass pipeline (default: the backend's own)")
    how.add_argument("--recipe", help="TOML recipe: a pipeline with per-layer overrides")
    c.add_argument("--calibration", help="calibration text (.txt, .jsonl) or batches (.safetensors)")
    c.add_argument("--target", default=None, choices=("cpu", "triton", "reference"),
                   help="the backend (default: the best that fits this machine)")
    c.add_argument("--seq", type=int, default=128, help="calibration window in tokens")
    c.add_argument("--batch", type=int, default=4, help="calibration windows per batch")
    c.add_argument("--batches", type=int, default=8, help="calibration batches at most")
    i = sub.add_parser("info", help="check an artifact and print its manifest")
    i.add_argument("artifact", metavar="OUT.spk")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _info(args) if args.command == "info" else _compile(args)
    except SpokeshaveError as e:
        print(f"spokeshave: error: {e}", file=sys.stderr)
        return 1


class _Stages:
    def __init__(self, n: int):
        self.n, self.i, self.t0 = n, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        if self.i:
            print(f"      {now - self.t0:.1f} s", flush=True)
        self.i += 1
        self.t0 = now
        print(f"[{self.i}/{self.n}] {what}", flush=True)

    def done(self) -> None:
        print(f"      {time.perf_counter() - self.t0:.1f} s", flush=True)


def _compile(args: argparse.Namespace) -> int:
    from .checkpoints import read_recipe

    pipeline = read_recipe(args.recipe) if args.recipe else args.pipeline
    cm, loaded, imported = compile_checkpoint(args.model, args.output, pipeline,
                                              args.calibration, args.target, args.seq,
                                              args.batch, args.batches)
    print(_summary(imported, cm, loaded))
    print(f"load it with: spokeshave.load({args.output!r})")
    return 0


def compile_checkpoint(model: str, output: str, pipeline: str | None = None,
                       calibration: str | None = None, target: str | None = None,
                       seq: int = 128, batch: int = 4, batches: int = 8) -> tuple[Any, Any, Any]:
    """What `spokeshave compile` does, stage by stage: (CompiledModel, Loaded, Imported)."""
    import spokeshave

    from .checkpoints import calibration_batches, load_model
    from .compiler.calibration import load_batches
    from .compiler.frontend import decomposition_table, import_program

    backend = target or _best_backend()
    if pipeline is not None:
        spokeshave.parse_pipeline(pipeline)  # a bad pipeline fails before the slow load
    if calibration and not os.path.isfile(calibration):
        raise SpokeshaveError(f"{calibration}: no such calibration file")
    stage = _Stages(4)
    stage(f"loading {model}")
    loaded = load_model(model)
    stage("exporting")
    if loaded.exported is not None:
        imported = import_program(loaded.exported.run_decompositions(decomposition_table()))
    else:
        imported = spokeshave.import_model(loaded.model, loaded.example, None, loaded.dynamic_shapes)
    batches_in = None
    if calibration:
        if calibration.endswith(".safetensors"):
            batches_in = [tuple(b) for b in load_batches(calibration, imported.module)]
        else:
            batches_in = calibration_batches(loaded, calibration, seq, batch, batches)
    stage(f"compiling for {backend}" + (f" ({len(batches_in)} calibration batches)"
                                        if batches_in else ""))
    cm = spokeshave.compile_module(imported, pipeline=pipeline, backend=backend,
                                   calibration=batches_in, reference=loaded.model)
    stage(f"writing {output}")
    spokeshave.save(cm, output, source=loaded.source)
    stage.done()
    return cm, loaded, imported


def _best_backend() -> str:
    from .compiler.backend import BACKENDS
    from .compiler.target import Target

    host = Target.host()
    return next(b for b in ("cpu", "reference") if b in BACKENDS and BACKENDS[b].misfit(host) is None)


def _summary(imported: Any, cm: Any, loaded: Any) -> str:
    before = sum(t.numel() * t.element_size() for _, t in imported.weights.items())
    after = sum(cm.weights[n].numel() * cm.weights[n].element_size() for n in cm.module.entry.params())
    report = cm.report
    per_layer: dict[str, list[str]] = {}  # layer -> what each pass made of it, in order
    for e in report.layers:
        if not e.skipped:
            per_layer.setdefault(e.layer, []).append(e.scheme or e.status)
        else:
            per_layer.setdefault(e.layer, [])
    schemes = Counter("+".join(v) or "float (left as it was)" for v in per_layer.values())
    lines = ["", "summary", f"  weights      {before / 2**20:9.1f} MiB -> {after / 2**20:.1f} MiB "
             f"({before / max(after, 1):.2f}x smaller)"]
    if report.layers:
        lines.append("  layers       " + ", ".join(f"{n}x {s}" for s, n in schemes.most_common()))
    e2e = report.end_to_end
    if e2e is not None:
        lines.append(f"  quality      min cosine {e2e.min_cosine:.5f}, rel mse {e2e.rel_mse:.2e} "
                     f"over {e2e.batches} calibration batches")
    if loaded.model is not None:
        eager, ours = _latency(loaded.model, loaded.example), _latency(cm, loaded.example)
        shape = "x".join(map(str, loaded.example[0].shape))
        lines.append(f"  latency      {ours * 1e3:.1f} ms vs eager {eager * 1e3:.1f} ms at {shape} "
                     f"({eager / ours:.2f}x)")
    for layer, made in per_layer.items():
        lines.append(f"    {layer:<52} {'+'.join(made) or 'float'}")
    return "\n".join(lines)


def _latency(f: Any, example: tuple, reps: int = 5) -> float:
    times = []
    with torch.no_grad():
        f(*example)
        for _ in range(reps):
            t = time.perf_counter()
            f(*example)
            times.append(time.perf_counter() - t)
    return sorted(times)[reps // 2]


def _info(args: argparse.Namespace) -> int:
    from .artifact import read_manifest

    m = read_manifest(args.artifact)
    print(f"{args.artifact}: spokeshave artifact, format {m['format_version']}, all "
          f"{len(m['files'])} files match their sha256")
    for key in ("pipeline", "backend", "target"):
        print(f"  {key:<9} {m.get(key)}")
    from .compiler.signature import InputSpec

    for s in m.get("inputs", []):
        print(f"  input     {InputSpec.from_json(s)}")
    print(f"  source    {m.get('source')}")
    print(f"  versions  {m.get('versions')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
