"""The system C++ compiler, the on-disk kernel cache, and loading what it builds.

A model compiles to translation units (one per fused group, deduplicated by text), built
in parallel into objects and linked into one shared object per model, which `ctypes`
loads. Kernels take raw pointers and sizes through a C ABI, so no torch header is ever
included: a unit compiles in well under a second instead of tens of seconds.

The cache (`$SPOKESHAVE_CACHE_DIR`, else `~/.cache/spokeshave/cpu`) keys every entry by a
hash of the source, the compiler's path and version, the flags and the target's ISA
features (`Target.key()`), so a hit can never be code built for another CPU. Entries are
written to a temporary name and renamed into place, with a checksum beside them, under a
per-key file lock: two processes compiling the same unit wait for each other instead of
both writing, and a half-written or corrupted entry is never loaded (its checksum does
not match; it is rebuilt).

A unit that fails to compile is reported (`UnitFailure`, with the path of the kept
compiler log) and left out of the link; the caller runs that group another way. A
missing compiler is a `ToolchainError` that says how to install one. With GCC, the
system headers every unit includes are one precompiled header in the cache
(`SYSTEM_HEADERS`): parsing them was half of a unit's compile.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.target import Target
from spokeshave.compiler.weights import sha256_file

CACHE_ENV = "SPOKESHAVE_CACHE_DIR"
# `-fno-math-errno` lets sqrt/exp vectorise. `-fno-trapping-math` lets GCC if-convert the
# float selects of the prelude's polynomials (clamps, NaN/inf cases) on AVX2, where it has
# no mask registers: without it every loop calling spk_exp/spk_erf stays scalar there
# (GELU 7x slower than torch's on an AVX2 EPYC); it changes no result, only what may raise
# floating-point exception flags, which nothing reads. No -ffast-math: results must stay
# IEEE so they match the reference within the stated tolerances (and NaN/inf propagate).
BASE_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
              "-fno-plt")
# x86 feature names of `Target` -> the GCC/Clang flag that enables them
_FEATURE_FLAGS = {
    "sse4_2": "-msse4.2", "avx": "-mavx", "avx2": "-mavx2", "fma": "-mfma", "f16c": "-mf16c",
    "bmi2": "-mbmi2", "avx512f": "-mavx512f", "avx512bw": "-mavx512bw", "avx512dq": "-mavx512dq",
    "avx512vl": "-mavx512vl", "avx512_vnni": "-mavx512vnni", "avx_vnni": "-mavxvnni",
    "avx512_bf16": "-mavx512bf16", "amx_tile": "-mamx-tile", "amx_int8": "-mamx-int8",
}


class ToolchainError(SpokeshaveError):
    """The C++ toolchain cannot be used at all (no compiler, the link failed)."""


@dataclass(frozen=True)
class Compiler:
    path: str
    version: str   # first line of `--version`: part of every cache key


@dataclass(frozen=True)
class UnitFailure:
    """A translation unit that did not compile: its name and the kept compiler log."""

    unit: str
    log: str
    first_error: str


@dataclass
class Library:
    """A loaded shared object and what went into it."""

    path: str
    cdll: ctypes.CDLL
    units: tuple[str, ...]          # units linked in
    failures: tuple[UnitFailure, ...]
    hits: int                       # units (and the link) served from the cache
    compiled: int                   # units compiled now


def cache_dir() -> str:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "spokeshave", "cpu")
    os.makedirs(root, exist_ok=True)
    return root


def find_compiler() -> Compiler:
    """`$CXX`, else g++, c++ or clang++ on PATH."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return _probe(path)
    raise ToolchainError(
        f"no C++ compiler found ({' or '.join(candidates)} not on PATH): install one "
        f"(`apt install g++` or `conda install gxx`), or set CXX to its path; spokeshave runs "
        f"the model on the reference backend meanwhile")


@lru_cache(maxsize=8)
def _probe(path: str) -> Compiler:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"the C++ compiler {path} does not run ({e}): fix it or set CXX") from None
    if out.returncode != 0:
        raise ToolchainError(f"`{path} --version` failed: {out.stderr.strip()[:200]}")
    return Compiler(path, out.stdout.splitlines()[0].strip() if out.stdout else "unknown")


def target_flags(target: Target) -> tuple[str, ...]:
    """Code-generation flags for `target`: `-march=native` for this machine, else one flag
    per ISA feature the target declares (compiling for another CPU)."""
    # GCC defaults to 256-bit vectors even where AVX-512 exists; our loops are long and
    # regular, where 512-bit pays
    wide = ("-mprefer-vector-width=512",) if "avx512f" in target.features else ()
    if target == Target.host():
        return ("-march=native", *wide)
    return (*(_FEATURE_FLAGS[f] for f in sorted(target.features) if f in _FEATURE_FLAGS), *wide)


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock on `path + '.lock'` (waits for another process holding it)."""
    fd = os.open(path + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _valid(entry: str) -> bool:
    """The entry exists and matches the checksum written after it was complete."""
    try:
        with open(entry + ".sum") as f:
            want = json.load(f)
        return os.path.getsize(entry) == want["size"] and sha256_file(entry) == want["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _publish(tmp: str, entry: str) -> None:
    """Rename a finished build into place, then its checksum (the entry's commit point)."""
    os.replace(tmp, entry)
    info = {"size": os.path.getsize(entry), "sha256": sha256_file(entry)}
    fd, tmp_sum = tempfile.mkstemp(dir=os.path.dirname(entry), suffix=".sum.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp_sum, entry + ".sum")


def _cached_build(entry: str, build) -> tuple[bool, str | None]:
    """Return (hit, error log) after making sure `entry` is valid, building it with
    `build(tmp_path) -> error text | None` under the entry's lock when it is not."""
    if _valid(entry):
        return True, None
    with _locked(entry):
        if _valid(entry):            # another process built it while we waited
            return True, None
        for stale in (entry, entry + ".sum"):
            if os.path.exists(stale):
                os.remove(stale)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(entry), suffix=".tmp")
        os.close(fd)
        try:
            err = build(tmp)
            if err is not None:
                return False, err
            _publish(tmp, entry)
            return False, None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)}\n{e}"
    if out.returncode != 0:
        return f"{' '.join(cmd)}\n{out.stdout}{out.stderr}"
    return None


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if "error" in line:
            return line.strip()[:300]
    return (log.strip().splitlines() or ["unknown error"])[-1][:300]


# The system headers the units include (the preludes' own lists): parsing them is most of a
# small unit's compile (with -march=native immintrin.h alone took ~0.8 of 1.5 s for a w8a8g
# GEMM here), so GCC gets them once per flag set as a precompiled header. Each unit is
# compiled with `-include` of it first; its own #includes then hit the headers' guards.
SYSTEM_HEADERS = """#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <omp.h>
#include <type_traits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
"""


_PCH_CHECKED: dict[str, tuple[str, ...]] = {}
_PCH_LOCK = threading.Lock()   # a library's units compile on threads


def _precompiled_headers(cxx: Compiler, flags: tuple[str, ...], root: str,
                         env_key: str) -> tuple[str, ...]:
    """`-include` flags for GCC's precompiled `SYSTEM_HEADERS` (built once per environment
    key, cached like a unit), or none: Clang (whose PCH files are named and checked
    otherwise) and a failed header build compile units from the headers' text. GCC checks
    a .gch against the flags it is used with and falls back to the text on a mismatch, so
    the header can change how long a unit compiles, never what it compiles to. Built only
    when a unit misses the cache, so a cached model never reads it."""
    if "clang" in cxx.version.lower():
        return ()
    sub = os.path.join(root, "pch", env_key)
    header = os.path.join(sub, "spk_system.h")
    with _PCH_LOCK:
        # checked once per process (its checksum reads 40 MB), unless it went away since
        if sub in _PCH_CHECKED and (not _PCH_CHECKED[sub] or os.path.exists(header + ".gch")):
            return _PCH_CHECKED[sub]
        os.makedirs(sub, exist_ok=True)
        if not os.path.exists(header):
            fd, tmp = tempfile.mkstemp(dir=sub, suffix=".h.tmp")
            with os.fdopen(fd, "w") as f:
                f.write(SYSTEM_HEADERS)
            os.replace(tmp, header)
        _, err = _cached_build(header + ".gch", lambda tmp: _run([cxx.path, *flags, "-x", "c++-header",
                                                                   header, "-o", tmp]))
        _PCH_CHECKED[sub] = () if err is not None else ("-include", header)
        return _PCH_CHECKED[sub]


def build_library(units: Mapping[str, str], target: Target, *, jobs: int | None = None) -> Library:
    """Compile `units` (name -> C++ source) for `target` in parallel, link the ones that
    compiled into one shared object, and load it. Every step is cached. Raises
    ToolchainError when there is no compiler or nothing can be linked; a unit that fails
    is listed in `Library.failures` with its log."""
    cxx = find_compiler()
    flags = (*BASE_FLAGS, *target_flags(target))
    root = cache_dir()
    env_key = _digest(cxx.path, cxx.version, " ".join(flags), target.key())
    objects: dict[str, str] = {}
    failures: list[UnitFailure] = []
    hits = compiled = 0

    def compile_unit(name: str, source: str):
        key = _digest(env_key, source)
        sub = os.path.join(root, key[:2])
        os.makedirs(sub, exist_ok=True)
        obj, src = os.path.join(sub, key + ".o"), os.path.join(sub, key + ".cpp")

        def build(tmp: str) -> str | None:
            with open(src, "w") as f:
                f.write(source)
            return _run([cxx.path, *flags, *_precompiled_headers(cxx, flags, root, env_key),
                         "-c", src, "-o", tmp])
        hit, err = _cached_build(obj, build)
        return name, key, obj, hit, err

    names = sorted(units)
    with ThreadPoolExecutor(max_workers=jobs or max(1, len(os.sched_getaffinity(0)))) as pool:
        results = list(pool.map(lambda n: compile_unit(n, units[n]), names))
    for name, key, obj, hit, err in results:
        if err is not None:
            log = os.path.join(root, "logs", key + ".log")
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "w") as f:
                f.write(err)
            failures.append(UnitFailure(name, log, _first_error(err)))
            continue
        objects[name] = obj
        hits += hit
        compiled += not hit
    if not objects:
        raise ToolchainError("no kernel compiled: " + "; ".join(
            f"{f.unit}: {f.first_error} (compiler log: {f.log})" for f in failures[:3]))
    link_key = _digest(env_key, *sorted(os.path.basename(o) for o in objects.values()))
    lib = os.path.join(root, link_key[:2], link_key + ".so")
    os.makedirs(os.path.dirname(lib), exist_ok=True)
    hit, err = _cached_build(lib, lambda tmp: _run([cxx.path, *flags, "-shared", *objects.values(),
                                                     "-o", tmp]))
    if err is not None:
        log = os.path.join(root, "logs", link_key + ".log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w") as f:
            f.write(err)
        raise ToolchainError(f"linking the kernels failed: {_first_error(err)} (compiler log: {log})")
    hits += hit
    try:
        cdll = ctypes.CDLL(lib)
    except OSError as e:
        raise ToolchainError(f"loading {lib} failed: {e}; delete the cache entry and retry") from None
    return Library(lib, cdll, tuple(objects), tuple(failures), hits, compiled)
