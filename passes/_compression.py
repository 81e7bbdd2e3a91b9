"""The machinery every compression pass shares, written once.

* `LayerSelection`: the `layers=` / `skip=` option pair (fnmatch globs over layer names, `|`
  separating alternatives); a layer is its weight's `spk.param` without `.weight`.
* `percdamp_option()`: the one damping option of the second-order methods (GPTQ,
  SparseGPT, whitened LoRC), with one range.
* `skip_layer`: a layer that does not fit gets a remark at its op, a statistic and a report
  entry, never a crash.
* `replace_linear` / `retire_replaced`: swap an `aten.linear` for a compressed op reading new
  parameters, and retire the float weights nothing reads any more (kept readable for `lorc`
  until the end of the compile).
* `relative_error`: the weight error, or the layer's output error on the calibration tokens
  `tr(dW H dW^T) / tr(W H W^T)` given the input covariance `H`.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import torch

from spokeshave.compiler.calibration import STATISTICS, CalibrationStats
from spokeshave.compiler.dialect import OPS, WEIGHT
from spokeshave.compiler.ir import Function, Module, Op, Value
from spokeshave.compiler.passmanager import PassContext, Range, option
from spokeshave.compiler.report import SKIPPED, LayerEntry

from ._weights import add_param

# A zero reference (an all-zero weight, a dead input) has no relative error to speak of;
# the floor keeps the ratio finite instead of dividing by zero.
_ERROR_FLOOR = 1e-30


def layer_name(param: str) -> str:
    """`encoder.layer.0.attention.self.query.weight` -> `encoder.layer.0.attention.self.query`."""
    return param[:-len(".weight")] if param.endswith(".weight") else param


def glob_match(name: str, globs: str) -> bool:
    return any(fnmatch.fnmatchcase(name, g.strip()) for g in globs.split("|") if g.strip())


@dataclass
class LayerSelection:
    """Mixin of the `layers` / `skip` options (a pass dataclass inherits them)."""

    layers: str = option("*", help="fnmatch globs of the layers to rewrite, '|'-separated")
    skip: str = option("", help="fnmatch globs of the layers to leave alone")

    def selects(self, layer: str) -> bool:
        return glob_match(layer, self.layers) and not glob_match(layer, self.skip)


def percdamp_option() -> Any:
    return option(0.01, range=Range(0.0, 1.0, lo_open=True),
                  help="Hessian damping, as a fraction of the mean of its diagonal")


def layer_of(func: Function, lin: Op) -> str:
    """The layer a linear belongs to: its weight parameter's name without `.weight`."""
    return layer_name(func.param_name(lin.operands[1]) or "linear")


def skip_layer(ctx: PassContext, pass_name: str, op: Op | None, layer: str, reason: str,
               key: str | None = None, **entry: Any) -> None:
    """Leave `layer` as it is, and say so: a remark at `op`, a statistic counted under `key`
    (default: the reason) and a report entry."""
    ctx.remark(op, f"{pass_name}: skipped layer '{layer}': {reason}")
    ctx.stat(pass_name, f"layers skipped ({key or reason})")
    ctx.report.append(LayerEntry(pass_name, layer, SKIPPED, reason=reason, **entry))


def add_weight_params(func: Function, ctx: PassContext, layer: str,
                      tensors: dict[str, torch.Tensor]) -> list[Value]:
    """New parameters `<layer>.<key>` for `tensors`, in order."""
    return [add_param(func, ctx.weights, f"{layer}.{key}", t) for key, t in tensors.items()]


def replace_linear(op: Op, opname: str, weights: list[Value], attrs: dict | None = None) -> Op:
    """Replace the linear `op` by `opname(input, *weights, bias?)`: the compressed op reads
    `weights` (in its record's weight-operand order) and keeps the input and bias."""
    record = OPS[opname]
    want = sum(1 for o in record.operands if o.role == WEIGHT and not o.optional)
    if len(weights) < want:
        raise ValueError(f"{opname} reads at least {want} weight operands, got {len(weights)}")
    x, _, *bias = op.operands
    new = Op(opname, [x, *weights, *bias], [op.result.type], dict(attrs or {}), loc=op.loc)
    op.parent.insert_before(op, new)
    op.result.replace_all_uses_with(new.result)
    op.parent.erase(op)
    return new


def retire_replaced(module: Module, ctx: PassContext, replaced: dict[str, str]) -> None:
    """`replaced` maps float weight parameters to the first parameter that replaced each.
    Those nothing reads any more leave every function; their tensors stay readable as
    `ctx.weights.original_of(successor)` until the compile ends (`lorc` measures the
    compression error with them; without `lorc` in the pipeline they are dropped at once)."""
    for f in module.functions:
        for arg in list(f.args):
            name = f.param_name(arg)
            if name in replaced and not arg.uses:
                f.erase_arg(arg)
    live = {n for f in module.functions for n in f.params()}
    for name, successor in replaced.items():
        if name not in live and name in ctx.weights:
            if ctx.keep_originals:
                ctx.weights.retire(name, successor)
            else:
                del ctx.weights[name]


def relative_error(w: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor | None = None) -> float:
    """||approx - w||^2 / ||w||^2, or with the input covariance `hessian` [K, K] the layer's
    relative output error `tr(dW H dW^T) / tr(W H W^T)`. Summed over blocks of rows in
    float64, so measuring a large weight never holds more than a block's float64 copies."""
    k = w.shape[-1] if w.dim() else 1
    w2, a2 = w.reshape(-1, k), approx.reshape(-1, k)
    h = None if hessian is None else hessian.double()
    num = den = torch.zeros((), dtype=torch.float64)
    rows = max(1, (1 << 18) // k)
    for i in range(0, w2.shape[0], rows):
        wc = w2[i:i + rows].double()
        d = a2[i:i + rows].double() - wc
        if h is None:
            num, den = num + (d * d).sum(), den + (wc * wc).sum()
        else:
            num, den = num + ((d @ h) * d).sum(), den + ((wc @ h) * wc).sum()
    return float(num / den.clamp_min(_ERROR_FLOOR))


def calibration_stats(module: Module, ctx: PassContext, reads: frozenset[str]) -> Any:
    """The calibration statistics, when there is calibration data and the pipeline collects
    any of the statistics `reads` names (a pass may use what another pass declared, such as
    a covariance for its report); None otherwise, without running the calibration batches."""
    needed = STATISTICS if ctx.statistics_needed is None else ctx.statistics_needed
    if not ctx.calibration or not reads & needed:
        return None
    return ctx.analyses.get(CalibrationStats, module)


def pooled_hessian(stats: Any, inputs: list[Value]) -> torch.Tensor | None:
    """`E[x x^T]` over the inputs of every reader of one weight (None unless all have it)."""
    found = [stats.get(v) if stats is not None else None for v in inputs]
    if not found or any(s is None or s.hessian_sum is None for s in found):
        return None
    return sum(s.hessian_sum for s in found) / max(sum(s.count for s in found), 1)
