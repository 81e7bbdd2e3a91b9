"""The CPU backend's toolchain and kernel cache: hits, keys, and the failure paths.

Every failure a user can meet is exercised: no compiler on PATH, a unit that does not
compile (its log kept, the rest still linked), a corrupted cache entry (detected by its
checksum and rebuilt, never loaded), and two processes racing to build one cache key.
"""
from __future__ import annotations

import multiprocessing
import os
import warnings

import pytest
import torch
from spokeshave.backends.cpu import toolchain
from spokeshave.compiler.target import Target

import spokeshave

GOOD = 'extern "C" int spk_test_add(int a, int b) { return a + b; }\n'
OTHER = 'extern "C" int spk_test_mul(int a, int b) { return a * b; }\n'
BROKEN = 'extern "C" int spk_test_broken(int a) { return a + ; }\n'


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(toolchain.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entries(root, suffix):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(suffix)]


def test_build_then_cache_hit(cache):
    lib = toolchain.build_library({"a.cpp": GOOD}, Target.host())
    assert lib.cdll.spk_test_add(2, 3) == 5
    assert (lib.compiled, lib.hits) == (1, 0)
    again = toolchain.build_library({"a.cpp": GOOD}, Target.host())
    assert (again.compiled, again.hits) == (0, 2)  # the object and the link
    assert again.path == lib.path


def test_key_covers_source_and_target(cache):
    a = toolchain.build_library({"a.cpp": GOOD}, Target.host())
    b = toolchain.build_library({"a.cpp": GOOD}, Target.parse("cpu:x86_64:avx2,fma"))
    c = toolchain.build_library({"a.cpp": GOOD + "\n// changed\n"}, Target.host())
    assert len({a.path, b.path, c.path}) == 3


def test_flags_follow_the_target():
    assert toolchain.target_flags(Target.host())[0] == "-march=native"
    flags = toolchain.target_flags(Target.parse("cpu:x86_64:avx2,fma"))
    assert "-mavx2" in flags and "-mfma" in flags and not any("avx512" in f for f in flags)


def test_no_compiler_on_path(cache, monkeypatch):
    monkeypatch.setenv("PATH", str(cache))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(toolchain.ToolchainError, match="no C\\+\\+ compiler found.*install"):
        toolchain.build_library({"a.cpp": GOOD}, Target.host())


def test_compile_error_keeps_log_and_links_the_rest(cache):
    lib = toolchain.build_library({"good.cpp": GOOD, "bad.cpp": BROKEN}, Target.host())
    assert lib.cdll.spk_test_add(1, 1) == 2
    assert [f.unit for f in lib.failures] == ["bad.cpp"]
    log = lib.failures[0].log
    assert os.path.exists(log) and "error" in open(log).read()
    assert "error" in lib.failures[0].first_error
    with pytest.raises(AttributeError):
        lib.cdll.spk_test_broken


def test_only_broken_units_is_an_error(cache):
    with pytest.raises(toolchain.ToolchainError, match="no kernel compiled.*log"):
        toolchain.build_library({"bad.cpp": BROKEN}, Target.host())


def _build_elsewhere(cache_dir: str, source: str) -> None:
    """Build in a child process: this one must not map a library the test then corrupts."""
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_build_in_child, args=(cache_dir, source))
    p.start()
    p.join(120)
    assert p.exitcode == 0


def _build_in_child(cache_dir: str, source: str) -> None:
    os.environ[toolchain.CACHE_ENV] = cache_dir
    toolchain.build_library({"c.cpp": source}, Target.host())


CORRUPTED = 'extern "C" int spk_test_sub(int a, int b) { return a - b; }\n'


def test_corrupted_entry_is_rebuilt_not_loaded(cache):
    _build_elsewhere(str(cache), CORRUPTED)
    objs, libs = _entries(cache, ".o"), _entries(cache, ".so")
    assert len(objs) == 1 and len(libs) == 1
    for path in objs + libs:                       # a crash mid-copy, a full disk...
        with open(path, "r+b") as f:
            f.truncate(100)
    lib = toolchain.build_library({"c.cpp": CORRUPTED}, Target.host())
    assert lib.compiled == 1 and lib.cdll.spk_test_sub(9, 5) == 4
    # a payload without its checksum (the writer died before committing) is not trusted
    os.remove(objs[0] + ".sum")
    lib = toolchain.build_library({"c.cpp": CORRUPTED}, Target.host())
    assert lib.compiled == 1


def _race(cache_dir: str, q) -> None:
    os.environ[toolchain.CACHE_ENV] = cache_dir
    lib = toolchain.build_library({"m.cpp": OTHER}, Target.host())
    q.put(lib.cdll.spk_test_mul(6, 7))


def test_two_processes_race_on_one_key(cache):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(cache), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [q.get(timeout=5), q.get(timeout=5)] == [42, 42]
    assert all(toolchain._valid(e) for e in _entries(cache, ".o") + _entries(cache, ".so"))
    assert not _entries(cache, ".tmp")


# ------------------------------------------------------------------ through the backend


def _mlp_module():
    return spokeshave.parse("""
func.func @f(%x: tensor<?x16xf32>, %g: tensor<16xf32> {spk.param = "g"}) -> tensor<?x16xf32> {
  %0 = "aten.gelu"(%x) : (tensor<?x16xf32>) -> tensor<?x16xf32>
  %1 = "aten.layer_norm"(%0, %g) {normalized_shape = [16]} : (tensor<?x16xf32>, tensor<16xf32>) -> tensor<?x16xf32>
  return %1 : tensor<?x16xf32>
}""")


STORE = {"g": torch.rand(16, generator=torch.Generator().manual_seed(0)) + 0.5}


def _compile(backend="cpu"):
    from spokeshave.compiler.weights import WeightStore
    return spokeshave.compile_module(_mlp_module(), WeightStore(dict(STORE)), pipeline="canonicalize",
                                     backend=backend)


def _agrees(cm) -> None:
    x = torch.randn(5, 16)
    want = _compile("reference")(x)
    torch.testing.assert_close(cm(x), want, rtol=1e-5, atol=1e-5)


def test_backend_without_compiler_warns_and_stays_correct(cache, monkeypatch):
    monkeypatch.setenv("PATH", str(cache))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.warns(UserWarning, match=r"group.*reference path.*no C\+\+ compiler"):
        cm = _compile()
    monkeypatch.undo()
    _agrees(cm)
    assert cm.executable.failed


def test_backend_compile_error_names_group_and_log(cache, monkeypatch):
    from spokeshave.backends.cpu import rows
    real = rows.generate

    def broken(*a, **k):
        kernel = real(*a, **k)
        kernel.source = kernel.source.replace("{", "{ this does not compile;", 1)
        return kernel
    monkeypatch.setattr(rows, "generate", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cm = _compile()
    monkeypatch.undo()
    msgs = [str(w.message) for w in caught if "spokeshave cpu" in str(w.message)]
    assert len(msgs) == 1
    assert "group" in msgs[0] and "compiler log: " in msgs[0]
    log = msgs[0].rsplit("compiler log: ", 1)[1].rstrip(")")
    assert os.path.exists(log) and "error" in open(log).read()
    assert cm.executable.failed
    _agrees(cm)


def test_system_headers_are_precompiled_once_and_change_no_object(cache):
    src = "#include <math.h>\n" + GOOD.replace("a + b", "(int)sqrtf((float)(a + b))")
    lib = toolchain.build_library({"a.cpp": src}, Target.host())
    assert lib.cdll.spk_test_add(7, 9) == 4
    cxx = toolchain.find_compiler()
    if "clang" in cxx.version.lower():
        pytest.skip("precompiled headers are GCC's here")
    (gch,) = _entries(cache, ".gch")
    header = gch[:-len(".gch")]
    assert open(header).read() == toolchain.SYSTEM_HEADERS
    # the same unit compiled from the headers' text gives the same bytes
    flags = (*toolchain.BASE_FLAGS, *toolchain.target_flags(Target.host()))
    (obj,) = _entries(cache, ".o")
    plain = str(cache / "plain.o")
    assert toolchain._run([cxx.path, *flags, "-c", obj[:-2] + ".cpp", "-o", plain]) is None
    assert open(plain, "rb").read() == open(obj, "rb").read()
    # a corrupted header entry is rebuilt, not used
    with open(gch, "r+b") as f:
        f.write(b"garbage")
    toolchain._PCH_CHECKED.clear()
    other = toolchain.build_library({"b.cpp": OTHER}, Target.host())
    assert other.cdll.spk_test_mul(6, 7) == 42 and other.compiled == 1
    assert toolchain._valid(gch)
