"""Runs the lit + FileCheck suite in tests/filecheck (MLIR-style pass and parser tests).

`pytest` therefore runs every `.mlir` test; on failure the lit output (with FileCheck's
annotated input dump) is shown. Run a single file directly with
`lit -v tests/filecheck/passes/cse.mlir`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


SUITE = Path(__file__).resolve().parent / "filecheck"



def _run_lit(*paths: Path) -> subprocess.CompletedProcess:
    # `python -m lit` does not work with the PyPI lit (no lit/__main__.py); lit.main.main() is
    # what the `lit` console script calls.
    cmd = [sys.executable, "-c", "import sys, lit.main; sys.exit(lit.main.main())", "-v",
           *map(str, paths)]
    env = dict(os.environ)
    env.pop("LIT_OPTS", None)  # a stray LIT_OPTS=--filter=... must not make the suite vacuous
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_lit_filecheck_suite():
    proc = _run_lit(SUITE)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"lit failed (exit {proc.returncode}):\n{output}"
    assert "Passed" in output and "Failed" not in output, output


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
