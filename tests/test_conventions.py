"""The house rules, checked: imports run one way, one name lives in three places, every op
has its dialect tests, every file says what it is.

* Imports (every `import`, at any depth, relative ones resolved): the core (`compiler/`)
  imports nothing above it; `costmodel/` only the core; `passes/` and `backends/` the core
  and `costmodel/`, never each other; only the front door (`spokeshave/`) imports everything.
  Nothing imports the folders under their bare names.
* A registered pass `x-y` lives in `passes/x_y.py` and has `tests/filecheck/passes/x-y.mlir`
  (as xDSL does); every non-helper module in `passes/` is a registered pass.
* Every `spk` op round-trips in `tests/filecheck/dialect/spk/ops.mlir`, and every compressed
  linear has an error case in `invalid.mlir` beside it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import spokeshave
from spokeshave.compiler.dialect import COMPRESSED_LINEAR, OPS

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"compiler": "spokeshave.compiler", "costmodel": "spokeshave.costmodel",
          "passes": "spokeshave.passes", "backends": "spokeshave.backends",
          "spokeshave": "spokeshave"}
# What each layer may import from the project (its own layer is always allowed).
ALLOWED = {
    "compiler": set(),
    "costmodel": {"compiler"},
    "passes": {"compiler", "costmodel"},
    "backends": {"compiler", "costmodel"},
    "spokeshave": {"compiler", "costmodel", "passes", "backends"},
}
BARE = ("compiler", "passes", "backends", "costmodel")


def _modules(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def _package_of(path: Path, folder: str) -> str:
    rel = path.relative_to(REPO / folder).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    else:
        parts = parts[:-1]
    return ".".join([LAYERS[folder], *parts])


def _imports(path: Path, folder: str) -> list[tuple[int, str]]:
    return _imports_in(path.read_text(), _package_of(path, folder), str(path))


def _imports_in(source: str, package: str, filename: str = "<test>") -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, a module of `package`,
    nested ones included and relative ones resolved."""
    tree = ast.parse(source, filename)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from spokeshave.compiler import dialect` imports a submodule, too
            out += [(node.lineno, name)] + [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


def _layer(name: str) -> str | None:
    if name == "spokeshave":
        return "spokeshave"
    for layer, prefix in LAYERS.items():
        if layer != "spokeshave" and (name == prefix or name.startswith(prefix + ".")):
            return layer
    if name.startswith("spokeshave."):
        return "spokeshave"  # the front door's own modules
    return None


@pytest.mark.parametrize("folder", list(LAYERS))
def test_imports_run_one_way(folder):
    bad = []
    for path in _modules(folder):
        for line, name in _imports(path, folder):
            target = _layer(name)
            where = f"{path.relative_to(REPO)}:{line} imports {name}"
            if name.split(".")[0] in BARE:
                bad.append(where + " (a bare folder name)")
            elif target is not None and target != folder and target not in ALLOWED[folder]:
                bad.append(where)
    assert not bad, "\n".join(bad)


def test_the_import_walk_sees_nested_and_relative_imports():
    """The rule above would be vacuous if the walk missed imports inside functions."""
    source = "def f():\n    from ..passes import quantize\n    import spokeshave.backends\n"
    found = {n for _, n in _imports_in(source, "spokeshave.compiler")}
    assert {"spokeshave.passes", "spokeshave.passes.quantize", "spokeshave.backends"} <= found
    assert {_layer(n) for n in found} == {"passes", "backends"}


def test_every_pass_lives_in_its_module_and_has_filecheck_tests():
    modules = set()
    for name, cls in spokeshave.PASSES.items():
        module = name.replace("-", "_")
        assert cls.__module__ == f"spokeshave.passes.{module}", (name, cls.__module__)
        assert cls.__doc__, name
        text = (REPO / "tests/filecheck/passes" / f"{name}.mlir").read_text()
        assert "// RUN:" in text and "-LABEL:" in text, name
        modules.add(module)
    files = {p.stem for p in (REPO / "passes").glob("*.py") if not p.stem.startswith("_")}
    assert files == modules, f"modules that register no pass: {sorted(files - modules)}"


def test_every_spk_op_has_dialect_tests():
    ops_text = (REPO / "tests/filecheck/dialect/spk/ops.mlir").read_text()
    invalid = (REPO / "tests/filecheck/dialect/spk/invalid.mlir").read_text()
    for name, record in OPS.items():
        assert record.summary, name
        if name.startswith("spk."):
            assert f'"{name}"' in ops_text, f"{name} has no round-trip case in ops.mlir"
        if COMPRESSED_LINEAR in record.traits:
            assert f'op "{name}"' in invalid, f"{name} has no error case in invalid.mlir"


def test_every_file_has_a_module_docstring():
    missing = []
    for folder in (*LAYERS, "tests", "benchmarks", "examples"):
        for path in _modules(folder):
            if path.name == "lit.cfg.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            if ast.get_docstring(tree) is None and tree.body:
                missing.append(str(path.relative_to(REPO)))
    assert not missing, missing
