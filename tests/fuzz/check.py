"""The differential check of one fuzz `Case`: `fuse` + a generated-code backend against the
reference.

`check(case, backend)` compiles the case's IR once with `pipeline="fuse"` on `backend`
("cpu", the default, for the case's target; "triton", under `TRITON_INTERPRET=1`, which the
caller sets) with a fixed roofline, so fusion never depends on a measurement of the host,
calls it at both sizes of
its dynamic dims, and compares every output with the reference interpreter on the unfused
IR at the tolerance of its op family (stated and justified below). A `Result` says pass,
skip (with a reason) or fail (with the kind and a report that reads like a test case: the
IR, ready for `spokeshave-opt`, the input shapes and the seed). The generator is
`graphs.py`.
"""
from __future__ import annotations

import math
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from graphs import ACT_QUANTIZED, COMPRESSED, COST_MODEL, Case
from spokeshave.backends.cpu import toolchain
from spokeshave.compiler.dialect import decode_weight, op_def
from spokeshave.compiler.interpreter import Interpreter
from spokeshave.compiler.numerics import quant
from spokeshave.compiler.weights import WeightStore

import spokeshave

# ------------------------------------------------------------------ tolerances
#
# Float paths (pointwise, reductions, float and weight-only compressed linears, attention):
#     max |cpu - ref| <= RTOL * max |ref| + ATOL.
# The row kernels reorder sums (vectorised reductions), use polynomial exp / erf / tanh
# (~1 ulp, erf < 3.7e-7 absolute, backends/cpu/prelude.py) and the generated GEMMs sum K
# products in another order than torch; each of these is a few float32 ulps (6e-8) of the
# values involved, and the generator keeps graphs well conditioned (magnitudes below 1e4,
# exp / softmax inputs bounded), so after a dozen ops the error stays far below 1e-5 of the
# output's scale. Bit equality is not the contract (tests/test_rows.py states the same).
# The absolute floor only matters for all-zero or tiny outputs.
RTOL = 1e-5
ATOL = 1e-6
# Integer paths (`spk.linear_w8a8`: per-token int8 x int8 -> exact int32; `spk.linear_w8a8g`:
# per token and group, exact int32 partial sums added in float in a fixed order; compared where a
# w8a8 result is itself an output): the codes and the accumulator are exact on both sides,
# so the only freedom is the float rescale `acc * x_scale * w_scale (+ bias)`; a kernel that
# associated the two scales first, or contracted the bias add into an FMA, would differ by
# one rounding per operation: INT_ULPS ulps of the output's magnitude (gemm.py claims, and
# the runs so far show, bit equality). The float64 allowance below never applies here.
INT_ULPS = 8
# Ill-conditioned graphs (a sum of LayerNorm outputs is ~0, a difference of close values):
# an output that fails the float tolerance still passes when the CPU's distance to a float64
# reference is within CONDITION times torch's own float32 distance to it (Inductor's
# accuracy check does the same with its fp64 baseline); such passes are counted apart.
# A real bug (a wrong index, a missed broadcast, a wrong constant) is wrong by far more.
CONDITION = 8.0
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)

# ------------------------------------------------------------------ the check

# The sizes alternate: calls 1-2 run interpreted, 3-4 record (the cpu backend replays a
# signature from its third call, `backends/cpu/replay.py`), 5-6 replay with new values.
CALLS = (0, 1, 2, 3, 4, 5)


@dataclass
class Result:
    status: str                 # pass | skip | fail
    kind: str = ""              # skip reason / failure kind
    report: str = ""
    hits: int = 0               # cached units and links
    compiled: int = 0           # units and links compiled now
    steps: Counter = field(default_factory=Counter)    # lowered steps by kind
    groups: Counter = field(default_factory=Counter)   # spk.fused groups by kind
    fallbacks: int = 0
    worst: float = 0.0          # worst error / tolerance over outputs
    conditioned: int = 0        # outputs passed only by the float64 condition check
    not_bitwise: int = 0        # outputs of EXACT ops only that were not bit-identical
    replayed: int = 0           # calls the cpu backend's replay runtime served
    info: list = field(default_factory=list)  # (category, text) of the above, for the summary

    @property
    def signature(self) -> str:
        return self.kind


class _BuildCounter:
    """Counts `toolchain.build_library` calls (a compile); patched in for the whole check."""

    calls = 0
    _real = None

    def __enter__(self):
        if _BuildCounter._real is None:
            _BuildCounter._real = toolchain.build_library

            def counted(*a, **k):
                _BuildCounter.calls += 1
                return _BuildCounter._real(*a, **k)
            toolchain.build_library = counted
        return self

    def __exit__(self, *exc):
        return False


def _scale(want: torch.Tensor) -> float:
    """max |want| over its finite values (0 for none)."""
    fin = want[torch.isfinite(want)] if want.is_floating_point() else want
    return fin.abs().max().item() if fin.numel() else 0.0


def tolerance(family: str, want: torch.Tensor) -> float:
    scale = _scale(want)
    if family == "int":
        return INT_ULPS * FLOAT32_EPS * scale + 1e-30
    return RTOL * scale + ATOL


def _error(got: Any, want: torch.Tensor) -> tuple[float, str]:
    """(max abs error, note); inf when shapes, dtypes or non-finite positions differ."""
    if not isinstance(got, torch.Tensor):
        return math.inf, f"got {type(got).__name__}, not a tensor"
    if tuple(got.shape) != tuple(want.shape):
        return math.inf, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return math.inf, f"dtype {got.dtype} != {want.dtype}"
    if want.numel() == 0:
        return 0.0, ""
    g, w = got.double(), want.double()
    if not torch.equal(torch.isfinite(g), torch.isfinite(w)):
        return math.inf, "non-finite values differ"
    fin = torch.isfinite(w)
    if not torch.equal(g[~fin].nan_to_num(), w[~fin].nan_to_num()):
        return math.inf, "inf values differ"
    return (g[fin] - w[fin]).abs().max().item() if fin.any() else 0.0, ""


def _reference64(ref_cm, inputs: list[torch.Tensor], w8a8_inputs: dict) -> list[torch.Tensor]:
    """The reference in float64 (float parameters and inputs upcast, compressed linears as
    decode-then-float64-GEMM), with every w8a8 input taken from the float32 run, so its
    integer emulation sees the same codes: how far torch's own float32 is from the exact
    result on this graph, which measures how ill-conditioned the graph is."""
    weights = WeightStore({n: t.double() if t.dtype == torch.float32 else t for n, t in ref_cm.weights.items()})
    kernels = {name: _linear64 for name in COMPRESSED}
    interp = Interpreter(ref_cm.module, weights, kernels=kernels)

    def observe(v, data):
        return w8a8_inputs[v].double() if v in w8a8_inputs else None
    outs = interp(*[t.double() if t.dtype == torch.float32 else t for t in inputs], observe=observe)
    return [o.double() for o in outs]


def _linear64(op, args: list) -> torch.Tensor:
    d = op_def(op.name)
    ops = d.bind(op)
    x = args[0]
    bias = [args[i].double() for i in ops.positions_of("bias")]
    weights = [args[i] for i in ops.positions_of("weight")]
    if op.name in ACT_QUANTIZED:
        q, s = weights[0], weights[1].float()
        xr = x.clone()
        if op.name == "spk.linear_w8a8_split":
            xr[..., weights[3]] = 0
        if op.name == "spk.linear_w8a8g":
            y = quant.linear_w8a8g(xr.float(), q, s, None, op.attributes["group"]).double()
        else:
            y = quant.linear_w8a8(xr.float(), q, s).double()
        if op.name == "spk.linear_w8a8_split":
            y = y + torch.nn.functional.linear(x.index_select(-1, weights[3]).double(), weights[2].double())
    else:
        w = decode_weight(op, [t.float() if t.dtype == torch.float64 else t for t in weights]).double()
        y = torch.nn.functional.linear(x.double(), w)
    return y + bias[0] if bias else y


def _fallbacks(exe) -> int:
    return sum(p.fallbacks for p in getattr(exe, "plans", {}).values())


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| where both are finite."""
    a, b = a.double(), b.double()
    fin = torch.isfinite(a) & torch.isfinite(b)
    return (a[fin] - b[fin]).abs().max().item() if fin.any() else 0.0


def _reference_failed(e: BaseException) -> str:
    """A skip reason: which op torch refused, and how (`interpreting "aten.amax" ... failed`)."""
    m = re.search(r'interpreting "([^"]+)"', str(e))
    cause = type(e.__cause__).__name__ if e.__cause__ is not None else type(e).__name__
    return f"reference failed: {m.group(1) if m else '?'} raised {cause}"


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0][:200] if s else ''}"


def check(case: Case, backend: str = "cpu") -> Result:
    """Compile `case` with fuse on `backend`, call it at both sizes, compare with the reference."""
    try:
        return _check(case, backend)
    except Exception as e:  # a bug of this harness: fail loudly, with the case
        return _fail("harness error", case, _first_line(e) + "\n" + traceback.format_exc())


def _check(case: Case, backend: str) -> Result:
    res = Result("pass")
    with _BuildCounter():
        try:
            ref_cm = spokeshave.compile_module(spokeshave.parse(case.text), WeightStore(dict(case.weights)),
                                               pipeline="", backend="reference")
            ref = Interpreter(ref_cm.module, ref_cm.weights)
        except Exception as e:  # the generator's bug, not the compiler's
            return Result("skip", "invalid graph: " + _first_line(e), case.describe())
        try:
            cm = spokeshave.compile_module(spokeshave.parse(case.text), WeightStore(dict(case.weights)),
                                           pipeline="fuse", backend=backend, cost_model=COST_MODEL,
                                           target=case.target if backend == "cpu" else None)
        except Exception as e:
            return _fail("compile error", case, _first_line(e) + "\n" + traceback.format_exc(limit=-3))
        exe = cm.executable
        lib = getattr(exe, "library", None)
        if lib is not None:
            res.hits, res.compiled = lib.hits, lib.compiled
        res.steps = Counter(s.kind for p in getattr(exe, "plans", {}).values() for s in p.steps)
        res.groups = Counter(op.attributes.get("kind", "?") for op in cm.module.entry.body.ops
                             if op.name == "spk.fused")
        if getattr(exe, "failed", None):
            return _fail("C++ build failed", case, "\n".join(f"{k}: {v}" for k, v in exe.failed.items()),
                         res)
        builds = _BuildCounter.calls
        ret = ref_cm.module.entry.return_op.operands
        w8a8_inputs = {op.operands[0] for op in ref_cm.module.entry.body.ops if op.name in ACT_QUANTIZED}
        notes, where = [], []
        for call in CALLS:
            inputs = case.tensors(call)
            before = _fallbacks(exe)
            try:
                got = cm(*[t.clone() for t in inputs])
            except Exception as e:
                try:
                    ref(*[t.clone() for t in inputs])
                except Exception as e2:  # torch refuses it too (amax over an empty dim)
                    return Result("skip", _reference_failed(e2), case.describe())
                return _fail("run error", case, f"call {call + 1}: " + _first_line(e) + "\n"
                             + traceback.format_exc(limit=-3), res)
            got = list(got) if isinstance(got, (tuple, list)) else [got]
            if all(t.numel() for t in inputs):  # an empty dim may take the reference path
                res.fallbacks += _fallbacks(exe) - before
            adopt = {ret[i]: (got[i], case.families[i]) for i in case.observed}
            seen: dict = {}

            def observe(v, data, adopt=adopt, seen=seen):
                new = None
                if v in adopt and isinstance(data, torch.Tensor):
                    mine, fam = adopt[v]
                    err, _ = _error(mine, data)
                    if err <= tolerance(fam, data):
                        new = mine.clone()
                if v in w8a8_inputs:
                    seen[v] = data if new is None else new
                return new
            try:
                want = ref(*[t.clone() for t in inputs], observe=observe)
            except Exception as e:  # torch refuses the input, so must the backend (amax over [0])
                return _fail("run without error where the reference raised", case,
                             f"call {call + 1}: the reference: {_first_line(e)}", res)
            # non-finite values (a mean over an empty dim) are compared too: same positions,
            # same infinities (`_error`)
            if len(got) != len(want):
                return _fail("mismatch", case, f"{len(got)} outputs, the reference has {len(want)}", res)
            want64 = None
            for i, (g, w) in enumerate(zip(got, want)):
                err, note = _error(g, w)
                tol = tolerance(case.families[i], w)
                if case.exact[i] and not (isinstance(g, torch.Tensor) and torch.equal(g, w)):
                    res.not_bitwise += 1  # would break the premise of EXACT (w8a8 inputs)
                    res.info.append(("not bit-identical", f"output {i}: max |cpu - ref| = {err:.3g}\n"
                                     + case.describe()))
                if err <= tol:
                    res.worst = max(res.worst, err / tol)
                    continue
                scale = _scale(w)
                msg = (f"call {call + 1}, output {i} ({case.families[i]}): max |cpu - ref| = {err:.3g}, "
                       f"tolerance {tol:.3g}, max |ref| = {scale:.3g} {note}")
                if case.families[i] == "float" and math.isfinite(err):
                    if want64 is None:
                        want64 = _reference64(ref_cm, inputs, seen)
                    e_cpu = _maxdiff(g, want64[i])
                    e_ref = _maxdiff(w, want64[i])
                    if e_cpu <= CONDITION * e_ref + tol:
                        res.conditioned += 1
                        res.info.append(("passed by the float64 check", msg + f"; against float64: cpu "
                                         f"{e_cpu:.3g}, torch float32 {e_ref:.3g}\n" + case.describe()))
                        continue
                    msg += (f"; against float64: cpu {e_cpu:.3g}, torch float32 {e_ref:.3g} "
                            f"(allowed {CONDITION}x + tolerance)")
                res.worst = max(res.worst, err / tol if tol else math.inf)
                d = ret[i].defining_op
                where.append(d.name if d is not None else "an input")
                notes.append(msg)
        if notes:
            fam = "int" if any("(int)" in n for n in notes) else "float"
            return _fail(f"mismatch ({fam}) at {where[0]}", case, "\n".join(notes), res)
        if backend == "triton" and exe.failed:  # a kernel failed at its first launch
            return _fail("kernel failed", case, "\n".join(f"{k}: {v}" for k, v in exe.failed.items()),
                         res)
        res.replayed = getattr(getattr(exe, "_run", None), "replayed", 0)
        if _BuildCounter.calls != builds:
            return _fail("recompiled", case, "calling at another size built C++ again", res)
        if res.fallbacks:
            return _fail("reference path", case, f"{res.fallbacks} group call(s) took the reference "
                         f"path although no dim broadcasts or is empty at run time", res)
    return res


def _fail(kind: str, case: Case, detail: str, res: Result | None = None) -> Result:
    r = res or Result("fail")
    r.status, r.kind = "fail", kind
    r.report = f"{kind}:\n{detail}\n{case.describe()}"
    return r
