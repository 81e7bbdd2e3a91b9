"""Target: host detection (checked against /proc/cpuinfo and sysfs, not hard-coded), text
form and its errors, feature queries, cache keys, and the CUDA constructor."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from spokeshave import SpokeshaveError
from spokeshave.compiler import target as target_mod
from spokeshave.compiler.target import ARM_FEATURES, CUDA_FEATURES, X86_FEATURES, Target

KNOWN = X86_FEATURES | ARM_FEATURES
SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"


def _cpuinfo_words(field: str) -> set[str] | None:
    """The words of the first `field :` line of /proc/cpuinfo, or None without one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == field:
                    return set(value.split())
    except OSError:
        return None
    return None


# ------------------------------------------------------------------ host detection


def test_host_is_a_cpu_with_known_feature_names():
    host = Target.host()
    assert host.device == "cpu"
    assert host.arch and host.name
    assert host.cores >= 1
    assert isinstance(host.features, frozenset)
    assert host.features <= KNOWN, host.features - KNOWN
    assert host.compute_capability is None
    assert Target.host() is host  # detected once per process


def test_host_cores_are_the_usable_ones():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity on this platform")
    assert Target.host().cores == len(os.sched_getaffinity(0))


def test_host_features_agree_with_proc_cpuinfo():
    host = Target.host()
    if host.arch == "x86_64":
        flags = _cpuinfo_words("flags")
        if flags is None:
            pytest.skip("no /proc/cpuinfo flags")
        for name in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                     "amx_tile"):
            assert (name in host.features) == (name in flags), name
        assert host.features == frozenset(flags) & X86_FEATURES
    elif host.arch == "aarch64":
        words = _cpuinfo_words("features")
        if words is None:
            pytest.skip("no /proc/cpuinfo Features")
        assert "neon" in host.features
        assert ("dotprod" in host.features) == ("asimddp" in words)
        assert ("sve" in host.features) == ("sve" in words)
    else:
        pytest.skip(f"no feature detection for {host.arch}")


def test_host_caches_agree_with_sysfs():
    host = Target.host()
    if not os.path.isdir(SYSFS_CACHE):
        assert host.cache_bytes == ()
        return
    expected = {}
    for entry in sorted(os.listdir(SYSFS_CACHE)):
        if not entry.startswith("index"):
            continue
        with open(f"{SYSFS_CACHE}/{entry}/level") as f:
            level = f.read().strip()
        with open(f"{SYSFS_CACHE}/{entry}/type") as f:
            kind = {"Data": "d", "Instruction": "i"}.get(f.read().strip(), "")
        with open(f"{SYSFS_CACHE}/{entry}/size") as f:
            size = f.read().strip()
        assert size.endswith("K"), size  # how Linux spells it; the parser takes K/M/G
        expected.setdefault(f"l{level}{kind}", int(size[:-1]) * 1024)
    assert dict(host.cache_bytes) == expected
    for name, size in expected.items():
        assert host.cache(name) == size
    if "l1d" in expected:
        assert host.cache(1) == expected["l1d"]
    assert host.cache("l9") is None


def test_detection_degrades_without_proc_and_sys(monkeypatch):
    def no_listing(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(target_mod, "_read", lambda path: None)
    monkeypatch.setattr(target_mod.os, "listdir", no_listing)
    bare = target_mod._detect_host.__wrapped__()  # bypass the per-process cache
    assert bare.device == "cpu" and bare.cores >= 1
    assert bare.cache_bytes == () and bare.cache("l2") is None
    assert bare.features <= {"neon"}  # only what the arch itself guarantees


def test_cpuinfo_flags_are_filtered_and_normalised():
    x86 = target_mod._features_from_cpuinfo("x86_64", {"flags": "fpu hypervisor avx2 fma avx512f rdrand"})
    assert x86 == {"avx2", "fma", "avx512f"}
    arm = target_mod._features_from_cpuinfo("aarch64", {"features": "fp asimd asimddp sve i8mm crc32"})
    assert arm == {"neon", "dotprod", "sve", "i8mm"}
    fields = target_mod._cpuinfo_fields("processor : 0\nflags : avx2\n\nprocessor : 1\nflags : avx512f\n")
    assert fields["flags"] == "avx2"  # the first processor's block only


# ------------------------------------------------------------------ text form


def test_parse_examples():
    avx2 = Target.parse("cpu:x86_64:avx2,fma")
    assert (avx2.device, avx2.arch, avx2.features, avx2.cores) == ("cpu", "x86_64", {"avx2", "fma"}, 1)
    wide = Target.parse("cpu:x86_64:avx512f,avx512_vnni:cores=8")
    assert wide.features == {"avx512f", "avx512_vnni"} and wide.cores == 8
    gpu = Target.parse("cuda:sm_90:sms=132")
    assert gpu.device == "cuda" and gpu.compute_capability == (9, 0) and gpu.cores == 132
    assert {"tensor-cores", "bf16", "fp8"} <= gpu.features <= CUDA_FEATURES
    ampere = Target.parse("cuda:sm_80")
    assert "bf16" in ampere.features and "fp8" not in ampere.features
    assert Target.parse("cuda:sm_89").compute_capability == (8, 9)
    assert Target.parse("cuda:sm_100").compute_capability == (10, 0)


def test_parse_normalises_spellings():
    t = Target.parse(" CPU : amd64 : AVX2, sse4.2, AVX512-VNNI ")
    assert t.arch == "x86_64" and t.features == {"avx2", "sse4_2", "avx512_vnni"}
    assert Target.parse("cpu:arm64:neon,dotprod").arch == "aarch64"


def test_parse_cache_options():
    t = Target.parse("cpu:x86_64:avx2:cores=4,l1d=32K,l2=2M,l3=32M")
    assert t.cache("l1d") == 32 * 1024 and t.cache(2) == 2 << 20 and t.cache("l3") == 32 << 20
    assert t.cache_bytes == (("l1d", 32768), ("l2", 2 << 20), ("l3", 32 << 20))


@pytest.mark.parametrize("text", [
    "cpu:x86_64:avx2,fma",
    "cpu:x86_64:avx512f,avx512_vnni:cores=8",
    "cpu:x86_64:cores=3,l1d=48K,l2=2M",
    "cpu:x86_64",
    "cpu:aarch64:neon,sve,i8mm:cores=64",
    "cuda:sm_90:sms=132",
    "cuda:sm_75:l2=4M",
])
def test_parse_round_trips(text):
    t = Target.parse(text)
    assert Target.parse(t.spec()) == t
    assert Target.parse(t.spec()).spec() == t.spec()


def test_host_round_trips_except_its_name():
    host = Target.host()
    again = Target.parse(host.spec())
    assert again == dataclasses.replace(host, name="")
    assert again.key() == host.key()


@pytest.mark.parametrize("text, reason", [
    ("", "at least a device and an arch"),
    ("cpu", "at least a device and an arch"),
    ("gpu:x86_64", "unknown device 'gpu'"),
    ("cuda:ampere", "sm_XY"),
    ("cpu:x86_64:avx3", "unknown feature 'avx3'"),
    ("cpu:x86_64:cores=0", "cores must be a positive integer"),
    ("cpu:x86_64:cores=many", "cores must be a positive integer"),
    ("cpu:x86_64:threads=4", "unknown option 'threads'"),
    ("cpu:x86_64:l2=lots", "l2 must be a size"),
    ("cpu:x86_64:cores=2,cores=3", "given twice"),
    ("cuda:sm_90:sms=1,cores=2", "not both"),
    ("cuda:sm_90:l1d=32K", "unknown option 'l1d'"),
])
def test_parse_errors_name_the_accepted_form(text, reason):
    with pytest.raises(SpokeshaveError) as info:
        Target.parse(text)
    message = str(info.value)
    assert reason in message
    assert "DEVICE:ARCH" in message and "cpu:x86_64:avx2,fma" in message


def test_parse_rejects_non_text():
    with pytest.raises(SpokeshaveError, match="DEVICE:ARCH"):
        Target.parse(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ queries


def test_missing():
    t = Target.parse("cpu:x86_64:avx2,fma")
    assert t.missing(["avx2", "avx512f"]) == {"avx512f"}
    assert t.missing(["avx2", "fma"]) == frozenset()
    assert t.missing("avx2") == frozenset()  # one name, not its letters
    assert t.missing(["AVX512-VNNI"]) == {"avx512_vnni"}
    assert t.missing([]) == frozenset()


@pytest.mark.parametrize("text, bits", [
    ("cpu:x86_64", 128),
    ("cpu:x86_64:sse4_2", 128),
    ("cpu:x86_64:avx", 256),
    ("cpu:x86_64:avx2,fma", 256),
    ("cpu:x86_64:avx2,fma,avx512f", 512),
    ("cpu:aarch64:neon", 128),
])
def test_simd_bits(text, bits):
    assert Target.parse(text).simd_bits == bits


def test_key_is_stable_and_tracks_what_code_depends_on():
    a = Target.parse("cpu:x86_64:avx2,fma")
    assert a.key() == Target.parse("cpu:x86_64:fma,avx2").key() == a.key()
    assert a.key() != Target.parse("cpu:x86_64:avx2,fma,avx512f").key()
    assert a.key() != Target.parse("cpu:aarch64:neon").key()
    assert a.key() == Target.parse("cpu:x86_64:avx2,fma:cores=64,l2=1M").key()  # not codegen
    assert Target.parse("cuda:sm_80").key() != Target.parse("cuda:sm_90").key()
    assert "9_0" in Target.parse("cuda:sm_90").key()
    for t in (a, Target.host(), Target.parse("cuda:sm_90:sms=132")):
        assert not set(t.key()) & set(" :/\\,"), t.key()  # usable in a file name


def test_describe_is_one_line_naming_the_machine():
    t = Target.parse("cpu:x86_64:avx2,fma:cores=8")
    line = t.describe()
    assert "\n" not in line
    assert "cpu x86_64" in line and "8 cores" in line and "avx2 fma" in line
    assert "features: none known" in Target.parse("cpu:x86_64").describe()
    gpu = Target.parse("cuda:sm_90:sms=132").describe()
    assert "132 SMs" in gpu and "compute capability 9.0" in gpu
    host = Target.host()
    assert host.name in host.describe()


def test_targets_are_frozen_and_hashable():
    a = Target.parse("cpu:x86_64:avx2,fma")
    b = Target(device="cpu", arch="x86_64", features=["fma", "avx2"])  # any iterable
    assert a == b and hash(a) == hash(b)
    assert isinstance(b.features, frozenset)
    assert len({a, b, Target.parse("cpu:x86_64:avx2")}) == 2
    assert {a: 1}[b] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.cores = 4  # type: ignore[misc]


# ------------------------------------------------------------------ CUDA


def test_cuda_target():
    if torch.cuda.is_available():
        gpu = Target.cuda()
        assert gpu.device == "cuda" and gpu.cores >= 1
        assert gpu.compute_capability == torch.cuda.get_device_capability(0)
        return
    with pytest.raises(SpokeshaveError, match="no CUDA device is visible"):
        Target.cuda()


def test_cuda_features_follow_the_capability():
    assert target_mod.cuda_features((7, 0)) == {"fp16", "tensor-cores"}
    assert "fp8" in target_mod.cuda_features((8, 9)) and "fp8" not in target_mod.cuda_features((8, 6))
    assert target_mod.cuda_features((5, 0)) == frozenset()
