"""`benchmarks/speed_gpu.py --smoke`: the GPU benchmark's code paths on the CPU, under the
Triton interpreter at tiny shapes, so a session that draws a GPU runs a script that works.
Its figures here are not speeds (numpy runs the kernels); what is checked is that every row
builds and runs, and that each spokeshave kernel agrees with the reference backend's
emulation of the same compressed linear, the column that catches a kernel bug on a GPU."""
from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_speed_gpu_smoke_runs_every_gemm_row():
    script = os.path.join(ROOT, "benchmarks", "speed_gpu.py")
    out = subprocess.run([sys.executable, script, "--smoke", "--parts", "gemm"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()
            if re.match(r"\| 96 x 64 \| \d+ \|", line)]
    by_row: dict[str, list[list[str]]] = {}
    for cells in rows:
        by_row.setdefault(cells[2].strip(), []).append([c.strip() for c in cells])
    for scheme in ("w4g", "w8", "w8a8", "fp8", "2:4"):
        runs = by_row[f"spokeshave {scheme}"]
        assert len(runs) == 2  # batches 1 and 5
        for cells in runs:
            assert float(cells[3]) > 0, cells                  # a time was measured
            assert float(cells[7]) <= 1e-5, cells              # the kernel matches the emulation
    # torch's 2:4 kernels need CUDA: the row says why it is n/a instead of failing the run
    assert all("n/a" in cells[8] for cells in by_row["torch 2:4 semi-structured"])
