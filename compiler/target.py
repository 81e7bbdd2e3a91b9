"""The machine generated code is for: device, ISA, features, cores, caches.

The target is found at run time, on the machine that runs the compiled model, never taken
from the machine that built the package: a wheel built on an AVX-512 server must not emit
AVX-512 code for a laptop without it. `Target.host()` reads the CPU's ISA extensions from
`/proc/cpuinfo` and its caches from sysfs; `Target.cuda()` asks torch for the GPU's name,
compute capability and SM count; `Target.parse("cpu:x86_64:avx2,fma")` describes another
machine without having it (tests, cross-compiling CLIs).

A backend declares the features its kernels need; `compile()` checks them against the
target with `missing()` and refuses with `describe()` in the message
(`backend 'cpu' needs avx2 but the target (cpu x86_64 ...) has none`). Cost models read
`simd_bits`, `cores` and `cache()`; kernel caches key on `key()`, which holds everything
generated code depends on and nothing else.

Detection degrades rather than fails: a missing or unreadable file gives no features or no
cache information, never an exception.
"""
from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import dataclass, field
from typing import Iterable

import torch

from .errors import SpokeshaveError

# the arch of a "cuda" target whose kernels Triton's interpreter runs on the CPU
# (`TRITON_INTERPRET=1`): the Triton backend makes it, cost models price it
INTERPRETER_ARCH = "interpreter"

# x86 extensions we name, spelled as Linux's /proc/cpuinfo spells them (which is also what
# the kernels' `#ifdef` / `-m` flags map to). Flags outside this set are dropped so that
# `key()` does not change with irrelevant flags such as `hypervisor` or `rdrand`.
X86_FEATURES = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd",
    "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512vbmi",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
})

# aarch64: /proc/cpuinfo "Features" spelling -> the name we use.
_ARM_CPUINFO_NAMES = {
    "asimd": "neon", "asimdhp": "fp16", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16",
    "sve": "sve", "sve2": "sve2", "sme": "sme",
}
ARM_FEATURES = frozenset(_ARM_CPUINFO_NAMES.values())

# GPU features follow from the compute capability: (feature, lowest capability).
_CUDA_FEATURE_SINCE: tuple[tuple[str, tuple[int, int]], ...] = (
    ("fp16", (6, 0)),
    ("tensor-cores", (7, 0)),
    ("int8-tensor-cores", (7, 5)),
    ("bf16", (8, 0)),
    ("tf32", (8, 0)),
    ("sparse24", (8, 0)),  # 2:4 structured-sparse tensor-core MMA
    ("fp8", (8, 9)),
    ("tma", (9, 0)),
    ("wgmma", (9, 0)),
    ("fp4", (10, 0)),
)
CUDA_FEATURES = frozenset(name for name, _ in _CUDA_FEATURE_SINCE)

# Other spellings people write (compiler flags, vendor docs) -> ours.
_ALIASES = {
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "sse41": "sse4_1", "sse42": "sse4_2",
    "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
    "avxvnni": "avx_vnni", "avx512_vbmi": "avx512vbmi", "amx-tile": "amx_tile",
    "amx-int8": "amx_int8", "amx-bf16": "amx_bf16", "asimd": "neon", "asimddp": "dotprod",
    "tensorcores": "tensor-cores", "tensor_cores": "tensor-cores", "sparse_2_4": "sparse24",
}

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}

_KNOWN_FEATURES_BY_ARCH = {"x86_64": X86_FEATURES, "aarch64": ARM_FEATURES}

_CACHE_NAMES = ("l1d", "l1i", "l1", "l2", "l3", "l4")
_SIZE_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

_ACCEPTED_FORM = ('DEVICE:ARCH[:FEATURE,...][:KEY=VALUE,...], e.g. "cpu:x86_64:avx2,fma", '
                  '"cpu:x86_64:avx512f,avx512_vnni:cores=8" or "cuda:sm_90:sms=132" '
                  '(keys: cores, l1d, l1i, l2, l3 for cpu; sms, l2 for cuda; sizes take K/M/G)')


def normalize_feature(name: str) -> str:
    """Our spelling of a feature name (`AVX512-VNNI` -> `avx512_vnni`, `sse4.2` -> `sse4_2`)."""
    lowered = name.strip().lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    underscored = lowered.replace("-", "_")
    if underscored in _ALIASES:
        return _ALIASES[underscored]
    if underscored in X86_FEATURES or underscored in ARM_FEATURES:
        return underscored
    return lowered


def cuda_features(capability: tuple[int, int]) -> frozenset[str]:
    """The GPU features an NVIDIA compute capability implies (`(8, 0)` has bf16, not fp8)."""
    return frozenset(name for name, since in _CUDA_FEATURE_SINCE if tuple(capability) >= since)


@dataclass(frozen=True)
class Target:
    """A machine to generate code for. Frozen and hashable, so it can key caches."""

    device: str
    arch: str
    name: str = ""
    features: frozenset[str] = field(default_factory=frozenset)
    cores: int = 1
    cache_bytes: tuple[tuple[str, int], ...] = ()
    compute_capability: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Accept any iterable of features / caches from callers, store the hashable forms.
        object.__setattr__(self, "features", frozenset(self.features))
        object.__setattr__(self, "cache_bytes", tuple((str(k), int(v)) for k, v in self.cache_bytes))
        if self.compute_capability is not None:
            major, minor = self.compute_capability
            object.__setattr__(self, "compute_capability", (int(major), int(minor)))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def host(cls) -> "Target":
        """The CPU this process runs on, detected once per process."""
        return _detect_host()

    @classmethod
    def cuda(cls, index: int = 0) -> "Target":
        """The CUDA device `index` as torch sees it; `SpokeshaveError` if there is none."""
        return _detect_cuda(index)

    @classmethod
    def parse(cls, text: str) -> "Target":
        """A target from `DEVICE:ARCH[:FEATURE,...][:KEY=VALUE,...]` text.

        Items with `=` are options, the others features, in any field after the arch. A
        parsed CPU without `cores=` has one core; a GPU's features follow from `sm_XY`
        (listed ones are added). The name of a parsed target is empty.
        """
        if not isinstance(text, str):
            raise SpokeshaveError(f"a target must be text of the form {_ACCEPTED_FORM}; "
                                  f"got {type(text).__name__}")

        def bad(reason: str) -> SpokeshaveError:
            return SpokeshaveError(f"bad target {text!r}: {reason}; expected {_ACCEPTED_FORM}")

        fields = [f.strip() for f in text.strip().split(":")]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise bad("it needs at least a device and an arch")
        device, arch = fields[0].lower(), fields[1].lower()
        if device not in ("cpu", "cuda"):
            raise bad(f"unknown device {fields[0]!r} (cpu or cuda)")
        listed: list[str] = []
        options: dict[str, str] = {}
        for item in (i.strip() for f in fields[2:] for i in f.split(",")):
            if not item:
                continue
            if "=" in item:
                key, _, value = item.partition("=")
                key = key.strip().lower()
                if key in options:
                    raise bad(f"option {key!r} is given twice")
                options[key] = value.strip()
            else:
                listed.append(normalize_feature(item))

        capability = None
        if device == "cuda":
            m = re.fullmatch(r"sm_?(\d+)(\d)a?", arch)
            if not m:
                raise bad(f"a cuda arch is sm_XY (compute capability X.Y), got {fields[1]!r}")
            capability = (int(m.group(1)), int(m.group(2)))
            known, option_keys = CUDA_FEATURES, ("sms", "cores", "l2")
        else:
            arch = _ARCH_ALIASES.get(arch, arch)
            if not re.fullmatch(r"[a-z][a-z0-9_]*", arch):
                raise bad(f"bad arch {fields[1]!r}")
            known = _KNOWN_FEATURES_BY_ARCH.get(arch)
            option_keys = ("cores", "l1d", "l1i", "l1", "l2", "l3", "l4")
        for feature in listed:
            unknown = known is not None and feature not in known
            if unknown or not re.fullmatch(r"[a-z0-9][a-z0-9_.+\-]*", feature):
                choices = f"; known for {arch}: {', '.join(sorted(known))}" if known else ""
                raise bad(f"unknown feature {feature!r}{choices}")

        if "cores" in options and "sms" in options:
            raise bad("give sms= or cores=, not both")
        cores = 1
        caches: list[tuple[str, int]] = []
        for key, value in options.items():
            if key not in option_keys:
                raise bad(f"unknown option {key!r} for {device} (accepted: {', '.join(option_keys)})")
            if key in ("cores", "sms"):
                if not re.fullmatch(r"\d+", value) or int(value) < 1:
                    raise bad(f"{key} must be a positive integer, got {value!r}")
                cores = int(value)
            else:
                size = _parse_size(value)
                if size is None:
                    raise bad(f"{key} must be a size such as 48K or 2M, got {value!r}")
                caches.append((key, size))

        features = frozenset(listed)
        if capability is not None:
            features |= cuda_features(capability)
        return cls(device=device, arch=arch, features=features, cores=cores,
                   cache_bytes=_sorted_caches(caches), compute_capability=capability)

    # ------------------------------------------------------------------ queries

    def cache(self, level: str | int) -> int | None:
        """Bytes of a cache (`"l1d"`, `"l2"`, `"l3"`; an int level 1/2/3 means the data or
        unified cache of that level), or None when unknown."""
        sizes = dict(self.cache_bytes)
        if isinstance(level, int) and not isinstance(level, bool):
            names = ("l1d", "l1") if level == 1 else (f"l{level}",)
        else:
            names = (str(level).lower(),)
        for n in names:
            if n in sizes:
                return sizes[n]
        return None

    def missing(self, required: Iterable[str]) -> frozenset[str]:
        """The features in `required` this target lacks (names are normalised first)."""
        if isinstance(required, str):  # one name, not its characters
            required = (required,)
        return frozenset(normalize_feature(r) for r in required) - self.features

    @property
    def simd_bits(self) -> int:
        """Widest vector register the generated code may use: 512 with avx512f, 256 with
        avx/avx2, else 128 on x86 (SSE2 is baseline); 128 for NEON. A GPU reports one warp
        instruction (32 lanes x 32 bits); an unknown CPU 0."""
        if self.device == "cuda":
            return 32 * 32
        if self.arch == "x86_64":
            if "avx512f" in self.features:
                return 512
            return 256 if self.features & {"avx2", "avx"} else 128
        if "neon" in self.features or self.arch == "aarch64":
            return 128  # AArch64 mandates Advanced SIMD; SVE length is not known statically
        return 0

    def key(self) -> str:
        """A short stable string of everything generated code depends on (device, arch,
        sorted features, compute capability), for kernel cache keys and file names."""
        parts = [self.device, self.arch]
        if self.compute_capability is not None:
            parts.append("cc{}_{}".format(*self.compute_capability))
        parts.append("+".join(sorted(self.features)) or "nofeatures")
        return ".".join(parts)

    def spec(self) -> str:
        """The `parse()` text of this target: `Target.parse(t.spec())` equals `t` except
        for the name, which the text form does not carry."""
        features = self.features
        if self.compute_capability is not None:
            features = features - cuda_features(self.compute_capability)
        text = f"{self.device}:{self.arch}"
        if features:
            text += ":" + ",".join(sorted(features))
        options = [f"{'sms' if self.device == 'cuda' else 'cores'}={self.cores}"]
        options += [f"{n}={_format_size(b)}" for n, b in self.cache_bytes]
        return text + ":" + ",".join(options)

    def describe(self) -> str:
        """One human line, for error messages and logs."""
        text = f"{self.device} {self.arch}"
        if self.name:
            text += f" '{self.name}'"
        if self.device == "cuda":
            text += f", {self.cores} SMs"
            if self.compute_capability is not None:
                text += ", compute capability {}.{}".format(*self.compute_capability)
        else:
            text += f", {self.cores} core{'s' if self.cores != 1 else ''}"
        text += ", features: " + (" ".join(sorted(self.features)) if self.features else "none known")
        if self.cache_bytes:
            text += ", caches: " + " ".join(f"{n} {_format_size(b)}" for n, b in self.cache_bytes)
        return text


# ------------------------------------------------------------------ host detection


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _parse_size(text: str) -> int | None:
    """`48K` / `2048K` / `2M` / `32768` -> bytes (sysfs and parse() spellings); None if bad."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text or "")
    if not m or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * _SIZE_SUFFIX[m.group(2).lower()]


def _format_size(n: int) -> str:
    for suffix, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


def _sorted_caches(caches: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    order = {n: i for i, n in enumerate(_CACHE_NAMES)}
    return tuple(sorted(caches, key=lambda c: (order.get(c[0], len(order)), c[0])))


def _host_arch() -> str:
    machine = platform.machine().lower() or "unknown"
    return _ARCH_ALIASES.get(machine, machine)


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's `key : value` lines of /proc/cpuinfo (all cores agree on the
    flags of a symmetric machine; a hybrid one advertises the common subset)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _features_from_cpuinfo(arch: str, fields: dict[str, str]) -> frozenset[str]:
    if arch == "x86_64":
        return frozenset(fields.get("flags", "").split()) & X86_FEATURES
    if arch == "aarch64":
        words = fields.get("features", "").split()
        found = {_ARM_CPUINFO_NAMES[w] for w in words if w in _ARM_CPUINFO_NAMES}
        return frozenset(found)
    return frozenset()


def _caches_from_sysfs(root: str = "/sys/devices/system/cpu/cpu0/cache") -> tuple[tuple[str, int], ...]:
    try:
        entries = sorted(e for e in os.listdir(root) if re.fullmatch(r"index\d+", e))
    except OSError:
        return ()
    caches: dict[str, int] = {}
    for entry in entries:
        level = (_read(f"{root}/{entry}/level") or "").strip()
        kind = (_read(f"{root}/{entry}/type") or "").strip().lower()
        size = _parse_size(_read(f"{root}/{entry}/size") or "")
        if not level.isdigit() or size is None:
            continue
        suffix = {"data": "d", "instruction": "i"}.get(kind, "")
        caches.setdefault(f"l{level}{suffix}", size)
    return _sorted_caches(caches.items())


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # honours taskset / cgroup cpusets
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def _detect_host() -> Target:
    arch = _host_arch()
    fields = _cpuinfo_fields(_read("/proc/cpuinfo") or "")
    name = fields.get("model name") or fields.get("hardware") or platform.processor() or arch
    features = _features_from_cpuinfo(arch, fields)
    if arch == "aarch64":
        features |= {"neon"}  # Advanced SIMD is mandatory on AArch64, also without cpuinfo (macOS)
    return Target(device="cpu", arch=arch, name=name, features=features, cores=_usable_cores(),
                  cache_bytes=_caches_from_sysfs())


@functools.lru_cache(maxsize=None)
def _detect_cuda(index: int) -> Target:
    # Failures raise and are therefore not cached: a device that appears later is seen.
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
        raise SpokeshaveError(f"no CUDA device is visible (torch {torch.__version__} built {build}; "
                              "check CUDA_VISIBLE_DEVICES and the driver), so there is no cuda "
                              "target; use the cpu target or Target.parse('cuda:sm_90') to "
                              "describe a GPU without one")
    count = torch.cuda.device_count()
    if not isinstance(index, int) or not 0 <= index < count:
        raise SpokeshaveError(f"CUDA device index {index!r} is out of range: {count} device(s) visible")
    props = torch.cuda.get_device_properties(index)
    capability = (int(props.major), int(props.minor))
    caches = ()
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    if l2 > 0:
        caches = (("l2", l2),)
    if getattr(torch.version, "hip", None):
        # ROCm reports a pseudo capability; NVIDIA's feature table does not apply.
        arch = str(getattr(props, "gcnArchName", "") or "gfx").split(":")[0]
        features: frozenset[str] = frozenset()
    else:
        arch = "sm_{}{}".format(*capability)
        features = cuda_features(capability)
    return Target(device="cuda", arch=arch, name=str(props.name), features=features,
                  cores=int(props.multi_processor_count), cache_bytes=caches,
                  compute_capability=capability)
