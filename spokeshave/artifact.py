"""Compiled-model artifacts: `save(cm, "out.spk")` writes a directory, `load("out.spk")`
gives back a callable that needs no model code.

    out.spk/
      manifest.json        format version, library versions, pipeline, backend, target,
                           input specs (dynamic dims and their ranges), calling convention,
                           and the sha256 of every other file
      graph.mlir           the compiled IR (MLIR generic syntax)
      weights.safetensors  the parameters the IR uses, compressed (packed) as the passes left them
      kernels/             the generated kernel sources, for reading (`load` regenerates them)

Loading never executes anything from the artifact: no pickle, no shared object. The IR is
parsed and verified, the weights are read by safetensors and checked against the IR's
parameter types, and the backend builds from the IR on this machine; the C++ it generates
is what `kernels/` holds, so it hits the local kernel cache after the first load.

Every check names the file and what failed: a missing file, a sha256 that differs from the
manifest (a changed, truncated or corrupted file), a format version newer than this
library reads, a weight whose shape or dtype is not what the IR says.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from typing import Any

import torch

from .compiler.errors import SpokeshaveError
from .compiler.ir import Module, TensorType
from .compiler.parser import parse_module
from .compiler.printer import print_module
from .compiler.signature import InputSpec
from .compiler.weights import WeightStore, sha256_file

FORMAT = "spokeshave-artifact"
FORMAT_VERSION = 1
MANIFEST, GRAPH, WEIGHTS, KERNELS = "manifest.json", "graph.mlir", "weights.safetensors", "kernels"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        out["spokeshave"] = version("spokeshave")
    except PackageNotFoundError:
        out["spokeshave"] = "unknown"
    return out


def _dump_spec(spec: Any) -> str | None:
    if spec is None:
        return None
    try:
        return torch.utils._pytree.treespec_dumps(spec)
    except Exception:  # a pytree node type that does not serialise: outputs come back flat
        return None


def save(cm: Any, path: str, *, source: dict[str, Any] | None = None) -> str:
    """Write `cm` (a CompiledModel) as an artifact directory at `path` (replaced if it is an
    artifact already; refused if it is anything else). `source` (what was compiled, how) is
    recorded in the manifest as given. Returns `path`."""
    used = {n: cm.weights[n] for n in cm.module.entry.params()}
    return write_artifact(path, cm.module, WeightStore(used), cm.executable.sources, {
        "pipeline": cm.pipeline, "backend": cm.backend, "target": cm.target.spec(),
        "inputs": cm.inputs, "in_spec": cm.in_spec, "out_spec": cm.out_spec, "source": source})


def write_artifact(path: str, module: Module, weights: WeightStore | str,
                   sources: dict[str, str], meta: dict[str, Any]) -> str:
    """The artifact writer `save` and streaming compilation share: `weights` is a store or
    the path of a safetensors file already written (moved in); `meta` holds pipeline,
    backend, target, inputs (InputSpecs), in_spec, out_spec and source."""
    if os.path.exists(path) and not os.path.isfile(os.path.join(path, MANIFEST)):
        raise SpokeshaveError(f"{path}: exists and is not a spokeshave artifact; choose another "
                              f"output path (nothing was written)")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".spk-", dir=parent)
    try:
        with open(os.path.join(tmp, GRAPH), "w") as f:
            f.write(print_module(module))
        if isinstance(weights, str):
            shutil.move(weights, os.path.join(tmp, WEIGHTS))
        else:
            weights.save(os.path.join(tmp, WEIGHTS))
        os.makedirs(os.path.join(tmp, KERNELS))
        for name, text in sources.items():
            if name != "module.mlir":
                with open(os.path.join(tmp, KERNELS, os.path.basename(name)), "w") as f:
                    f.write(text)
        files = sorted(os.path.relpath(os.path.join(d, n), tmp)
                       for d, _, names in os.walk(tmp) for n in names)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "versions": _versions(),
            "pipeline": meta["pipeline"], "backend": meta["backend"], "target": meta["target"],
            "inputs": [s.to_json() for s in meta["inputs"]],
            "in_spec": _dump_spec(meta["in_spec"]), "out_spec": _dump_spec(meta["out_spec"]),
            "source": meta.get("source") or {},
            "files": {name: sha256_file(os.path.join(tmp, name)) for name in files},
        }
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)  # the artifact appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest, checked: format, version, and every listed file's sha256."""
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise SpokeshaveError(f"{path}: not a directory; a spokeshave artifact is a directory "
                              f"written by `spokeshave compile ... -o OUT.spk`")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise SpokeshaveError(f"{mpath}: missing; this directory is not a spokeshave artifact") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpokeshaveError(f"{mpath}: not valid JSON ({e}); the manifest is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SpokeshaveError(f"{mpath}: not a spokeshave manifest (no \"format\": \"{FORMAT}\")")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise SpokeshaveError(f"{mpath}: format_version is {version!r}, not an integer")
    if version > FORMAT_VERSION:
        raise SpokeshaveError(f"{mpath}: format version {version} is newer than this spokeshave "
                              f"reads ({FORMAT_VERSION}); upgrade spokeshave to load it")
    files = manifest.get("files")
    if not isinstance(files, dict) or GRAPH not in files or WEIGHTS not in files:
        raise SpokeshaveError(f"{mpath}: \"files\" must list {GRAPH} and {WEIGHTS} with their sha256")
    for name, digest in files.items():
        fpath = os.path.join(path, name)
        if os.path.isabs(name) or ".." in name.split("/"):
            raise SpokeshaveError(f"{mpath}: file entry '{name}' points outside the artifact")
        if not os.path.isfile(fpath):
            raise SpokeshaveError(f"{fpath}: missing; the manifest lists it (the artifact is "
                                  f"incomplete: copy it again)")
        got = sha256_file(fpath)
        if got != digest:
            raise SpokeshaveError(f"{fpath}: sha256 check failed: the file's is {got[:16]}..., "
                                  f"the manifest's {str(digest)[:16]}...; the file was changed, "
                                  f"truncated or corrupted (copy the artifact again)")
    return manifest


def _load_spec(text: Any, what: str, mpath: str) -> Any:
    if text is None:
        return None
    try:
        return torch.utils._pytree.treespec_loads(text)
    except Exception:  # a node type not registered here (its library is not imported)
        if what == "in_spec":
            raise SpokeshaveError(f"{mpath}: in_spec does not load here; the inputs' structure "
                                  f"uses a type this process does not know") from None
        return None  # outputs come back as a flat tuple


def load(path: str, backend: str | None = None) -> Any:
    """An artifact as a callable `CompiledModel`, built for this machine by `backend`
    (default: the one it was compiled for, if it fits here, else the reference backend)."""
    from .api import _compile, _plan

    manifest = read_manifest(path)
    gpath, wpath = os.path.join(path, GRAPH), os.path.join(path, WEIGHTS)
    with open(gpath) as f:
        module = parse_module(f.read(), gpath)
    weights = WeightStore.load(wpath)
    for name, arg in module.entry.params().items():
        if name not in weights:
            raise SpokeshaveError(f"{wpath}: lacks tensor '{name}', which {GRAPH} uses")
        t, want = weights[name], arg.type
        if isinstance(want, TensorType) and (tuple(t.shape) != want.shape
                                             or t.dtype != want.torch_dtype):
            raise SpokeshaveError(f"{wpath}: tensor '{name}' is {tuple(t.shape)} {t.dtype}, but "
                                  f"{GRAPH} declares {want}")
    mpath = os.path.join(path, MANIFEST)
    try:
        inputs = [InputSpec.from_json(s) for s in manifest["inputs"]]
    except (KeyError, TypeError, ValueError) as e:
        raise SpokeshaveError(f"{mpath}: \"inputs\" is malformed ({e})") from None
    from .compiler.backend import BACKENDS
    from .compiler.target import Target

    chosen = backend or manifest.get("backend", "reference")
    if chosen not in BACKENDS or BACKENDS[chosen].misfit(Target.host()) is not None:
        chosen = "reference" if backend is None else chosen
    be, target, pm = _plan(chosen, None, "")
    cm = _compile(module, weights, pm, be, target, None, _load_spec(manifest.get("in_spec"),
                  "in_spec", mpath), _load_spec(manifest.get("out_spec"), "out_spec", mpath),
                  None, None, True, False, inputs)
    cm.pipeline = manifest.get("pipeline", "")  # what made it; the load ran no passes
    cm.manifest = manifest
    return cm
