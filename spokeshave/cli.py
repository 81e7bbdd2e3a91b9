"""The `spokeshave` command: compile a checkpoint offline into an artifact, and inspect one.

    spokeshave compile MODEL -o OUT.spk [--pipeline P | --recipe recipe.toml]
                       [--calibration data.txt|data.jsonl|batches.safetensors]
                       [--target cpu|triton|reference] [--stream] [--report report.html]
    spokeshave info OUT.spk

MODEL is a Hugging Face model directory (config + safetensors, or a GGUF inside it), a
`torch.export` `.pt2` file, or `package.module:factory` (`spokeshave/checkpoints.py`). Each
stage prints its time; the end prints a summary: weight bytes before and after, the scheme
of each layer, the quality on the calibration batches, and the latency against eager. With
`--stream` (chosen on its own for a safetensors checkpoint over half the available memory)
the checkpoint compiles one layer at a time (`spokeshave/streaming.py`), with a progress bar
per layer and its ETA. `--report report.html` writes the summary with the per-layer error
and latency plots. Load the result with `spokeshave.load(OUT.spk)`. Errors a user can cause print one line
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
    c.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="compile layer by layer, holding one layer's weights at a time "
                        "(checkpoints larger than memory; default: when the safetensors are "
                        "over half the memory available)")
    c.add_argument("--report", metavar="report.html",
                   help="write an HTML report: the summary, per-layer error and latency plots")
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
    stream = args.stream if args.stream is not None else _too_big_for_memory(args.model)
    if stream:
        result = stream_compile_checkpoint(args.model, args.output, pipeline, args.calibration,
                                           args.target, args.seq, args.batch, args.batches)
        lines, latency = _streamed_summary(result), None
    else:
        cm, loaded, imported = compile_checkpoint(args.model, args.output, pipeline,
                                                  args.calibration, args.target, args.seq,
                                                  args.batch, args.batches)
        latency = _latencies(cm, loaded) if loaded.model is not None else None
        lines = _summary(imported, cm, loaded, latency)
    print("\n".join(lines))
    if args.report:
        from .html_report import write_report

        layers = result.layers if stream else cm.report.layers
        e2e = None if stream else cm.report.end_to_end
        write_report(args.report, f"spokeshave compile {args.model}", lines, layers, e2e, latency)
        print(f"report: {args.report}")
    print(f"load it with: spokeshave.load({args.output!r})")
    return 0


def _too_big_for_memory(model: str) -> bool:
    """A safetensors directory whose files exceed half the memory available now."""
    import glob

    files = glob.glob(os.path.join(model, "*.safetensors")) if os.path.isdir(model) else []
    if not files:
        return False
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return False
    size = sum(os.path.getsize(f) for f in files)
    if size > avail / 2:
        print(f"note: the checkpoint's {size / 2**30:.1f} GiB are over half the {avail / 2**30:.1f} "
              f"GiB available: compiling layer by layer (--no-stream to load it whole)")
        return True
    return False


def stream_compile_checkpoint(model: str, output: str, pipeline: str | None = None,
                              calibration: str | None = None, target: str | None = None,
                              seq: int = 128, batch: int = 4, batches: int = 8) -> Any:
    """`spokeshave compile --stream`: a `StreamResult`, with a progress bar per layer."""
    import spokeshave

    from .checkpoints import calibration_batches
    from .streaming import compile_streaming, stream_checkpoint

    backend = target or _best_backend()
    if pipeline is not None:
        spokeshave.parse_pipeline(pipeline)
    if calibration and not os.path.isfile(calibration):
        raise SpokeshaveError(f"{calibration}: no such calibration file")
    stage = _Stages(2)
    stage(f"reading {model} (config and safetensors headers; the weights stay on disk)")
    streamed = stream_checkpoint(model)
    batches_in = (calibration_batches(streamed.loaded, calibration, seq, batch, batches)
                  if calibration else None)
    stage(f"exporting the skeleton, then compiling layer by layer for {backend}"
          + (f" ({len(batches_in)} calibration batches)" if batches_in else ""))
    with _PassProgress() as bars:
        result = compile_streaming(streamed, output, pipeline, batches_in, backend,
                                   progress=lambda done, total, name, _s: bars("layers", done,
                                                                                total, name))
    stage.done()
    return result


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
    # calibration text is tokenized before the export, so a bad file fails in a second, not
    # after a deep model's export; batches from a .safetensors file are checked against the IR
    batches_in = None
    text_calibration = calibration and not calibration.endswith(".safetensors")
    if text_calibration:
        batches_in = calibration_batches(loaded, calibration, seq, batch, batches)
    stage("exporting")
    if loaded.exported is not None:
        imported = import_program(loaded.exported.run_decompositions(decomposition_table()))
    else:
        imported = spokeshave.import_model(loaded.model, loaded.example, None, loaded.dynamic_shapes)
        for note in imported.notes:
            print(f"      {note}", flush=True)
    if calibration and not text_calibration:
        batches_in = [tuple(b) for b in load_batches(calibration, imported.module)]
    stage(f"compiling for {backend}" + (f" ({len(batches_in)} calibration batches)"
                                        if batches_in else ""))
    with _PassProgress() as progress:
        cm = spokeshave.compile_module(imported, pipeline=pipeline, backend=backend,
                                       calibration=batches_in, reference=loaded.model,
                                       progress=progress)
    stage(f"writing {output}")
    spokeshave.save(cm, output, source=loaded.source)
    stage.done()
    return cm, loaded, imported


class _PassProgress:
    """A progress bar per long pass, or for the streamed segments (one step per layer, with
    its ETA), drawn by tqdm."""

    def __init__(self):
        self.bar, self.pass_name = None, None

    def __enter__(self) -> "_PassProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, pass_name: str, done: int, total: int, what: str) -> None:
        from tqdm import tqdm

        if pass_name != self.pass_name or self.bar is None:
            if self.bar is not None:
                self.bar.close()
            self.pass_name = pass_name
            self.bar = tqdm(total=total, desc=f"      {pass_name}", unit="layer",
                            dynamic_ncols=True, file=sys.stdout)
        self.bar.set_postfix_str(what, refresh=False)
        self.bar.update(done - self.bar.n)


def _best_backend() -> str:
    from .compiler.backend import BACKENDS
    from .compiler.target import Target

    host = Target.host()
    return next(b for b in ("cpu", "reference") if b in BACKENDS and BACKENDS[b].misfit(host) is None)


def _layer_lines(layers: list[Any]) -> list[str]:
    """The scheme line and one line per layer: what each pass made of it, in order."""
    per_layer: dict[str, list[str]] = {}
    for e in layers:
        made = per_layer.setdefault(e.layer, [])
        if not e.skipped:
            made.append(e.scheme or e.status)
    schemes = Counter("+".join(v) or "float (left as it was)" for v in per_layer.values())
    lines = ["  layers       " + ", ".join(f"{n}x {s}" for s, n in schemes.most_common())] if layers else []
    return lines + [f"    {layer:<52} {'+'.join(made) or 'float'}" for layer, made in per_layer.items()]


def _summary(imported: Any, cm: Any, loaded: Any,
             latency: list[tuple[str, float, float]] | None) -> list[str]:
    before = sum(t.numel() * t.element_size() for _, t in imported.weights.items())
    after = sum(cm.weights[n].numel() * cm.weights[n].element_size() for n in cm.module.entry.params())
    report = cm.report
    lines = ["", "summary", f"  weights      {before / 2**20:9.1f} MiB -> {after / 2**20:.1f} MiB "
             f"({before / max(after, 1):.2f}x smaller)"]
    e2e = report.end_to_end
    if e2e is not None:
        lines.append(f"  quality      min cosine {e2e.min_cosine:.5f}, rel mse {e2e.rel_mse:.2e} "
                     f"over {e2e.batches} calibration batches")
    for shape, eager, ours in latency or []:
        lines.append(f"  latency      {ours * 1e3:.1f} ms vs eager {eager * 1e3:.1f} ms at {shape} "
                     f"({eager / ours:.2f}x)")
    return lines + _layer_lines(report.layers)


def _streamed_summary(r: Any) -> list[str]:
    lines = ["", "summary (compiled layer by layer)",
             f"  weights      {r.bytes_before / 2**20:9.1f} MiB -> {r.bytes_after / 2**20:.1f} MiB "
             f"({r.bytes_before / max(r.bytes_after, 1):.2f}x smaller)",
             f"  segments     {len(r.segments)} in {sum(t for _, t in r.segments):.1f} s",
             "  quality      per layer only: the float model never was in memory to compare with",
             "  latency      not measured against eager, for the same reason"]
    return lines + _layer_lines(r.layers)


def _latencies(cm: Any, loaded: Any) -> list[tuple[str, float, float]]:
    """(shape, eager s, compiled s) at the example's shape, and at batch 1 when the compiled
    model takes it (a dynamic batch)."""
    from .compiler.signature import check_inputs

    shapes = [loaded.example]
    if loaded.example and isinstance(loaded.example[0], torch.Tensor) and loaded.example[0].shape[0] > 1:
        one = tuple(x[:1] for x in loaded.example)
        try:
            check_inputs(list(one), cm.inputs, "batch 1")
            shapes.append(one)
        except SpokeshaveError:
            pass  # a static batch: the example's shape is the only one it runs
    return [("x".join(map(str, ex[0].shape)), _latency(loaded.model, ex), _latency(cm, ex))
            for ex in shapes]


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
