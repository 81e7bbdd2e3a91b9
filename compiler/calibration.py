"""Calibration statistics: an analysis that runs the interpreter over the calibration
batches and records what compression passes ask about activations.

    stats = ctx.analyses.get(CalibrationStats, module)
    s = stats.linear_input(linear_op)     # ValueStats of the linear's input
    s.absmax, s.mean_square, s.hessian, s.count

For every float activation value (user inputs and op results, inside fused regions too;
not parameters) it records, over the last dim as channels and all other dims as tokens,
what the pipeline's passes declared (`Pass.statistics()`, gathered by the pass manager into
`ctx.statistics_needed`): per-channel abs-max (`ABSMAX`), per-channel mean-square
(`MEAN_SQUARE`) and, for the input of every op with the `linear` trait, the input covariance
`sum x x^T` over tokens in float64 (`HESSIAN`: the Hessian of the layer-wise least-squares
objective that GPTQ, SparseGPT and whitened LoRC use). The covariance is [C, C] per linear
input (128 MiB at 4096 channels), so a pipeline that only needs abs-max never pays for it.

`ctx.calibration` holds the batches as lists of the compiled function's flat user inputs
(`spokeshave.compile` flattens what the user passes). The statistics are computed once per
module state and cached in the pass context like any analysis; a pass that changes the IR
invalidates them unless it lists `CalibrationStats` in `preserves`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .dialect import LINEAR, has_trait
from .errors import PipelineError, SpokeshaveError
from .interpreter import Interpreter
from .ir import Module, Op, TensorType, Value

ABSMAX, MEAN_SQUARE, HESSIAN = "absmax", "mean_square", "hessian"
# Synthetic batches (IR text without data) are small: dynamic dims take this size, and
# integer inputs (token ids) values below this bound, which any embedding table of a test
# module has rows for.
SYNTHETIC_DYNAMIC_DIM, SYNTHETIC_TOKEN_IDS = 4, 8
STATISTICS = frozenset({ABSMAX, MEAN_SQUARE, HESSIAN})


def require_calibration(ctx: Any, pass_name: str) -> list:
    """The calibration batches, or a clear error naming the pass that needs them (a
    `PipelineError`: the pipeline asks for something the call did not provide)."""
    if not ctx.calibration:
        raise PipelineError(f"pass '{pass_name}' needs calibration data: pass "
                              f"calibration=[batches] to spokeshave.compile (each batch a tuple of "
                              f"the model's positional inputs)")
    return ctx.calibration


@dataclass
class ValueStats:
    """Statistics of one activation value over all calibration tokens (each field None when
    no pass of the pipeline asked for it)."""

    channels: int
    count: int = 0                                   # tokens seen (rows of the last dim)
    absmax: torch.Tensor | None = None               # [C] float32, per-channel max |x|
    sumsq: torch.Tensor | None = None                # [C] float64, per-channel sum x^2
    hessian_sum: torch.Tensor | None = None          # [C, C] float64, sum x x^T (linear inputs)

    @property
    def mean_square(self) -> torch.Tensor:
        """Per-channel mean of x^2 (float64 [C])."""
        return self.sumsq / max(self.count, 1)

    @property
    def rms(self) -> torch.Tensor:
        return self.mean_square.sqrt()

    @property
    def hessian(self) -> torch.Tensor:
        """`E[x x^T]` over tokens (float64 [C, C]); only for linear inputs."""
        if self.hessian_sum is None:
            raise SpokeshaveError("no covariance was recorded for this value: it does not feed a "
                                  "linear, or no pass of the pipeline declared it needs one")
        return self.hessian_sum / max(self.count, 1)

    def update(self, x: torch.Tensor, wanted: frozenset[str], second_order: bool) -> None:
        x2 = x.detach().reshape(-1, self.channels)
        self.count += x2.shape[0]
        if ABSMAX in wanted:
            amax = x2.abs().amax(dim=0).float() if x2.shape[0] else torch.zeros(self.channels)
            self.absmax = amax if self.absmax is None else torch.maximum(self.absmax, amax)
        if MEAN_SQUARE not in wanted and not second_order:
            return
        xd = x2.to(torch.float64)
        if MEAN_SQUARE in wanted:
            sq = (xd * xd).sum(dim=0)
            self.sumsq = sq if self.sumsq is None else self.sumsq + sq
        if second_order:
            h = xd.t() @ xd
            self.hessian_sum = h if self.hessian_sum is None else self.hessian_sum + h


class _BatchDone(Exception):
    """Raised by the observer once every requested value of a batch has been seen."""


class CalibrationStats:
    """The analysis (construct through `ctx.analyses.get(CalibrationStats, module)`).

    `CalibrationStats(module, ctx, only={values})` records just those values and stops each
    batch's run as soon as all of them have been seen (`outputs` then stays empty): for
    passes that re-measure inputs after every change, as sequential SparseGPT/Wanda do."""

    def __init__(self, module: Module, ctx: Any, only: set[Value] | None = None):
        batches = require_calibration(ctx, "calibration")
        func = module.entry
        self.function = func
        inputs = func.user_inputs()
        needed = getattr(ctx, "statistics_needed", None)
        self.collected: frozenset[str] = STATISTICS if needed is None else frozenset(needed)
        wanted = self.collected
        hessians = HESSIAN in wanted
        self.linear_inputs: set[Value] = {op.operands[0] for op in func.walk()
                                          if has_trait(op, LINEAR)} if hessians else set()
        self.values: dict[Value, ValueStats] = {}
        self.outputs: list[list[Any]] = []  # the module's outputs per batch (interpreted)
        self.batches = 0
        exe = Interpreter(module, ctx.weights)
        params = set(func.params().values())
        for bi, batch in enumerate(batches):
            flat = check_batch(batch, inputs, bi)

            seen: set[Value] = set()

            def observe(v: Value, x: Any) -> None:
                if only is not None and v not in only:
                    return
                if v in params or not isinstance(x, torch.Tensor) or not x.is_floating_point():
                    return
                if x.dim() == 0 or x.shape[-1] == 0:
                    return
                s = self.values.get(v)
                if s is None:
                    s = self.values[v] = ValueStats(int(x.shape[-1]))
                elif s.channels != x.shape[-1]:
                    return  # a dynamic last dim that changed size between batches
                s.update(x, wanted, v in self.linear_inputs)
                if only is not None:
                    seen.add(v)
                    if len(seen) == len(only):
                        raise _BatchDone

            try:
                out = exe(*flat, observe=observe)
            except _BatchDone:
                pass
            else:
                self.outputs.append(out)
            self.batches += 1

    def __getitem__(self, value: Value) -> ValueStats:
        try:
            return self.values[value]
        except KeyError:
            raise SpokeshaveError(f"no calibration statistics for {value!r}: it is not a float "
                                  f"activation of @{self.function.name}") from None

    def get(self, value: Value) -> ValueStats | None:
        return self.values.get(value)

    def linear_input(self, op: Op) -> ValueStats:
        """Statistics (with covariance) of a linear op's input."""
        return self[op.operands[0]]


def check_batch(batch: Any, inputs: list[Value], index: int) -> list[torch.Tensor]:
    """A calibration batch as the flat user-input list, checked against the input types."""
    flat = [batch] if isinstance(batch, torch.Tensor) else list(batch)
    if len(flat) != len(inputs):
        raise SpokeshaveError(f"calibration batch {index} has {len(flat)} inputs; the model "
                              f"takes {len(inputs)}")
    for i, (x, v) in enumerate(zip(flat, inputs)):
        t = v.type
        if not isinstance(t, TensorType):
            continue
        if not isinstance(x, torch.Tensor):
            raise SpokeshaveError(f"calibration batch {index}, input {i}: expected a tensor {t}, "
                                  f"got {type(x).__name__}")
        shape_ok = x.dim() == t.rank and all(d is None or d == s for d, s in zip(t.shape, x.shape))
        if not shape_ok or x.dtype != t.torch_dtype:
            raise SpokeshaveError(f"calibration batch {index}, input {i} is {tuple(x.shape)} "
                                  f"{x.dtype}, but the compiled model takes {t}; calibration "
                                  f"batches must have the example inputs' shapes (except dims "
                                  f"declared dynamic) and dtypes")
    return flat


def synthetic_batches(module: Module, n: int, seed: int = 0) -> list[list[torch.Tensor]]:
    """`n` deterministic calibration batches for the entry function's user inputs, for
    running calibrated passes on IR text alone (`spokeshave-opt --calibration=synthetic:N`).
    Float inputs are normal with a per-channel (last dim) scale `exp(N(0, 1))`, so some
    channels are clear outliers, as in real activations; integer inputs (token ids) are in
    [0, 8); dynamic dims are 4."""
    func = module.entry
    g = torch.Generator().manual_seed(seed)
    inputs = func.user_inputs()
    channel_scale = {}
    batches = []
    for _ in range(n):
        batch = []
        for i, v in enumerate(inputs):
            t = v.type
            if not isinstance(t, TensorType):
                raise SpokeshaveError(f"synthetic calibration: input {i} of @{func.name} is not a "
                                      f"tensor ({t}); pass real batches instead")
            shape = tuple(SYNTHETIC_DYNAMIC_DIM if d is None else d for d in t.shape)
            dtype = t.torch_dtype
            if dtype.is_floating_point:
                if i not in channel_scale:
                    channel_scale[i] = torch.exp(torch.randn(shape[-1] if shape else 1, generator=g))
                x = torch.randn(shape, generator=g) * (channel_scale[i] if shape else channel_scale[i][0])
                batch.append(x.to(dtype))
            elif dtype == torch.bool:
                batch.append(torch.randint(0, 2, shape, generator=g).bool())
            else:
                batch.append(torch.randint(0, SYNTHETIC_TOKEN_IDS, shape, generator=g).to(dtype))
        batches.append(batch)
    return batches


def load_batches(path: str, module: Module) -> list[list[torch.Tensor]]:
    """Calibration batches from a safetensors file whose tensors are named
    `<batch>.<input index>` (`0.0`, `0.1`, `1.0`, ...), inputs in the entry function's order."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise SpokeshaveError(f"{path}: error: cannot read calibration batches ({e}); expected a "
                              f"safetensors file with tensors named <batch>.<input index>") from None
    n_inputs = len(module.entry.user_inputs())
    batches: dict[int, dict[int, torch.Tensor]] = {}
    for key, t in tensors.items():
        parts = key.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) >= n_inputs:
            raise SpokeshaveError(f"{path}: error: calibration tensor '{key}' is not named "
                                  f"<batch>.<input index> with an index below {n_inputs}")
        batches.setdefault(int(parts[0]), {})[int(parts[1])] = t
    if not batches:
        raise SpokeshaveError(f"{path}: error: the calibration file holds no tensors; expected "
                              f"tensors named <batch>.<input index>")
    out = []
    for b in sorted(batches):
        missing = [i for i in range(n_inputs) if i not in batches[b]]
        if missing:
            raise SpokeshaveError(f"{path}: error: calibration batch {b} lacks input(s) {missing}")
        out.append([batches[b][i] for i in range(n_inputs)])
    return out

