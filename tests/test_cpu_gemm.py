"""The CPU backend's compressed-linear GEMM kernels (`spokeshave.backends.cpu.gemm`) against
the reference semantics of their ops, for every op x ISA variant.

Kernels are generated for targets parsed from text (so every ISA variant the host can run
is tested on one machine), compiled once per module into one shared object (all sources
concatenated: the include guards must make that work) and called through `extern "C"`
wrappers that instantiate the kernel templates with an identity and a residual-add
epilogue. Weights come from the real quantizers in `compiler/numerics`; the reference is
the op record's `interpret`, else "decode, then a float GEMM" (`linear_reference`).

Tolerances: w8a8 and w8a8g results must be bit-identical to the reference (exact int32
accumulation and the same float rounding of the rescale); weight-only and outlier float parts agree to
1e-5 of the output's magnitude (float summation order).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from spokeshave.backends.cpu import gemm as G
from spokeshave.compiler.dialect import linear_reference, op_def
from spokeshave.compiler.numerics import quant, sparse
from spokeshave.compiler.target import Target

import spokeshave

HOST = Target.host().features
TARGETS = {  # the int8 ISA variant -> a target that selects it (and its weight-only twin)
    "amx": "avx512f,avx512bw,avx512vl,avx512_vnni,avx2,fma,f16c,amx_tile,amx_int8",   # w8a8g; w8a8 is zmm VNNI
    "avx512_vnni": "avx512f,avx512bw,avx512vl,avx512_vnni,avx2,fma,f16c",
    "avx_vnni": "avx2,fma,f16c,avx_vnni",
    "avx2": "avx2,fma,f16c",
    "scalar": "sse4_2",
}
WO_TARGETS = {"avx512": TARGETS["avx512_vnni"], "avx2": TARGETS["avx2"], "scalar": TARGETS["scalar"]}


def _runs_here(features: str) -> bool:
    return set(features.split(",")) <= HOST | {"sse4_2"}


def target(features: str) -> Target:
    return Target.parse("cpu:x86_64:" + features)


# ---------------------------------------------------------------------------- op and weights


def parse_op(name: str, n: int, k: int, weight_types: list[str], attrs: str = "", bias: bool = True):
    """The op `name` parsed from IR text, as a model would carry it."""
    args = [f"%x: tensor<?x{k}xf32>"] + [f"%w{i}: {t}" for i, t in enumerate(weight_types)]
    operands = ["%x"] + [f"%w{i}" for i in range(len(weight_types))]
    types = [f"tensor<?x{k}xf32>"] + weight_types
    if bias:
        args.append(f"%b: tensor<{n}xf32>")
        operands.append("%b")
        types.append(f"tensor<{n}xf32>")
    attr = f" {{{attrs}}}" if attrs else ""
    text = (f"func.func @forward({', '.join(args)}) -> tensor<?x{n}xf32> {{\n"
            f"  %0 = \"{name}\"({', '.join(operands)}){attr} : ({', '.join(types)}) -> tensor<?x{n}xf32>\n"
            f"  return %0 : tensor<?x{n}xf32>\n}}\n")
    module = spokeshave.parse(text)
    return next(op for op in module.walk() if op.name == name)


def _ty(t: torch.Tensor) -> str:
    name = {torch.int8: "i8", torch.uint8: "ui8", torch.float32: "f32", torch.int64: "i64",
            torch.float8_e4m3fn: "f8E4M3FN"}[t.dtype]
    return "tensor<" + "".join(f"{d}x" for d in t.shape) + name + ">"


OUTLIERS = [5, 17, 60]
INT8_ACT = ("w8a8", "w8a8g", "w8a8_split")   # int8 activations: the TARGETS variants
EXACT = ("w8a8", "w8a8g")                    # bit-identical to the reference
VNNI_ISAS = ("amx", "avx512_vnni", "avx_vnni")   # u8 = q + 128 activation codes


def make_weights(kind: str, n: int, k: int, seed: int, group: int = 0, sym: bool = True,
                 oweight_zero: bool = False) -> tuple[str, list[torch.Tensor], str]:
    """(op name, weight-role tensors, attribute text) from a random float weight."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    if kind in ("w8", "w8a8"):
        q, s = quant.quantize_int8_per_channel(w)
        return f"spk.linear_{kind}", [q, s], ""
    if kind == "w8a8g":
        q, s = quant.quantize_int8_per_channel(w)
        return "spk.linear_w8a8g", [q, s], f"group = {group}"
    if kind == "fp8":
        q, s = quant.quantize_fp8_per_channel(w)
        return "spk.linear_fp8", [q, s], ""
    if kind == "w4g":
        p = quant.int4_group_params(w, group, sym)
        packed = quant.pack_int4(quant.int4_codes(w, p))
        ws = [packed, p.scale] + ([] if sym else [p.zero])
        return "spk.linear_w4g", ws, f"group = {group}, symmetric = {'true' if sym else 'false'}"
    if kind == "sparse24":
        values, meta = sparse.compress_24(w, sparse.mask_topk_24(w.abs()))
        return "spk.linear_sparse24", [values, meta], ""
    if kind in ("w8a8_split", "w8_split"):
        idx = torch.tensor(OUTLIERS, dtype=torch.int64)
        ow = w[:, idx] * 40.0
        if oweight_zero:
            ow = torch.zeros_like(ow)
        rest = w.clone()
        rest[:, idx] = 0
        q, s = quant.quantize_int8_per_channel(rest)
        return f"spk.linear_{kind}", [q, s, ow.contiguous(), idx], ""
    raise ValueError(kind)


def reference(b: Built, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The op's reference semantics (the op parsed with or without its bias operand)."""
    op = b.op if bias is not None else b.op_nobias
    args = [x, *b.weights] + ([bias] if bias is not None else [])
    d = op_def(op.name)
    return d.interpret(op, args) if d.interpret is not None else linear_reference(op, args)


# ---------------------------------------------------------------------------- cases


@dataclass
class Case:
    id: str
    kind: str
    isa_key: str          # key into TARGETS / WO_TARGETS
    n: int
    k: int
    group: int = 0
    sym: bool = True
    oweight_zero: bool = False
    seed: int = 0

    @property
    def features(self) -> str:
        return (TARGETS if self.kind in INT8_ACT else WO_TARGETS)[self.isa_key]


def _cases() -> list[Case]:
    out = []
    for isa in TARGETS:
        if isa != "amx":   # AMX targets run the split, and K % 64 != 0, on zmm VNNI
            out.append(Case(f"w8a8-{isa}", "w8a8", isa, 40, 99))
            out.append(Case(f"w8a8_split-{isa}", "w8a8_split", isa, 40, 99))
        out.append(Case(f"w8a8g128-{isa}", "w8a8g", isa, 40, 256, 128))
        out.append(Case(f"w8a8g32-{isa}", "w8a8g", isa, 40, 96, 32))
    out.append(Case("w8a8g48-amx", "w8a8g", "amx", 40, 96, 48))   # AMX tiles 16 codes deep
    out.append(Case("w8a8-amx", "w8a8", "amx", 40, 128))
    for isa in WO_TARGETS:
        out.append(Case(f"w8-{isa}", "w8", isa, 40, 99))
        out.append(Case(f"fp8-{isa}", "fp8", isa, 40, 99))
        out.append(Case(f"w8_split-{isa}", "w8_split", isa, 40, 99))
        out.append(Case(f"sparse24-{isa}", "sparse24", isa, 40, 100))
        for group in (32, 64, 128):
            for sym in (True, False):
                out.append(Case(f"w4g{group}{'s' if sym else 'a'}-{isa}", "w4g", isa, 40, 256, group, sym))
    return out


CASES = [c for c in _cases() if _runs_here(c.features)]
# one medium shape on the host's best paths (several row and column panels, K tails)
MEDIUM = [c for c in (Case("w8a8-medium", "w8a8", "avx512_vnni", 300, 700, seed=3),
                      Case("w8a8g-medium", "w8a8g", "avx512_vnni", 300, 768, 128, seed=5),
                      Case("w8a8g-medium-amx", "w8a8g", "amx", 300, 768, 128, seed=7),
                      Case("w8a8-medium-amx", "w8a8", "amx", 300, 768, seed=8),
                      Case("w8a8g-medium-avx2", "w8a8g", "avx2", 300, 768, 64, seed=6),
                      Case("w4g-medium", "w4g", "avx512", 300, 768, 64, False, seed=4))
          if _runs_here(c.features)]
# the split ops with a zero outlier weight: the int8 part alone, bit-exact
ZERO_OUTLIER = [Case(f"{kind}-zero-ow-{isa}", kind, isa, 40, 99, oweight_zero=True)
                for kind in ("w8a8_split",) for isa in TARGETS if isa != "amx" and _runs_here(TARGETS[isa])]
ALL = CASES + MEDIUM + ZERO_OUTLIER


@dataclass
class Built:
    case: Case
    op: object            # with a bias operand
    op_nobias: object
    weights: list[torch.Tensor]
    kernel: G.GemmKernel
    ptrs: object
    index: int


_WRAPPER = r"""
extern "C" void t@I@_id(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w, const float* bias) {
  @S@(x, M, ldx, y, ldy, w, bias, SpkTestIdentity());
}
extern "C" void t@I@_res(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, void* const* w, const float* bias,
                         const float* r, int64_t ldr) {
  @S@(x, M, ldx, y, ldy, w, bias, [r, ldr](float v, int64_t m, int64_t n) { return v + r[m * ldr + n]; });
}
"""
_WRAPPER_Q = r"""
extern "C" void t@I@_q(const void* xq, const float* xs, const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy,
                       void* const* w, const float* bias) {
  @S@_q(xq, xs, x, M, ldx, y, ldy, w, bias, SpkTestIdentity());
}
extern "C" void t@I@_qrow(const float* x, void* q, float* s, void* const* w) { @S@_quantize_row(x, q, s, w); }
"""
_WRAPPER_Q3 = r"""
extern "C" void t@I@_qrow3(const float* x, void* q, float* s) { @S@_quantize_row(x, q, s); }
"""
_TEST_PRELUDE = """#include <stdint.h>
struct SpkTestIdentity { float operator()(float v, int64_t, int64_t) const { return v; } };
"""


def _compile(units: dict[str, str]) -> ctypes.CDLL:
    """One shared object from C++ units for this machine: the backend's toolchain (cached,
    parallel) when it is there, else g++ directly (cached by content in the temp dir)."""
    try:
        from spokeshave.backends.cpu.toolchain import build_library
    except ImportError:
        build_library = None
    if build_library is not None:
        lib = build_library(units, Target.host())
        assert not lib.failures, f"kernel compile failed: {lib.failures[0].first_error} (log {lib.failures[0].log})"
        return lib.cdll
    tmp = Path(tempfile.gettempdir()) / f"spk_gemm_test_{os.getuid()}"
    tmp.mkdir(exist_ok=True)
    key = hashlib.sha256("".join(units[u] for u in sorted(units)).encode()).hexdigest()[:16]
    lib = tmp / f"libspk_gemm_test_{key}.so"
    if not lib.exists():
        def build(name: str) -> str:
            src = tmp / f"{name}_{key}.cpp"
            src.write_text(units[name])
            obj = str(src.with_suffix(".o"))
            out = subprocess.run(["g++", "-O2", "-march=native", "-fopenmp", "-fPIC", "-std=c++17", "-c", str(src),
                                  "-o", obj], capture_output=True, text=True)
            assert out.returncode == 0, f"kernel compile failed:\n{out.stderr[:20000]}"
            return obj
        with ThreadPoolExecutor(max_workers=2) as pool:
            objs = list(pool.map(build, sorted(units)))
        subprocess.run(["g++", "-shared", "-fopenmp", "-o", str(lib), *objs], check=True)
    return ctypes.CDLL(str(lib))


@pytest.fixture(scope="module")
def built():
    items: dict[str, Built] = {}
    units = {"a": _TEST_PRELUDE, "b": _TEST_PRELUDE}
    for i, c in enumerate(ALL):
        name, ws, attrs = make_weights(c.kind, c.n, c.k, seed=c.seed + i, group=c.group, sym=c.sym,
                                       oweight_zero=c.oweight_zero)
        op = parse_op(name, c.n, c.k, [_ty(t) for t in ws], attrs)
        kern = G.gemm_kernel(op, ws, target(c.features))
        assert kern is not None, c.id
        ptrs = (ctypes.c_void_p * len(kern.packed))(*[t.data_ptr() for t in kern.packed])
        op_nobias = parse_op(name, c.n, c.k, [_ty(t) for t in ws], attrs, bias=False)
        assert G.gemm_kernel(op_nobias, ws, target(c.features)).source == kern.source  # bias is a run-time pointer
        items[c.id] = Built(c, op, op_nobias, ws, kern, ptrs, i)
        # two translation units, split by case, so the compile uses both cores; within a
        # unit many kernels' sources are concatenated (the guards must dedupe the helpers)
        unit = "a" if i % 2 == 0 else "b"
        units[unit] += kern.source + _WRAPPER.replace("@I@", str(i)).replace("@S@", kern.symbol)
        if kern.has_prologue:
            units[unit] += _WRAPPER_Q.replace("@I@", str(i)).replace("@S@", kern.symbol)
            if c.kind in EXACT:
                units[unit] += _WRAPPER_Q3.replace("@I@", str(i)).replace("@S@", kern.symbol)
    return _compile(units), items


# ---------------------------------------------------------------------------- calling


def _p(t: torch.Tensor | None):
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


I64 = ctypes.c_int64


def run_kernel(lib, b: Built, x: torch.Tensor, bias: torch.Tensor | None,
               residual: torch.Tensor | None = None, ldy_pad: int = 0) -> torch.Tensor:
    """Calls the kernel on x ([M, K] view, any row stride); returns y [M, N]."""
    m, n = x.shape[0], b.kernel.n
    ybuf = torch.full((m, n + ldy_pad), float("nan"))
    args = [_p(x), I64(m), I64(x.stride(0)), _p(ybuf), I64(n + ldy_pad), b.ptrs, _p(bias)]
    if residual is None:
        getattr(lib, f"t{b.index}_id")(*args)
    else:
        getattr(lib, f"t{b.index}_res")(*args, _p(residual), I64(residual.stride(0)))
    if ldy_pad:
        assert torch.isnan(ybuf[:, n:]).all(), "wrote past N"
    return ybuf[:, :n]


def make_x(case: Case, m: int, seed: int, ld_pad: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(m, case.k + ld_pad, generator=g)
    if case.kind.endswith("split"):
        x[:, OUTLIERS] *= 30.0   # what the split is for: huge activation columns
    return x[:, :case.k]


def check(case: Case, y: torch.Tensor, ref: torch.Tensor) -> None:
    assert not torch.isnan(y).any()
    if case.kind in EXACT or case.oweight_zero:
        # exact int32 accumulation and the reference's rounding of the rescale: bit-identical
        diff = (y - ref).abs().max().item() if y.numel() else 0.0
        assert torch.equal(y, ref), f"{case.id}: max abs diff {diff} (must be bit-exact)"
    else:
        scale = max(ref.abs().max().item(), 1e-30) if ref.numel() else 1.0
        err = (y - ref).abs().max().item() if y.numel() else 0.0
        assert err <= 1e-5 * scale, f"{case.id}: max abs err {err} vs max |ref| {scale}"


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("m", [1, 3, 37, 128])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("case", CASES + ZERO_OUTLIER, ids=lambda c: c.id)
def test_kernel_matches_reference(built, case, m, with_bias):
    lib, items = built
    b = items[case.id]
    x = make_x(case, m, seed=m)
    bias = torch.randn(case.n) if with_bias else None
    y = run_kernel(lib, b, x, bias)
    check(case, y, reference(b, x, bias))


@pytest.mark.parametrize("case", CASES + MEDIUM, ids=lambda c: c.id)
def test_residual_epilogue_and_strides(built, case):
    """A nontrivial epilogue (reads a residual array) on strided x and y."""
    lib, items = built
    b = items[case.id]
    m = 37 if case in CASES else 130
    x = make_x(case, m, seed=7, ld_pad=3)
    bias = torch.randn(case.n)
    r = torch.randn(m, case.n + 2)[:, :case.n]
    y = run_kernel(lib, b, x, bias, residual=r, ldy_pad=5)
    ref = reference(b, x.contiguous(), bias) + r
    check(case, y, ref)


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "w8a8"], ids=lambda c: c.id)
def test_w8a8_integer_accumulation_is_exact(built, case):
    """With unit scales the result is the integer GEMM itself (|acc| < 2^24: exact float);
    weights span the whole int8 range, activations the quantizer's +-127."""
    lib, items = built
    b = items[case.id]
    g = torch.Generator().manual_seed(5)
    q = torch.randint(-128, 128, (case.n, case.k), generator=g, dtype=torch.int8)
    q[:, :8] = -128   # the AVX2 sign trick must be exact for every int8 weight, -128 included
    ones = torch.ones(case.n)
    kern = G.gemm_kernel(b.op, [q, ones], target(case.features))
    assert kern.symbol == b.kernel.symbol and kern.source == b.kernel.source  # same config, same text
    ptrs = (ctypes.c_void_p * len(kern.packed))(*[t.data_ptr() for t in kern.packed])
    xi = torch.randint(-127, 128, (37, case.k), generator=g).float()
    xi[:, 0] = 127.0   # amax 127 -> xscale 1: x is its own code
    y = run_kernel(lib, Built(case, b.op, b.op_nobias, [q, ones], kern, ptrs, b.index), xi, None)
    exact = (xi.double() @ q.double().t()).float()
    assert torch.equal(y, exact)


def _int8_codes_layout(kern: G.GemmKernel, q: torch.Tensor) -> torch.Tensor:
    """Reference int8 codes as the kernel stores them (u8 = q + 128 on the VNNI paths)."""
    u = q.to(torch.int16) + (128 if kern.isa in VNNI_ISAS else 0)
    return u.to(torch.uint8) if kern.isa in VNNI_ISAS else q.view(torch.uint8)


@pytest.mark.parametrize("case", [c for c in CASES if c.kind in ("w8a8", "w8a8_split")], ids=lambda c: c.id)
def test_quantize_row_is_bit_exact_with_ties(built, case):
    lib, items = built
    b = items[case.id]
    k = case.k
    g = torch.Generator().manual_seed(11)
    rows = torch.randn(6, k, generator=g) * 3
    # amax 127 -> scale 1: half-integers are exact ties of x / scale (half to even)
    rows[0] = (torch.randint(-254, 255, (k,), generator=g).float()) / 2
    rows[0, 1] = 127.0
    # amax 254 -> scale 2: odd integers are ties
    rows[1] = torch.randint(-254, 255, (k,), generator=g).float()
    rows[1, 2] = -254.0
    rows[2] = 0.0                      # all-zero row: scale 1
    rows[3] = 1e-13                    # amax <= 1e-12: scale 1, codes 0
    rows[4, :] = rows[4] * 1e-3        # small but regular
    split = case.kind == "w8a8_split"
    qrow = getattr(lib, f"t{b.index}_qrow")
    nbytes = b.kernel.act_row_bytes
    for r in rows:
        buf = torch.zeros(nbytes, dtype=torch.uint8)
        s = torch.zeros(1)
        qrow(_p(r), _p(buf), _p(s), b.ptrs)
        ref_in = r.clone()
        if split:
            ref_in[OUTLIERS] = 0
        qref, sref = quant.quantize_per_token_int8(ref_in[None])
        assert s.item() == sref.item()
        assert torch.equal(buf[:k], _int8_codes_layout(b.kernel, qref[0])), case.id
        if not split:   # the 3-argument form (no weights needed) writes the same row
            buf3, s3 = torch.zeros(nbytes, dtype=torch.uint8), torch.zeros(1)
            getattr(lib, f"t{b.index}_qrow3")(_p(r), _p(buf3), _p(s3))
            assert torch.equal(buf3[:k], buf[:k]) and s3.item() == s.item()


def _near_tie_rows(k: int, group: int, n: int = 48) -> torch.Tensor:
    """Rows whose values sit 0-3 ulps from (m + 1/2) * s for scales s that are no power of
    two, each group spanning [-127 s, 127 s], so the quantizers' x / scale lands next to a
    tie: where x * (1 / scale) and the true quotient round apart if any."""
    g = torch.Generator().manual_seed(19)
    rows = []
    for _ in range(n):
        s0 = float(torch.rand(1, generator=g)) * 0.3 + 0.01
        m = torch.randint(-127, 127, (k,), generator=g).double()
        x = ((m + 0.5) * s0).float()
        for _ in range(int(torch.randint(0, 4, (1,), generator=g))):
            x = torch.nextafter(x, torch.where(torch.rand(k, generator=g) < 0.5, -torch.inf, torch.inf))
        x[::group] = -127 * s0
        x[1::group] = 127 * s0
        rows.append(x)
    return torch.stack(rows)


@pytest.mark.parametrize("case", [c for c in CASES if c.kind in EXACT], ids=lambda c: c.id)
def test_quantizers_round_near_ties_as_the_true_division(built, case):
    """The vector quantizers multiply by 1 / scale and divide only near a tie: their codes
    equal the reference's true division on values a few ulps from every tie."""
    lib, items = built
    b = items[case.id]
    k = case.k
    group = case.group or k
    qrow = getattr(lib, f"t{b.index}_qrow3")
    for r in _near_tie_rows(k, group):
        buf = torch.zeros(b.kernel.act_row_bytes, dtype=torch.uint8)
        sc = torch.zeros(1)
        qrow(_p(r), _p(buf), _p(sc))
        if case.kind == "w8a8g":
            q = quant.quantize_token_groups_int8(r[None], group)[0]
        else:
            q = quant.quantize_per_token_int8(r[None])[0]
        assert torch.equal(buf[:k], _int8_codes_layout(b.kernel, q[0])), case.id


def _group_rows(k: int, group: int) -> torch.Tensor:
    """Rows that probe the w8a8g quantizer's edges, group by group."""
    g = torch.Generator().manual_seed(13)
    rows = torch.randn(6, k, generator=g) * 3
    rows[1] = rows[1].abs() + 0.5            # all positive: lo = 0, zero point -127
    rows[2] = -rows[2].abs() - 0.5           # all negative: hi = 0, zero point 127
    rows[3] = 0.0                            # all-zero groups: scale 1
    rows[4, :group] = 1e-13                  # a range <= 1e-12: scale 1
    rows[4, group:] *= 1e-3
    # lo -127, hi 127: scale 1, zero 0, so half-integers are exact ties (half to even)
    rows[5] = torch.randint(-254, 255, (k,), generator=g).float() / 2
    rows[5, ::group] = -127.0
    rows[5, 1::group] = 127.0
    return rows


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "w8a8g"], ids=lambda c: c.id)
def test_w8a8g_quantize_row_is_bit_exact(built, case):
    """The row record: codes as the kernel stores them, then the group scales and zero
    points (+ 128 on the VNNI paths), equal to `quant.quantize_token_groups_int8`."""
    lib, items = built
    b = items[case.id]
    k, ng = case.k, case.k // case.group
    assert b.kernel.act_row_bytes == k + 8 * ng
    vnni = b.kernel.isa in VNNI_ISAS
    for r in _group_rows(k, case.group):
        buf = torch.zeros(b.kernel.act_row_bytes, dtype=torch.uint8)
        getattr(lib, f"t{b.index}_qrow3")(_p(r), _p(buf), ctypes.c_void_p(0))
        q, sc, z = quant.quantize_token_groups_int8(r[None], case.group)
        assert torch.equal(buf[:k], _int8_codes_layout(b.kernel, q[0])), case.id
        tail = buf[k:].view(torch.float32)
        assert torch.equal(tail[:ng], sc[0]), case.id
        assert torch.equal(tail[ng:], z[0] + (128 if vnni else 0)), case.id


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "w8a8g"], ids=lambda c: c.id)
def test_w8a8g_matches_reference_on_edge_rows(built, case):
    """Whole GEMMs on the quantizer's edge rows (one-signed groups, zero and tiny ranges,
    ties) and on weights at -128: bit-identical to `quant.linear_w8a8g`."""
    lib, items = built
    b = items[case.id]
    x = _group_rows(case.k, case.group).repeat(3, 1)
    bias = torch.randn(case.n)
    check(case, run_kernel(lib, b, x, bias), reference(b, x, bias))
    g = torch.Generator().manual_seed(17)
    q = torch.randint(-128, 128, (case.n, case.k), generator=g, dtype=torch.int8)
    q[:, :8] = -128   # the AVX2 sign trick and the column sums at the int8 edge
    ws = torch.rand(case.n, generator=g) * 0.01 + 1e-3
    kern = G.gemm_kernel(b.op, [q, ws], target(case.features))
    assert kern.symbol == b.kernel.symbol and kern.source == b.kernel.source
    ptrs = (ctypes.c_void_p * len(kern.packed))(*[t.data_ptr() for t in kern.packed])
    y = run_kernel(lib, Built(case, b.op, b.op_nobias, [q, ws], kern, ptrs, b.index), x, bias)
    check(case, y, quant.linear_w8a8g(x, q, ws, bias, case.group))


@pytest.mark.parametrize("case", [c for c in CASES if c.kind in INT8_ACT], ids=lambda c: c.id)
def test_prologue_entry_matches_full_entry(built, case):
    """SYMBOL_q on rows quantized by SYMBOL_quantize_row = SYMBOL (what fusion relies on)."""
    lib, items = built
    b = items[case.id]
    m = 37
    x = make_x(case, m, seed=3)
    bias = torch.randn(case.n)
    nbytes = b.kernel.act_row_bytes
    xq = torch.zeros(m, nbytes, dtype=torch.uint8)
    xs = torch.zeros(m)
    qrow = getattr(lib, f"t{b.index}_qrow")
    for i in range(m):
        qrow(_p(x[i]), ctypes.c_void_p(xq.data_ptr() + i * nbytes), ctypes.c_void_p(xs.data_ptr() + 4 * i), b.ptrs)
    y = torch.full((m, case.n), float("nan"))
    split = case.kind == "w8a8_split"
    getattr(lib, f"t{b.index}_q")(_p(xq), _p(xs), _p(x) if split else ctypes.c_void_p(0), I64(m), I64(x.stride(0)),
                                  _p(y), I64(case.n), b.ptrs, _p(bias))
    assert torch.equal(y, run_kernel(lib, b, x, bias))


def test_zero_rows_is_a_no_op(built):
    lib, items = built
    for b in items.values():
        y = run_kernel(lib, b, torch.zeros(0, b.case.k), None)
        assert y.shape == (0, b.case.n)


# ---------------------------------------------------------------------------- generation only


def test_isa_selection_reads_the_target_not_the_host():
    assert G.int8_isa(target(TARGETS["avx512_vnni"])) == "avx512_vnni"
    assert G.int8_isa(target(TARGETS["amx"])) == "avx512_vnni"
    assert G.has_amx(target(TARGETS["amx"]))
    assert not G.has_amx(target(TARGETS["avx512_vnni"]))
    assert not G.has_amx(target("avx2,fma,amx_tile,amx_int8"))   # the tile kernels read zmm panels
    assert G.int8_isa(target(TARGETS["avx_vnni"])) == "avx_vnni"
    assert G.int8_isa(target("avx2,fma")) == "avx2"
    assert G.int8_isa(target("sse4_2")) == "scalar"
    assert G.int8_isa(Target.parse("cpu:aarch64:neon,dotprod")) == "scalar"
    assert G.weight_only_isa(target(TARGETS["avx512_vnni"])) == "avx512"
    assert G.weight_only_isa(target("avx2,fma")) == "avx2"
    assert G.weight_only_isa(target("avx2")) == "scalar"


def test_identical_configs_share_symbol_and_source_and_differ_otherwise():
    t = target(TARGETS["avx512_vnni"])
    name, ws1, _ = make_weights("w8a8", 40, 99, seed=1)
    _, ws2, _ = make_weights("w8a8", 40, 99, seed=2)
    op = parse_op(name, 40, 99, [_ty(w) for w in ws1])
    a, b = G.gemm_kernel(op, ws1, t), G.gemm_kernel(op, ws2, t)
    assert (a.symbol, a.source) == (b.symbol, b.source)
    assert not torch.equal(a.packed[0], b.packed[0])
    c = G.gemm_kernel(op, ws1, target("avx2,fma"))
    assert c.symbol != a.symbol and c.isa == "avx2"
    assert a.act_row_bytes == 100 and a.n == 40 and a.k == 99
    assert all(p.is_contiguous() and p.device.type == "cpu" for p in a.packed)
    # every definition is guarded: the source concatenated with itself is one definition
    assert a.source.count(f"#ifndef SPK_{a.symbol}") == 1


def test_unsupported_ops_fall_back():
    t = target(TARGETS["avx512_vnni"])
    name, ws, _ = make_weights("w8", 8, 16, seed=0)
    text = ("func.func @forward(%x: tensor<?x16xbf16>, %q: tensor<8x16xi8>, %s: tensor<8xf32>) -> tensor<?x8xbf16> {\n"
            "  %0 = \"spk.linear_w8\"(%x, %q, %s) : (tensor<?x16xbf16>, tensor<8x16xi8>, tensor<8xf32>) -> tensor<?x8xbf16>\n"
            "  return %0 : tensor<?x8xbf16>\n}\n")
    op = next(o for o in spokeshave.parse(text).walk() if o.name == name)
    assert G.gemm_kernel(op, ws, t) is None            # bf16 input
    op32 = parse_op(name, 8, 16, [_ty(w) for w in ws])
    assert G.gemm_kernel(op32, ws[:1], t) is None       # wrong weight count
    _, ws8, _ = make_weights("w8a8_split", 8, 64, seed=0)
    ws8[2] = ws8[2].to(torch.bfloat16)                  # outlier GEMM in bf16: not ours
    opsplit = parse_op("spk.linear_w8a8_split", 8, 64, [_ty(w) for w in ws8[:2]] +
                       ["tensor<8x3xbf16>", _ty(ws8[3])])
    assert G.gemm_kernel(opsplit, ws8, t) is None


# ---------------------------------------------------------------------------- target flags


def _flags_for(t: Target) -> list[str] | None:
    try:
        from spokeshave.backends.cpu.toolchain import BASE_FLAGS, target_flags
    except ImportError:
        return None
    return [f for f in BASE_FLAGS if not f.startswith("-O")] + list(target_flags(t))


def _one_of_each(features: str) -> str:
    """Every op's kernel for a target, instantiated, in one translation unit."""
    src = _TEST_PRELUDE
    for i, kind in enumerate(("w8a8", "w8a8g", "w8a8_split", "w8", "fp8", "w8_split", "sparse24", "w4g")):
        name, ws, attrs = make_weights(kind, 24, 64, seed=i, group=32, sym=False)
        k = G.gemm_kernel(parse_op(name, 24, 64, [_ty(t) for t in ws], attrs), ws, target(features))
        src += k.source + _WRAPPER.replace("@I@", str(i)).replace("@S@", k.symbol)
        if k.has_prologue:
            src += _WRAPPER_Q.replace("@I@", str(i)).replace("@S@", k.symbol)
    return src


@pytest.mark.parametrize("isa", [*TARGETS, "avx2-nofma"], ids=str)
def test_sources_compile_with_exactly_the_targets_flags(isa, tmp_path):
    """What the backend compiles for another machine: the target's -m flags, no -march."""
    features = "avx2" if isa == "avx2-nofma" else TARGETS[isa]   # int8 avx2, weight-only scalar
    flags = _flags_for(target(features))
    if flags is None:
        pytest.skip("backends.cpu.toolchain is not there")
    src = tmp_path / "k.cpp"
    src.write_text(_one_of_each(features))
    out = subprocess.run(["g++", "-O0", *flags, "-c", str(src), "-o", str(tmp_path / "k.o")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[:4000]


def test_a_kernel_compiled_without_its_isa_says_so(tmp_path):
    src = tmp_path / "k.cpp"
    src.write_text(_one_of_each(TARGETS["avx512_vnni"]))
    out = subprocess.run(["g++", "-fsyntax-only", "-std=c++17", "-mavx2", "-mfma", str(src)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "needs -mavx512f -mavx512bw -mavx512vnni" in out.stderr
