"""The roofline cost model: an analytical estimate, and the fallback of the learned one.

A kernel takes as long as the slower of moving its bytes and doing its flops, plus a fixed
launch / loop-nest overhead:

    seconds = max(bytes / bandwidth, flops / peak_flops) + overhead_s

* bytes are the group's boundary only (`compiler.cost.boundary`): what it reads from outside
  and the results others read. Intermediates of a fused group are free, which is exactly
  why fusing pays, and a compressed weight is cheaper to move simply because its operand
  type is smaller (int8: 1 byte per weight, int4 packed in ui8: half a byte).
* flops follow per-op rules in `op_flops` (GEMMs 2*M*N*K, attention, ~5 per element for
  reductions and norms, 1 per element for cheap elementwise ops, 8 for transcendental ones,
  0 for views).
* peak and bandwidth are measured on the host in a short calibration (`measure_host`), or
  taken from a rough table when the target is another machine (a parsed target, a GPU).

A candidate whose config names GEMM tiles (`block_m`, `block_n`, `block_k`, and `rows`,
the call's M, when known: a generated GEMM's launch configuration, which the Triton backend ranks with this model) is charged as
tiled: the input is read once per column tile and the weight once per row tile, the flops
of the padded tiles are done, and the device is only as busy as its tiles fill it (waves of
`cores` programs; a GPU's cores are its SMs). A `split_k` of S launches S programs per
output tile, each on a slice of K, and adds their partial tiles' round trip through memory. Under Triton's interpreter
(`Target.arch == "interpreter"`) a tile step costs the same at any block size (numpy on
whole tiles), so there the time is the count of tile steps.

Otherwise it ignores: cache reuse and tiling (every boundary byte comes from memory once, nothing
spills), vector width and dtype beyond the single peak (an int8 GEMM is not faster per
flop than an fp32 one), dequantization and decompression work, sparsity speed-ups, thread
and occupancy effects, and launch-to-launch overlap. That makes it good at "does this move
fewer bytes" (fusion, weight compression at small batch) and poor at choosing tile
configurations, which it does not distinguish. The learned LightGBM model replaces it behind
the same `CostModel` protocol; this one stays as the fallback for targets without one.
"""
from __future__ import annotations

import math
import time

import torch

from spokeshave.compiler.cost import Candidate, Cost, boundary
from spokeshave.compiler.dialect import LINEAR, OPS, REDUCTION, REGION_BODY, VIEW, has_trait, op_def
from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.ir import ELEMENT_TYPES, Op, TensorType, Value, torch_dtype
from spokeshave.compiler.target import INTERPRETER_ARCH, Target

_ITEMSIZE: dict[str, int] = {name: torch_dtype(name).itemsize for name in ELEMENT_TYPES}

# Triton's interpreter (`TRITON_INTERPRET=1`) runs each tile step of each program as numpy
# calls, ~1 ms whatever the tile's size (measured on the tests' GEMMs)
INTERPRETED_TILE_STEP_S = 1e-3

# ------------------------------------------------------------------ op classes

# Which ops re-index only (views) and which reduce come from the dialect's traits (`VIEW`,
# `REDUCTION`), so the fusion pass and this model agree on what an op is; see `_has`.
# What no trait says is kept here: the GEMM-like ATen ops without a weight operand (the
# `linear` trait is for ops that read their input through a weight), and which elementwise
# ops are transcendental (the `pointwise` trait says where an op reads its inputs, not what
# an element costs).
_GEMMS = frozenset({"aten.matmul", "aten.bmm", "aten.mm"})
_GEMMS_WITH_BIAS_FIRST = frozenset({"aten.addmm", "aten.baddbmm"})  # (bias, a, b)

_FLOPS_PER_REDUCED_ELEMENT = 5.0

# Elementwise ops computed by a polynomial or a table rather than one instruction; matched on
# the name without its overload.
_TRANSCENDENTAL = frozenset({
    "aten.gelu", "aten.silu", "aten.exp", "aten.tanh", "aten.sigmoid", "aten.rsqrt",
    "aten.erf", "aten.log", "aten.sin", "aten.cos",
})
_FLOPS_PER_TRANSCENDENTAL = 8.0


def _is_linear_like(op: Op) -> bool:
    return has_trait(op, LINEAR)


def _has(op: Op, trait: str) -> bool:
    """`op` has `trait` by its record; an ATen overload without a record takes the traits of
    the recorded overloads of the same op (`aten.sum` is a reduction as `aten.sum.dim_IntList`
    is, `aten.squeeze` a view as `aten.squeeze.dim` is)."""
    if op_def(op.name) is not None:
        return has_trait(op, trait)
    base = _base_name(op.name)
    if not base.startswith(("aten.", "prims.")):
        return False
    return any(trait in d.traits for name, d in OPS.items() if _base_name(name) == base)


def _base_name(name: str) -> str:
    """`aten.transpose.int` -> `aten.transpose`; other dialects keep their full name."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("aten", "prims") else name


def _dim(d: int | None, dim_hint: int) -> int:
    return dim_hint if d is None else d


def _numel(t: TensorType, dim_hint: int) -> int:
    return math.prod(_dim(d, dim_hint) for d in t.shape)


def _tensor(v: Value) -> TensorType | None:
    return v.type if isinstance(v.type, TensorType) else None


def value_bytes(value: Value, dim_hint: int = 128) -> float:
    """Bytes of a tensor value (dynamic dims taken as `dim_hint`); 0 for scalars and `none`,
    which travel as kernel arguments, not through memory."""
    t = _tensor(value)
    return 0.0 if t is None else float(_numel(t, dim_hint) * _ITEMSIZE.get(t.dtype, 4))


def _moves_nothing(op: Op) -> bool:
    """Views, and ops without a tensor result (constants, `spk.none`, terminators)."""
    return not any(_tensor(r) for r in op.results) or _has(op, VIEW)


def op_flops(op: Op, dim_hint: int = 128) -> float:
    """Floating-point (or integer MAC) operations of one op; dynamic dims are `dim_hint`."""
    if op.regions and has_trait(op, REGION_BODY):  # a fused group: what its body computes
        return sum(op_flops(inner, dim_hint) for r in op.regions for b in r.blocks for inner in b.ops)
    results = [t for r in op.results if (t := _tensor(r)) is not None]
    base = _base_name(op.name)
    if not results or _has(op, VIEW):
        return 0.0
    out = results[0]
    inputs = [_tensor(v) for v in op.operands]

    if _is_linear_like(op):
        x = inputs[0]
        if x is None or not x.shape or not out.shape:
            return 0.0
        k, n = _dim(x.shape[-1], dim_hint), _dim(out.shape[-1], dim_hint)
        tokens = _numel(out, dim_hint) // max(n, 1)
        return 2.0 * tokens * n * k
    if base in _GEMMS or base in _GEMMS_WITH_BIAS_FIRST:
        a = inputs[1] if base in _GEMMS_WITH_BIAS_FIRST else inputs[0]
        if a is None or not a.shape:
            return 0.0
        # Every output element is a K-long dot product, batch dims included.
        return 2.0 * _numel(out, dim_hint) * _dim(a.shape[-1], dim_hint)
    if base == "aten.scaled_dot_product_attention":
        q, k, v = inputs[:3]
        if q is None or k is None or v is None or min(q.rank, k.rank, v.rank) < 2:
            return 0.0
        lq, d = _dim(q.shape[-2], dim_hint), _dim(q.shape[-1], dim_hint)
        lk, dv = _dim(k.shape[-2], dim_hint), _dim(v.shape[-1], dim_hint)
        batch_heads = _numel(q, dim_hint) // max(lq * d, 1)
        scores = batch_heads * lq * lk
        # Q K^T and P V are 2*Lq*Lk*D each (4*B*H*Lq*Lk*D when Dv == D), then the softmax.
        return 2.0 * scores * (d + dv) + _FLOPS_PER_REDUCED_ELEMENT * scores
    if _has(op, REDUCTION):
        x = inputs[0] if inputs else None
        return _FLOPS_PER_REDUCED_ELEMENT * _numel(x if x is not None else out, dim_hint)
    per_element = _FLOPS_PER_TRANSCENDENTAL if base in _TRANSCENDENTAL else 1.0
    return per_element * sum(_numel(t, dim_hint) for t in results)


# ------------------------------------------------------------------ machine constants

# Rough figures for targets we cannot measure, sustained rather than datasheet numbers.
# CPU, per core, by vector width: fp32 FLOP/s (two FMA pipes at ~3 GHz, derated) and a
# core's share of memory bandwidth, capped for the socket.
_CPU_FLOPS_PER_CORE = {512: 100e9, 256: 50e9, 128: 12e9, 0: 4e9}
_CPU_BANDWIDTH_PER_CORE = 10e9
_CPU_BANDWIDTH_CAP = 250e9

# NVIDIA, by lowest compute capability: (typical SM count, fp32 FLOP/s per SM on CUDA
# cores, HBM/GDDR bandwidth of a typical part). Tensor-core rates are not used: the IR's
# dtype decides those and this model has a single peak.
_CUDA_TABLE: tuple[tuple[tuple[int, int], int, float, float], ...] = (
    ((7, 0), 80, 196e9, 900e9),    # V100
    ((7, 5), 40, 204e9, 320e9),    # T4
    ((8, 0), 108, 180e9, 1.9e12),  # A100
    ((8, 6), 82, 435e9, 936e9),    # RTX 3090 / A40-class
    ((8, 9), 128, 640e9, 1.0e12),  # RTX 4090 / L40-class
    ((9, 0), 132, 507e9, 3.35e12),  # H100 SXM
    ((10, 0), 148, 486e9, 8.0e12),  # B200
    ((12, 0), 170, 665e9, 1.8e12),  # RTX 5090
)


def table_constants(target: Target) -> tuple[float, float]:
    """(peak FLOP/s, bytes/s) of a target from the rough table above. A GPU parsed without
    `sms=` (one SM) is taken as the typical part of its generation."""
    if target.device == "cuda":
        cc = target.compute_capability or (7, 0)
        row = _CUDA_TABLE[0]
        for entry in _CUDA_TABLE:
            if cc >= entry[0]:
                row = entry
        _, typical_sms, per_sm, bandwidth = row
        sms = target.cores if target.cores > 1 else typical_sms
        return per_sm * sms, bandwidth
    width = target.simd_bits if target.simd_bits in _CPU_FLOPS_PER_CORE else 0
    per_core = _CPU_FLOPS_PER_CORE[width]
    if width == 256 and "fma" not in target.features:
        per_core /= 2  # AVX without FMA: separate multiply and add
    cores = max(target.cores, 1)
    return per_core * cores, min(_CPU_BANDWIDTH_PER_CORE * cores, _CPU_BANDWIDTH_CAP)


_MEASURED: dict[str, tuple[float, float]] = {}


def measure_host(budget_s: float = 0.3) -> tuple[float, float]:
    """(peak FLOP/s, bytes/s) of this machine: the best of a few timed float32 512^3 torch
    matmuls, and of 32 MiB tensor copies (read + write). Takes about `budget_s` once per
    process; later calls return the first measurement."""
    key = Target.host().key()
    if key not in _MEASURED:
        _MEASURED[key] = _measure(max(float(budget_s), 0.01))
    return _MEASURED[key]


def _best_time(fn, budget_s: float, min_repeats: int = 3, max_repeats: int = 50) -> float:
    fn()  # warm-up: allocation, thread pool start, page faults
    best = math.inf
    start = time.perf_counter()
    for i in range(max_repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if i + 1 >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return max(best, 1e-9)  # a coarse clock must not yield a zero


def _measure(budget_s: float) -> tuple[float, float]:
    n = 512
    copy_bytes = 32 << 20
    with torch.inference_mode():
        a = torch.randn(n, n)
        b = torch.randn(n, n)
        c = torch.empty(n, n)
        peak = 2.0 * n ** 3 / _best_time(lambda: torch.mm(a, b, out=c), budget_s / 2)
        src = torch.ones(copy_bytes // 4)
        dst = torch.empty_like(src)
        bandwidth = 2.0 * copy_bytes / _best_time(lambda: dst.copy_(src), budget_s / 2)
    return peak, bandwidth


# ------------------------------------------------------------------ the model


class RooflineCostModel:
    """`CostModel` by the roofline formula (see the module docstring).

    `peak_flops` / `bandwidth` fix the machine for every target (deterministic tests, what-if
    questions); when None, the host is measured (`measure_host`) if the target is the host,
    and any other target takes the rough table. `overhead_s` is charged once per candidate:
    one kernel launch or loop nest."""

    name = "roofline"

    def __init__(self, peak_flops: float | None = None, bandwidth: float | None = None,
                 overhead_s: float = 2e-6):
        for label, v in (("peak_flops", peak_flops), ("bandwidth", bandwidth)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise SpokeshaveError(f"roofline {label} must be a positive number, got {v!r}")
        if not (isinstance(overhead_s, (int, float)) and math.isfinite(overhead_s) and overhead_s >= 0):
            raise SpokeshaveError(f"roofline overhead_s must be a non-negative number, got {overhead_s!r}")
        self.peak_flops = None if peak_flops is None else float(peak_flops)
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        self.overhead_s = float(overhead_s)

    def machine(self, target: Target) -> tuple[float, float]:
        """(peak FLOP/s, bytes/s) used for `target`."""
        if self.peak_flops is not None and self.bandwidth is not None:
            return self.peak_flops, self.bandwidth
        peak, bandwidth = measure_host() if target == Target.host() else table_constants(target)
        return (self.peak_flops or peak), (self.bandwidth or bandwidth)

    def predict(self, candidate: Candidate, target: Target) -> Cost:
        ops = candidate.ops
        if all(_moves_nothing(op) for op in ops):
            return Cost.zero()  # no kernel is generated for views and constants alone
        hint = candidate.dim_hint
        inputs, outputs = boundary(ops)
        moved = sum(value_bytes(v, hint) for v in inputs + outputs)
        flops = sum(op_flops(op, hint) for op in ops)
        peak, bandwidth = self.machine(target)
        config = candidate.config_dict()
        if "block_m" in config and _is_linear_like(ops[0]):
            return self._tiled(ops[0], config, hint, moved, flops, peak, bandwidth, target)
        memory_s, compute_s = moved / bandwidth, flops / peak
        bound = max((memory_s, "memory"), (compute_s, "compute"), (self.overhead_s, "overhead"),
                    key=lambda term: term[0])[1]
        return Cost(max(memory_s, compute_s) + self.overhead_s, flops, moved, bound)

    def _tiled(self, op: Op, config: dict, hint: int, moved: float, flops: float, peak: float,
               bandwidth: float, target: Target) -> Cost:
        """A GEMM (with its fused epilogue) launched as `block_m x block_n` programs looping
        over K in `block_k` steps."""
        x, w = (_tensor(v) for v in op.operands[:2])
        out = _tensor(op.results[0])
        if x is None or w is None or out is None or not out.shape:
            return Cost(moved / bandwidth + self.overhead_s, flops, moved, "memory")
        n = _dim(out.shape[-1], hint)
        k = _dim(x.shape[-1], hint)
        m = int(config.get("rows") or max(_numel(out, hint) // max(n, 1), 1))
        bm, bn, bk = (int(config[key]) for key in ("block_m", "block_n", "block_k"))
        split = max(int(config.get("split_k", 1)), 1)
        tiles_m, tiles_n = -(-m // bm), -(-n // bn)
        steps = -(-(-(-k // bk)) // split)  # each slice's K steps
        programs = tiles_m * tiles_n * split
        if target.arch == INTERPRETER_ARCH:
            # a split tile also stores its partial and its last slice reads them all back
            reduce_steps = 2 if split > 1 else 0
            seconds = programs * (steps + reduce_steps) * INTERPRETED_TILE_STEP_S + self.overhead_s
            return Cost(seconds, flops, moved, "overhead")
        rereads = (tiles_n - 1) * value_bytes(op.operands[0], hint) + (tiles_m - 1) * value_bytes(op.operands[1], hint)
        # split-K's partial tiles, written once and read back once (4-byte accumulators)
        partials = 2 * 4 * split * m * n if split > 1 else 0
        moved_tiled = moved + rereads + partials
        padded = flops * (tiles_m * bm / m) * (tiles_n * bn / n) * (steps * split * bk / k)
        units = max(target.cores, 1)
        busy = programs / (-(-programs // units) * units)  # the last wave's idle units
        memory_s = moved_tiled / (bandwidth * min(1.0, programs / units))
        compute_s = padded / (peak * busy)
        bound = "memory" if memory_s >= compute_s else "compute"
        return Cost(max(memory_s, compute_s) + self.overhead_s, padded, moved_tiled, bound)

    def __repr__(self) -> str:
        return (f"RooflineCostModel(peak_flops={self.peak_flops}, bandwidth={self.bandwidth}, "
                f"overhead_s={self.overhead_s})")
