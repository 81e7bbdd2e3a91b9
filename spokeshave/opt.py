"""`spokeshave-opt`: run a pass pipeline over IR text, like `mlir-opt`.

    spokeshave-opt FILE.mlir --pass-pipeline="canonicalize,cse,dce"
    spokeshave-opt - < in.mlir           # stdin
    spokeshave-opt cases.mlir --split-input-file --verify-roundtrip
    spokeshave-opt invalid.mlir --split-input-file --verify-diagnostics

Parameters take their data from `--weights W.safetensors`; without it each parameter gets
deterministic synthetic data so structural passes run. Passes that measure activations get
them from `--calibration B.safetensors` (tensors `<batch>.<input index>`) or
`--calibration=synthetic:N` (deterministic random batches, heavy-tailed channel scales). Errors print as
`FILE:LINE:COL: error: ...` and exit 1, never with a traceback.
"""
from __future__ import annotations

import argparse
import io
import re
import sys

from .compiler.calibration import load_batches, synthetic_batches
from .compiler.errors import Diagnostic, SpokeshaveError
from .compiler.parser import parse_module, read_source
from .compiler.passmanager import (PASSES, Pass, PassContext, PassManager, describe_options,
                                   parse_pipeline)
from .compiler.printer import print_module
from .compiler.verifier import verify
from .compiler.weights import WeightStore, complete_weights
from .costmodel.roofline import RooflineCostModel
from .expected_diagnostics import check, expected_in

SPLIT_MARKER = re.compile(r"^// -----\s*$", re.M)


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spokeshave-opt", description=__doc__.split("\n")[0])
    p.add_argument("input", nargs="?", default="-", help="IR file, or - for stdin (default)")
    p.add_argument("--pass-pipeline", "-p", default="", help='e.g. "canonicalize,cse,dce"')
    p.add_argument("--weights", help="safetensors file with parameter data")
    p.add_argument("--calibration", metavar="SOURCE",
                   help="calibration batches for passes that measure activations: a safetensors "
                        "file of tensors named <batch>.<input index>, or synthetic:N for N "
                        "deterministic random batches")
    p.add_argument("--split-input-file", action="store_true",
                   help="treat '// -----' separated chunks as independent inputs")
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--timing", action="store_true", help="per-pass timing and statistics on stderr")
    p.add_argument("--no-verify", action="store_true", help="do not run the verifier between passes")
    p.add_argument("--verify-diagnostics", action="store_true",
                   help="check errors and remarks against the '// expected-error@+1 {{...}}' "
                        "annotations of the input, at their lines (as mlir-opt does)")
    p.add_argument("--verify-roundtrip", action="store_true",
                   help="check that printing, parsing and printing again gives the same text")
    p.add_argument("--print-debuginfo", action="store_true", help="print op locations")
    p.add_argument("--list-passes", action="store_true")
    p.add_argument("--emit", default="mlir",
                   help="mlir (default), or the language of a code-generating backend (cpp: "
                        "the CPU backend's C++), printed after the IR")
    p.add_argument("--target", default=None,
                   help='the target to generate for with --emit, e.g. "cpu:x86_64:avx2,fma" '
                        "(default: this machine)")
    p.add_argument("-o", "--output", default="-")
    return p


def _process(text: str, filename: str, line_offset: int, args, passes: list[Pass],
             weights: WeightStore | None, out: io.StringIO) -> list[Diagnostic]:
    """Parse, run the pipeline and print one input; returns the remarks the passes made."""
    module = parse_module(text, filename, line_offset)
    store = complete_weights(module, WeightStore(dict(weights.items())) if weights else None)
    ctx = PassContext(weights=store, calibration=_calibration(args.calibration, module),
                      cost_model=RooflineCostModel())
    pm = PassManager(passes, verify=not args.no_verify,
                     print_ir_after_all=args.print_ir_after_all, timing=args.timing,
                     out=sys.stderr)
    if args.no_verify is False and not pm.passes:
        verify(module, store)
    pm.run(module, ctx)
    printed = print_module(module, debug_info=args.print_debuginfo)
    if args.verify_roundtrip:
        again = print_module(parse_module(printed, f"{filename} (printed)"), debug_info=args.print_debuginfo)
        if again != printed:
            import difflib

            diff = "".join(difflib.unified_diff(printed.splitlines(True), again.splitlines(True),
                                                "printed", "reparsed+printed"))
            raise SpokeshaveError(f"{filename}: error: the printed IR does not round-trip:\n{diff}")
    out.write(printed)
    if args.emit != "mlir":
        _emit(args, module, store, out)
    return ctx.diagnostics


def _emit(args, module, store: WeightStore, out) -> None:
    """Print what the backend generating `args.emit` would compile, file by file."""
    from .compiler.backend import BACKENDS
    from .compiler.target import Target

    makers = {b.language: b for b in BACKENDS.values() if b.generate is not None and b.language}
    backend = makers.get(args.emit)
    if backend is None:
        raise SpokeshaveError(f"--emit={args.emit}: unknown; choose mlir or "
                              f"{', '.join(sorted(makers)) or '(no code-generating backend)'}")
    target = Target.parse(args.target) if args.target else Target.host()
    for name, text in backend.generate(module, store, target).items():
        out.write(f"// ----- {args.emit}: {name}\n{text}")


def _run_chunk(text: str, filename: str, line_offset: int, args, passes: list[Pass],
               weights: WeightStore | None, out: io.StringIO) -> bool:
    """One input (a whole file or a `// -----` case); True when it failed. With
    `--verify-diagnostics` it fails when the diagnostics are not the expected ones."""
    produced: list[Diagnostic] = []
    try:
        produced = _process(text, filename, line_offset, args, passes, weights, out)
        error = None
    except SpokeshaveError as e:
        error = e
    if not args.verify_diagnostics:
        for d in produced:  # what passes chose not to do (skipped layers...), as mlir-opt remarks
            print(d if d.loc is not None else f"{filename}: {d}", file=sys.stderr)
        if error is not None:
            _report(error)
        return error is not None
    if error is not None:
        produced.append(Diagnostic("error", error.message.split("\n", 1)[0], error.loc))
    failures = check(expected_in(text, filename, line_offset), produced, filename)
    for f in failures:
        print(f, file=sys.stderr)
    return bool(failures)


def _calibration(source: str | None, module) -> list | None:
    if source is None:
        return None
    if source.startswith("synthetic:"):
        n = source[len("synthetic:"):]
        if not (n.isascii() and n.isdigit()) or int(n) < 1:  # "²".isdigit(), but int("²") fails
            raise SpokeshaveError(f"--calibration={source}: expected synthetic:N with N a positive "
                                  f"integer, e.g. synthetic:4")
        return synthetic_batches(module, int(n))
    return load_batches(source, module)


def _report(e: SpokeshaveError) -> None:
    msg = str(e)
    first = msg.split("\n", 1)[0]
    print(msg if "error:" in first else f"error: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)
    try:
        if args.list_passes:
            for name, cls in sorted(PASSES.items()):
                print(f"{name}: {describe_options(cls)}")
            return 0
        # A bad pipeline is reported once, before any input is read (as mlir-opt does).
        passes = parse_pipeline(args.pass_pipeline)
        text, filename = read_source(args.input)  # bytes, decoded: a binary file is a located error
        weights = WeightStore.load(args.weights) if args.weights else None
        out = io.StringIO()
        failed = False
        chunks = [(text, 0)]
        if args.split_input_file:
            pos, line = 0, 0
            chunks = []
            for m in SPLIT_MARKER.finditer(text):
                chunks.append((text[pos:m.start()], line))
                line += text.count("\n", pos, m.end())
                pos = m.end()
            chunks.append((text[pos:], line))
        for i, (chunk, offset) in enumerate(chunks):  # as mlir-opt: a failing case does not stop the rest
            if i:
                out.write("// -----\n")
            failed |= _run_chunk(chunk, filename, offset, args, passes, weights, out)
        if args.output == "-":
            sys.stdout.write(out.getvalue())
        else:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(out.getvalue())
        return 1 if failed else 0
    except SpokeshaveError as e:
        _report(e)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
