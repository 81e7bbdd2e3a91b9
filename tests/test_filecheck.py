"""Runs the lit + FileCheck suite in tests/filecheck (MLIR-style pass and parser tests).

`pytest` therefore runs every `.mlir` test; on failure the lit output (with FileCheck's
annotated input dump) is shown. Run a single file directly with
`lit -v tests/filecheck/passes/cse.mlir`.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


SUITE = Path(__file__).resolve().parent / "filecheck"
OPT_SERVER_ENV = "SPOKESHAVE_OPT_SERVER"



def _run_lit(*paths: Path, server: str | None = None) -> subprocess.CompletedProcess:
    # `python -m lit` does not work with the PyPI lit (no lit/__main__.py); lit.main.main() is
    # what the `lit` console script calls.
    cmd = [sys.executable, "-c", "import sys, lit.main; sys.exit(lit.main.main())", "-v",
           *map(str, paths)]
    env = dict(os.environ)
    env.pop("LIT_OPTS", None)  # a stray LIT_OPTS=--filter=... must not make the suite vacuous
    env.pop(OPT_SERVER_ENV, None)
    if server is not None:
        env[OPT_SERVER_ENV] = server
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@contextlib.contextmanager
def _opt_server(tmp: Path):
    """A `spokeshave-opt` fork server (tests/filecheck/opt_server.py) for the suite's calls:
    yields its socket, or None when it did not come up (lit then starts every call afresh)."""
    # AF_UNIX paths are limited to ~107 bytes: a deep pytest tmp_path may not fit
    short = Path(tempfile.mkdtemp(prefix="spk-opt-", dir="/tmp" if os.path.isdir("/tmp") else None))
    sock = str((tmp if len(str(tmp / "opt.sock")) < 100 else short) / "opt.sock")
    env = dict(os.environ, PYTHONHASHSEED="0")  # what lit.cfg.py gives every call
    proc = subprocess.Popen([sys.executable, str(SUITE / "opt_server.py"), "serve", sock], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        yield sock if os.path.exists(sock) and proc.poll() is None else None
    finally:
        proc.kill()
        proc.wait()


def test_lit_filecheck_suite(tmp_path):
    with _opt_server(tmp_path) as server:
        proc = _run_lit(SUITE, server=server)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"lit failed (exit {proc.returncode}):\n{output}"
    assert "Passed" in output and "Failed" not in output, output


def test_the_opt_server_gives_what_a_fresh_process_gives(tmp_path):
    """Output, errors and exit status through the fork server equal a fresh spokeshave-opt's."""
    good = tmp_path / "good.mlir"
    good.write_text("func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n"
                    "  %0 = \"aten.neg\"(%x) : (tensor<2xf32>) -> tensor<2xf32>\n"
                    "  %1 = \"aten.neg\"(%0) : (tensor<2xf32>) -> tensor<2xf32>\n"
                    "  func.return %1 : tensor<2xf32>\n}\n")
    bad = tmp_path / "bad.mlir"
    bad.write_text("func.func @f( {\n")
    calls = [["-", "--pass-pipeline=cse"], [str(bad)]]  # stdin and stdout; an error and its status
    with _opt_server(tmp_path) as server:
        assert server is not None
        for argv in calls:
            runs = []
            for env in ({}, {OPT_SERVER_ENV: server}):
                runs.append(subprocess.run(
                    [sys.executable, "-S", str(SUITE / "opt_server.py"), *argv], input=good.read_text(),
                    capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0", **env),
                    timeout=120))
            fresh, forked = runs
            assert (forked.returncode, forked.stdout, forked.stderr) == \
                (fresh.returncode, fresh.stdout, fresh.stderr), argv


def test_suite_is_not_empty():
    """Each required file exists and holds CHECK-LABEL'd cases (at least 20 in all)."""
    required = ["passes/canonicalize.mlir", "passes/cse.mlir", "passes/dce.mlir",
                "passes/fold-constants.mlir", "passes/pipeline.mlir", "parser/roundtrip.mlir",
                "parser/errors.mlir", "dialect/spk/ops.mlir"]
    labels = 0
    for rel in required:
        text = (SUITE / rel).read_text()
        assert "// RUN:" in text, rel
        labels += text.count("CHECK-LABEL:")
    assert labels >= 20, labels
    for rel in ["dialect/spk/invalid.mlir", "dialect/aten/invalid.mlir", "dialect/builtin/invalid.mlir"]:
        text = (SUITE / rel).read_text()
        assert "--verify-diagnostics" in text and text.count("expected-error") >= 8, rel
