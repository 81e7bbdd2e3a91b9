"""`spokeshave-opt` as users run it: `python -m spokeshave.opt` in a subprocess.

Exit codes, `FILE:LINE:COL: error:` diagnostics without tracebacks, stdin, weights files,
calibration sources (`--calibration`), `--print-ir-after-all`, `--timing`, `-o`; and the
textual pipeline round trip in Python.
The pass behaviour itself is tested by the FileCheck suite (tests/filecheck).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spokeshave import opt
from spokeshave.compiler.passmanager import parse_pipeline, print_pipeline

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
func.func @forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "l0.w"}) -> tensor<4x16xf32> {
  %0 = "aten.clone"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  %2 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  %3 = "aten.add.Tensor"(%1, %2) : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  return %3 : tensor<4x16xf32>
}
"""

# What canonicalize,cse,dce makes of GOOD: the clone folds, the two linears merge.
OPTIMIZED = """\
func.func @forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "l0.w"}) -> tensor<4x16xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  %1 = "aten.add.Tensor"(%0, %0) : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  return %1 : tensor<4x16xf32>
}
"""

MALFORMED = """\
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "aten.relu"(%y) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}
"""


def run_opt(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spokeshave.opt", *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1, each fragment in stderr, no Python traceback anywhere."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    for f in fragments:
        assert f in proc.stderr, (f, proc.stderr)


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    p = tmp_path / "model.mlir"
    p.write_text(GOOD)
    return p


# ----------------------------------------------------------------------------- errors


def test_malformed_ir_reports_file_line_col_without_traceback(tmp_path):
    src = tmp_path / "bad.mlir"
    src.write_text(MALFORMED)
    proc = run_opt(str(src), "--pass-pipeline=cse")
    assert_clean_error(proc, f"{src}:2:20: error: use of undefined value '%y'")
    lines = proc.stderr.splitlines()
    # the offending line and a caret under the column, as mlir-opt prints them
    assert lines[1] == '  %0 = "aten.relu"(%y) : (tensor<4xf32>) -> tensor<4xf32>'
    assert lines[2] == " " * 19 + "^"
    assert proc.stdout == ""


def test_unknown_pass_lists_known_passes(good_file):
    proc = run_opt(str(good_file), "--pass-pipeline=canonicalize,frobnicate")
    assert_clean_error(proc, "error: unknown pass 'frobnicate'; known passes: ")
    known = proc.stderr.split("known passes:", 1)[1]
    for name in ("canonicalize", "cse", "dce", "fold-constants"):
        assert name in known
    assert proc.stdout == ""


@pytest.mark.parametrize("pipeline, message", [
    ("canonicalize{max-rewrites=lots}", "option 'max-rewrites' expects int, got 'lots'"),
    ("canonicalize{max-rewrites=-3}", "option 'max-rewrites' must be >= 0"),
    ("fold-constants{max-new-elements=1.5}", "option 'max-new-elements' expects int, got '1.5'"),
    ("cse{aggressive=true}", "pass 'cse' has no option 'aggressive'; its options: (no options)"),
    ("canonicalize{max_rewrite=1}", "its options: max-rewrites=<int >= 0> (default 0)"),
    ("cse dce", "cannot parse pipeline element 'cse dce'"),
])
def test_bad_pipeline_options(good_file, pipeline, message):
    """Bad option values and names are PipelineErrors; checked in-process (fast), then one
    of them through the real CLI below."""
    from spokeshave.compiler.errors import PipelineError

    with pytest.raises(PipelineError) as e:
        parse_pipeline(pipeline)
    assert message in str(e.value)


def test_bad_option_value_cli(good_file):
    proc = run_opt(str(good_file), "-p", "canonicalize{max-rewrites=lots}")
    assert_clean_error(proc, "error: pass 'canonicalize': option 'max-rewrites' expects int, got 'lots'")


def test_missing_input_file(tmp_path):
    missing = tmp_path / "nope.mlir"
    proc = run_opt(str(missing), "-p", "cse")
    assert_clean_error(proc, f"{missing}: error: cannot read input: No such file or directory")


def test_errors_in_process_exit_codes(tmp_path, capsys, monkeypatch):
    """The same contract through `main()` directly (what the console script calls)."""
    src = tmp_path / "bad.mlir"
    src.write_text(MALFORMED)
    assert opt.main([str(src)]) == 1
    err = capsys.readouterr().err
    assert f"{src}:2:20: error: use of undefined value" in err and "Traceback" not in err
    assert opt.main([str(tmp_path / "missing.mlir")]) == 1
    assert "cannot read input" in capsys.readouterr().err


def test_split_input_file_reports_each_case_and_continues(tmp_path, capsys):
    src = tmp_path / "cases.mlir"
    src.write_text(MALFORMED + "// -----\n" + GOOD + "// -----\n" + MALFORMED)
    assert opt.main([str(src), "--split-input-file", "-p", "canonicalize,cse,dce"]) == 1
    out, err = capsys.readouterr()
    # errors carry absolute line numbers in the whole file, one per failing case
    assert f"{src}:2:20: error: use of undefined value" in err
    n = MALFORMED.count("\n") + 1 + GOOD.count("\n") + 1
    assert f"{src}:{n + 2}:20: error: use of undefined value" in err
    assert err.count("error:") == 2
    assert out == "// -----\n" + OPTIMIZED + "// -----\n"


def test_verify_roundtrip_detects_a_printer_that_is_not_a_fixed_point(good_file, capsys, monkeypatch):
    calls = []

    def unstable_print(module, debug_info=False):
        from spokeshave.compiler.printer import print_module

        calls.append(1)
        text = print_module(module, debug_info)
        return text if len(calls) == 1 else text.replace("%x", "%y")

    monkeypatch.setattr(opt, "print_module", unstable_print)
    assert opt.main([str(good_file), "--verify-roundtrip"]) == 1
    err = capsys.readouterr().err
    assert "error: the printed IR does not round-trip" in err
    assert "--- printed" in err and "+++ reparsed+printed" in err and "+func.func @forward(%y" in err


# ----------------------------------------------------------------------------- inputs


def test_stdin(good_file):
    proc = run_opt("-", "--pass-pipeline=canonicalize,cse,dce", stdin=GOOD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == OPTIMIZED


def test_stdin_is_the_default_input(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(MALFORMED))
    assert opt.main(["-p", "cse"]) == 1  # no input argument: stdin
    err = capsys.readouterr().err
    assert "<stdin>:2:20: error: use of undefined value '%y'" in err and "Traceback" not in err


def test_weights_file(tmp_path, good_file):
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({"l0.w": torch.randn(16, 8)}, str(good))
    proc = run_opt(str(good_file), "-p", "fold-constants,canonicalize,cse,dce", "--weights", str(good))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == OPTIMIZED

    # the weights are really read: a tensor of the wrong shape is a verifier error
    wrong = tmp_path / "wrong.safetensors"
    save_file({"l0.w": torch.randn(8, 16)}, str(wrong))
    proc = run_opt(str(good_file), "-p", "cse", "--weights", str(wrong))
    assert_clean_error(proc, "parameter 'l0.w' is tensor<16x8xf32> in the IR but the weight store "
                             "holds (8, 16) torch.float32")

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00not json, not safetensors")
    proc = run_opt(str(good_file), "-p", "cse", "--weights", str(corrupt))
    assert_clean_error(proc, f"{corrupt}: error: cannot read weights",
                       "expected a safetensors file")


def test_missing_weights_file(tmp_path, good_file, capsys):
    absent = tmp_path / "absent.safetensors"
    assert opt.main([str(good_file), "-p", "cse", "--weights", str(absent)]) == 1
    err = capsys.readouterr().err
    assert f"{absent}: error: cannot read weights" in err and "Traceback" not in err


def test_weights_used_by_fold_constants(tmp_path, capsys):
    """In-process: fold-constants computes from the file's data, not synthetic data."""
    from safetensors.torch import save_file

    from spokeshave.compiler.parser import parse_module
    from spokeshave.compiler.passmanager import PassContext, PassManager
    from spokeshave.compiler.weights import WeightStore

    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    path = tmp_path / "w.safetensors"
    save_file({"w": w}, str(path))
    text = """\
func.func @forward(%w: tensor<2x3xf32> {spk.param = "w"}) -> tensor<3x2xf32> {
  %0 = "aten.t"(%w) : (tensor<2x3xf32>) -> tensor<3x2xf32>
  return %0 : tensor<3x2xf32>
}
"""
    m = parse_module(text)
    ctx = PassContext(weights=WeightStore.load(str(path)))
    PassManager.parse("fold-constants,dce").run(m, ctx)
    assert list(ctx.weights) == ["folded.t"]
    torch.testing.assert_close(ctx.weights["folded.t"], w.t())


# ----------------------------------------------------------------------------- calibration

# A LayerNorm feeding a linear (what `smooth` rewrites, and refuses to without calibration),
# with a second input so a batch can lack one.
SMOOTHABLE = """\
func.func @forward(%x: tensor<2x4x8xf32>, %r: tensor<2x4x16xf32>,
                   %g: tensor<8xf32> {spk.param = "ln.weight"},
                   %w: tensor<16x8xf32> {spk.param = "fc.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  %2 = "aten.add.Tensor"(%1, %r) : (tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %2 : tensor<2x4x16xf32>
}
"""


@pytest.fixture
def smoothable(tmp_path: Path) -> Path:
    p = tmp_path / "smoothable.mlir"
    p.write_text(SMOOTHABLE)
    return p


def test_calibration_synthetic(smoothable, capsys):
    # without calibration `smooth` refuses; with synthetic batches it rewrites the norm
    assert opt.main([str(smoothable), "-p", "smooth"]) == 1
    assert "error: pass 'smooth' needs calibration data" in capsys.readouterr().err
    assert opt.main([str(smoothable), "-p", "smooth", "--calibration=synthetic:2"]) == 0
    out = capsys.readouterr().out
    assert '{spk.param = "ln.weight.smoothed"}' in out and '"ln.weight"}' not in out


@pytest.mark.parametrize("source", ["synthetic:0", "synthetic:x", "synthetic:", "synthetic:-1",
                                    "synthetic:\u00b2"])
def test_calibration_synthetic_bad_count(smoothable, capsys, source):
    assert opt.main([str(smoothable), "-p", "smooth", f"--calibration={source}"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"error: --calibration={source}: expected synthetic:N with N a "
                                f"positive integer, e.g. synthetic:4"]


def test_calibration_synthetic_bad_count_subprocess(smoothable):
    proc = run_opt(str(smoothable), "-p", "smooth", "--calibration=synthetic:x")
    assert_clean_error(proc, "error: --calibration=synthetic:x: expected synthetic:N")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


def test_calibration_file(tmp_path, smoothable):
    from safetensors.torch import save_file

    good = tmp_path / "calib.safetensors"
    save_file({f"{b}.{i}": torch.randn(2, 4, 8 if i == 0 else 16) for b in range(3) for i in range(2)},
              str(good))
    proc = run_opt(str(smoothable), "-p", "smooth", "--calibration", str(good))
    assert proc.returncode == 0, proc.stderr
    assert '{spk.param = "ln.weight.smoothed"}' in proc.stdout

    # the file's tensors are really the batches: one of the wrong shape is refused
    wrong = tmp_path / "wrong.safetensors"
    save_file({"0.0": torch.randn(3, 8), "0.1": torch.randn(2, 4, 16)}, str(wrong))
    proc = run_opt(str(smoothable), "-p", "smooth", "--calibration", str(wrong))
    assert_clean_error(proc, "calibration batch 0, input 0 is (3, 8) torch.float32, but the "
                             "compiled model takes tensor<2x4x8xf32>")


@pytest.mark.parametrize("tensors, message", [
    ({"0.0": (2, 4, 8), "0.1": (2, 4, 16), "x": (2, 4, 8)},
     "error: calibration tensor 'x' is not named <batch>.<input index> with an index below 2"),
    ({"0.0": (2, 4, 8), "0.input": (2, 4, 16)},
     "error: calibration tensor '0.input' is not named <batch>.<input index>"),
    ({"0.0": (2, 4, 8), "0.1": (2, 4, 16), "0.2": (2, 4, 8)},
     "error: calibration tensor '0.2' is not named <batch>.<input index> with an index below 2"),
    ({"0.0": (2, 4, 8), "0.1": (2, 4, 16), "1.0": (2, 4, 8)},
     "error: calibration batch 1 lacks input(s) [1]"),
])
def test_calibration_file_errors(tmp_path, smoothable, capsys, tensors, message):
    from safetensors.torch import save_file

    path = tmp_path / "calib.safetensors"
    save_file({k: torch.randn(shape) for k, shape in tensors.items()}, str(path))
    assert opt.main([str(smoothable), "-p", "smooth", "--calibration", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.splitlines()[0].startswith(f"{path}: {message}"), err


def test_calibration_file_unreadable(tmp_path, smoothable):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00not json, not safetensors")
    proc = run_opt(str(smoothable), "-p", "smooth", "--calibration", str(corrupt))
    assert_clean_error(proc, f"{corrupt}: error: cannot read calibration batches",
                       "expected a safetensors file with tensors named <batch>.<input index>")
    absent = tmp_path / "absent.safetensors"
    proc = run_opt(str(smoothable), "-p", "smooth", "--calibration", str(absent))
    assert_clean_error(proc, f"{absent}: error: cannot read calibration batches")


# ----------------------------------------------------------------------------- outputs


def test_print_ir_after_all_and_timing(good_file):
    proc = run_opt(str(good_file), "-p", "canonicalize,cse,dce", "--print-ir-after-all", "--timing")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == OPTIMIZED
    err = proc.stderr
    headers = [line for line in err.splitlines() if line.startswith("// -----// IR Dump After")]
    assert headers == ["// -----// IR Dump After canonicalize //----- //",
                       "// -----// IR Dump After cse //----- //",
                       "// -----// IR Dump After dce //----- //"]
    # the dump after cse shows one linear
    after_cse = err.split("// -----// IR Dump After cse //----- //\n", 1)[1].split("// -----//", 1)[0]
    assert after_cse.count('"aten.linear"') == 1
    # timing report: a total and one line per pass, then the pass statistics
    assert "Pass execution timing report" in err
    assert "Total:" in err
    timed = [line.split()[-1] for line in err.splitlines() if " ms (" in line and "%)" in line]
    assert timed == ["canonicalize", "cse", "dce"], err
    assert "cse: 1 ops removed" in err
    assert "Pass statistics" in err and "canonicalize: " in err


def test_output_file_list_passes_and_debuginfo(tmp_path, good_file, capsys):
    out = tmp_path / "out.mlir"
    assert opt.main([str(good_file), "-p", "canonicalize,cse,dce", "-o", str(out)]) == 0
    assert out.read_text() == OPTIMIZED
    assert capsys.readouterr().out == ""

    assert opt.main(["--list-passes"]) == 0
    listing = capsys.readouterr().out
    assert "canonicalize: max-rewrites=<int >= 0> (default 0)" in listing
    assert "cse: (no options)" in listing
    assert "fold-constants: max-new-elements=<int >= 0> (default 65536)" in listing

    # locations print with --print-debuginfo and survive the round trip
    assert opt.main([str(good_file), "--print-debuginfo", "--verify-roundtrip"]) == 0
    text = capsys.readouterr().out
    assert f'"aten.linear"(%0, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32> ' \
           f'loc("{good_file}":3:3)' in text
    assert text.rstrip().endswith(f'}} loc("{good_file}":1:1)')


def test_console_script_when_installed(good_file):
    import shutil

    exe = shutil.which("spokeshave-opt")
    if exe is None:
        pytest.skip("spokeshave-opt is not on PATH (pip install -e . installs it)")
    proc = subprocess.run([exe, str(good_file), "-p", "canonicalize,cse,dce"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == OPTIMIZED


# ----------------------------------------------------------------------------- pipeline text


@pytest.mark.parametrize("text", [
    "",
    "cse",
    "canonicalize,cse,dce",
    "canonicalize{max-rewrites=100},cse",
    "fold-constants{max-new-elements=1024},dce",
    "fold-constants,canonicalize,cse,dce,cse",
])
def test_pipeline_text_round_trip(text):
    passes = parse_pipeline(text)
    assert print_pipeline(passes) == text
    assert parse_pipeline(print_pipeline(passes)) == passes


@pytest.mark.parametrize("text, canonical", [
    ("builtin.module(cse,dce)", "cse,dce"),
    ("builtin.module(canonicalize{max-rewrites=5},cse)", "canonicalize{max-rewrites=5},cse"),
    (" canonicalize , cse ", "canonicalize,cse"),
    ("canonicalize{max_rewrites=7}", "canonicalize{max-rewrites=7}"),  # `_` and `-` alike
    ("canonicalize{max-rewrites=0}", "canonicalize"),  # defaults are not printed
    ("fold-constants{max-new-elements=\"16\"}", "fold-constants{max-new-elements=16}"),
])
def test_pipeline_text_normalises(text, canonical):
    assert print_pipeline(parse_pipeline(text)) == canonical


def test_anchored_pipeline_through_the_cli(good_file, capsys):
    assert opt.main([str(good_file), "--pass-pipeline=builtin.module(canonicalize,cse,dce)"]) == 0
    assert capsys.readouterr().out == OPTIMIZED


# ----------------------------------------------------------------------------- --verify-diagnostics

ANNOTATED = """\
func.func @a(%x: tensor<4x8xf32>, %w: tensor<16x9xf32> {spk.param = "w"}) -> tensor<4x16xf32> {
  // expected-error@+1 {{input's last dim 8 != weight's in-features 9}}
  %0 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x9xf32>) -> tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}
// -----
func.func @b(%x: tensor<4x6xf32>, %w: tensor<8x6xf32> {spk.param = "w"}) -> tensor<4x8xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<4x6xf32>, tensor<8x6xf32>) -> tensor<4x8xf32> // expected-remark {{in-features 6 not divisible by 4}}
  return %0 : tensor<4x8xf32>
}
"""


def _verify_diagnostics(tmp_path, text: str, capsys, *extra: str) -> tuple[int, str]:
    path = tmp_path / "cases.mlir"
    path.write_text(text)
    rc = opt.main([str(path), "--split-input-file", "--verify-diagnostics", "-p", "sparsify", *extra])
    return rc, capsys.readouterr().err


def test_verify_diagnostics_matches_errors_and_remarks_at_their_lines(tmp_path, capsys):
    rc, err = _verify_diagnostics(tmp_path, ANNOTATED, capsys)
    assert rc == 0 and err == ""


def test_verify_diagnostics_reports_a_missing_and_an_unexpected_diagnostic(tmp_path, capsys):
    moved = ANNOTATED.replace("expected-error@+1", "expected-error@+2")
    rc, err = _verify_diagnostics(tmp_path, moved, capsys)
    assert rc == 1
    assert "cases.mlir:2:3: error: expected error \"input's last dim 8" in err and "at line 4 was not produced" in err
    assert "cases.mlir:3:3: error: unexpected error: verification failed: op \"aten.linear\"" in err
    silent = ANNOTATED.replace(" // expected-remark {{in-features 6 not divisible by 4}}", "")
    rc, err = _verify_diagnostics(tmp_path, silent, capsys)
    assert rc == 1 and "cases.mlir:8:3: error: unexpected remark: sparsify: skipped layer 'w'" in err


def test_verify_diagnostics_pins_a_column(tmp_path, capsys):
    pinned = ANNOTATED.replace("expected-error@+1 {{", "expected-error@+1:3 {{")
    assert _verify_diagnostics(tmp_path, pinned, capsys)[0] == 0
    wrong = ANNOTATED.replace("expected-error@+1 {{", "expected-error@+1:4 {{")
    rc, err = _verify_diagnostics(tmp_path, wrong, capsys)
    assert rc == 1 and "at line 3:4 was not produced" in err
