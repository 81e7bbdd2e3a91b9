"""Packaging: one import name, `spokeshave`, and nothing generic in site-packages.

The owner's folders (`compiler/`, `passes/`, `backends/`, `costmodel/`) install as
subpackages of `spokeshave` through setuptools' `package-dir`. These tests build the wheel
a non-editable `pip install .` would install and look inside, check that the package list
in pyproject.toml names every folder, and that a folder on `sys.path` cannot be imported
under its bare name (which would make a second copy with its own registries).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import spokeshave

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"spokeshave": "spokeshave", "spokeshave.compiler": "compiler",
         "spokeshave.passes": "passes", "spokeshave.backends": "backends",
         "spokeshave.costmodel": "costmodel"}


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def test_package_list_names_every_folder():
    cfg = _pyproject()["tool"]["setuptools"]
    assert cfg["package-dir"] == ROOTS
    found = set()
    for name, folder in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            if "__pycache__" not in rel.parts:
                found.add(".".join([name, *rel.parts]))
    assert sorted(cfg["packages"]) == sorted(found)


def test_wheel_holds_only_the_spokeshave_package(tmp_path):
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "Output", "tests", "benchmarks", "examples"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("spokeshave-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"spokeshave"}, tops
    for sub in ("compiler/dialect/spk.py", "compiler/numerics/quant.py", "passes/quantize.py",
                "backends/reference.py", "costmodel/roofline.py", "opt.py"):
        assert f"spokeshave/{sub}" in names, sub
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "spokeshave-opt = spokeshave.opt:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_a_folder_cannot_be_imported_under_its_bare_name():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for bare in ("compiler", "passes", "backends", "costmodel"):
        proc = subprocess.run([sys.executable, "-c", f"import {bare}"], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=120)
        assert proc.returncode != 0
        assert f"import spokeshave.{bare}, not {bare}" in proc.stderr


def test_the_front_door_wires_the_registries():
    assert {"reference"} <= set(spokeshave.BACKENDS)
    assert {"quantize", "cse", "lorc"} <= set(spokeshave.PASSES)
    assert "spk.linear_w4g" in spokeshave.OPS and "aten.linear" in spokeshave.OPS
    spokeshave.load_builtin()  # idempotent
    assert spokeshave.compile.__module__ == "spokeshave.api"
