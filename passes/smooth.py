"""`smooth{alpha=0.5}`: SmoothQuant's migration of activation outliers into the weights.

Follows SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models", ICML 2023), section 4: for a linear `Y = X W^T`
whose input `X` comes from a normalisation, every input channel j gets a scale

    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)

(activation abs-max from the calibration batches, weight abs-max over the columns of every
linear that reads the same norm output, so they share one `s`), the norm's weight and bias
are divided by `s` and the linears' weight columns multiplied by it. The function is the
same (exact up to float rounding); the activations that a following `quantize{scheme=w8a8}`
rounds per token have flatter channels.

Departures from the paper:
* It works on the IR: any `aten.layer_norm` / `aten.rms_norm` over the last dim whose output
  feeds `aten.linear`s with parameter weights (the norm matcher and parameter helpers are
  `fold-norms`'s, shared through `norm_linear_groups` below). Linears whose input is not a
  norm output are left alone and listed (remark, statistic, report entry) - the paper folds
  those (e.g. `out_proj` after `v_proj`) only in some models.
* Where the norm output is also read by something other than those linears (post-LN BERT:
  the norm output is the residual stream), the scales cannot go into that norm without
  changing the residual, so a second norm with the divided weight/bias is created for the
  linears (one extra normalisation per block, still exact); the report says so.
* Degenerate channels (zero activation or weight range) keep `s = 1`; `s` is clamped to
  [1e-5, 1e5].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spokeshave.compiler.calibration import ABSMAX, CalibrationStats, ValueStats, require_calibration
from spokeshave.compiler.ir import Function, Module, Op, Value
from spokeshave.compiler.passmanager import Pass, PassContext, Range, option
from spokeshave.compiler.report import LayerEntry
from spokeshave.compiler.rewrite import PatternSet, apply_patterns_greedily

from ._compression import LayerSelection, layer_of, skip_layer
from ._weights import add_param, drop_dead_params, param_tensor, unused_params
from .canonicalize import fold_identity_copy, fold_identity_reshape
from .fold_norms import AddmmToLinear, MatchRMSNorm, NormParts, norm_parts

# Scales outside this range would push a channel's weights or activations to the edge of
# float32's range; the paper's alpha rarely needs more than a few decades.
SCALE_MIN, SCALE_MAX = 1e-5, 1e5

# ------------------------------------------------------------------ shared by smooth,
# reorder-outliers (and anything else that rewrites a norm together with its linears)


@dataclass
class NormGroup:
    """A last-dim norm and the `aten.linear`s (parameter weight, parameter or no bias) that
    read its output as their input; `others` are the remaining readers of the output."""

    parts: NormParts
    linears: list[Op]
    others: list[Op]


def normalise_linears(func: Function, ctx: PassContext) -> int:
    """`fold-norms`'s exact graph normalisation: GPT-2's Conv1D (`view/addmm/view`) becomes
    `aten.linear`, HF's exported RMSNorm chain becomes `aten.rms_norm`. Returns rewrites."""
    unused = unused_params(func)
    n = apply_patterns_greedily(func, PatternSet(fold_identity_copy, fold_identity_reshape,
                                                 MatchRMSNorm(), AddmmToLinear(func, ctx.weights)))
    drop_dead_params(func, ctx.weights, unused)
    return n


def _param_linear(func: Function, ctx: PassContext, op: Op, x: Value) -> bool:
    return (op.name == "aten.linear" and op.operands[0] is x and x not in op.operands[1:]
            and param_tensor(func, ctx.weights, op.operands[1]) is not None
            and (len(op.operands) < 3 or param_tensor(func, ctx.weights, op.operands[2]) is not None))


def norm_linear_groups(func: Function, ctx: PassContext, selection: LayerSelection
                       ) -> tuple[list[NormGroup], list[Op]]:
    """The norms feeding parameter linears (of the layers `selection` selects), and the
    selected parameter linears whose input is not such a norm output."""
    groups, loose = [], []
    grouped: set[Op] = set()
    for op in list(func.ops):
        parts = norm_parts(op)
        if parts is None:
            continue
        if (parts.weight is not None and param_tensor(func, ctx.weights, parts.weight) is None) or \
                (parts.bias is not None and param_tensor(func, ctx.weights, parts.bias) is None):
            continue
        out = op.result
        linears, others = [], []
        for u in dict.fromkeys(out.uses):
            if _param_linear(func, ctx, u, out) and selection.selects(layer_of(func, u)):
                linears.append(u)
            else:
                others.append(u)
        if linears:
            groups.append(NormGroup(parts, linears, others))
            grouped.update(linears)
    for op in func.ops:
        if (op.name == "aten.linear" and op not in grouped and len(op.operands) > 1
                and param_tensor(func, ctx.weights, op.operands[1]) is not None
                and selection.selects(layer_of(func, op))):
            loose.append(op)
    return groups, loose


def rebuild_norm(func: Function, ctx: PassContext, group: NormGroup, weight: torch.Tensor,
                 bias: torch.Tensor | None, suffix: str, input: Value | None = None) -> bool:
    """Give the group's linears a norm with new `weight`/`bias` (new parameters named after
    the old ones + `suffix`) reading `input` (default: the norm's input). The old norm is
    replaced if nothing else reads it, else kept for the other readers. Returns True when
    a second norm had to be created."""
    p = group.parts
    wbase = (func.param_name(p.weight) if p.weight is not None else None) or \
        f"{layer_of(func, group.linears[0])}.norm.weight"
    operands = [input if input is not None else p.input,
                add_param(func, ctx.weights, wbase + suffix, weight.to(_dtype(p)))]
    if bias is not None:
        bbase = (func.param_name(p.bias) if p.bias is not None else None) or \
            wbase.removesuffix(".weight") + ".bias"
        operands.append(add_param(func, ctx.weights, bbase + suffix, bias.to(_dtype(p))))
    new = Op(p.op.name, operands, [p.op.result.type], dict(p.op.attributes), loc=p.op.loc)
    func.body.insert_before(p.op, new)
    for lin in group.linears:
        lin.set_operand(0, new.result)
    if not p.op.result.uses:
        func.body.erase(p.op)
        return False
    return True


def _dtype(p: NormParts) -> torch.dtype:
    return p.input.type.torch_dtype


def norm_weight_bias(func: Function, ctx: PassContext, p: NormParts
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The norm's weight (ones if it has none) and bias (None if none), in float64."""
    g = param_tensor(func, ctx.weights, p.weight) if p.weight is not None else None
    b = param_tensor(func, ctx.weights, p.bias) if p.bias is not None else None
    g = torch.ones(p.dim, dtype=torch.float64) if g is None else g.double()
    return g, (None if b is None else b.double())


def replace_weight(func: Function, ctx: PassContext, lin: Op, w: torch.Tensor, suffix: str,
                   module: Module | None = None) -> None:
    """Give `lin` the weight `w` (cast to the old weight's dtype), as a new tensor. When
    `lin` is the parameter's only reader, the new tensor takes over the parameter's name
    (same type), so layer names - what `quantize`'s `layers=`/`skip=` globs and its report
    see - stay the model's; otherwise a new parameter `<name><suffix>` is added."""
    old = lin.operands[1]
    name = func.param_name(old) or "linear.weight"
    t = param_tensor(func, ctx.weights, old)
    w = w.to(t.dtype).contiguous()
    shared = module is None or any(name in f.params() for f in module.functions if f is not func)
    if not shared and list(dict.fromkeys(old.uses)) == [lin] and old.uses.count(lin) == 1:
        ctx.weights[name] = w
        return
    lin.set_operand(1, add_param(func, ctx.weights, name + suffix, w))


def _scale_columns(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """`w * s[None, :]` computed in float64 and rounded once to `w`'s dtype, a block of rows
    at a time: a large weight never has a whole float64 copy."""
    out = torch.empty_like(w)
    rows = max(1, (1 << 18) // max(w.shape[-1], 1))
    for i in range(0, w.shape[0], rows):
        out[i:i + rows] = w[i:i + rows].double() * s[None, :]
    return out


def record_loose(ctx: PassContext, pass_name: str, func: Function, loose: list[Op]) -> None:
    for lin in loose:
        skip_layer(ctx, pass_name, lin, layer_of(func, lin), "its input is not the output of a "
                   "normalisation it could be folded into", "input not a norm output")


# ------------------------------------------------------------------ the pass


def calibrated_norm_groups(module: Module, ctx: PassContext, pass_name: str,
                           selection: LayerSelection
                           ) -> tuple[Function, list[tuple[NormGroup, ValueStats]], bool]:
    """The entry function, normalised (Conv1D -> linear, RMSNorm chains -> rms_norm), and its
    norm -> linears groups with the calibration statistics of each norm's output; linears
    not fed by a norm are recorded. Shared by `smooth` and `reorder-outliers`. Returns
    (function, groups, whether normalising changed the IR)."""
    func = module.entry
    changed = False
    if any(op.name in ("aten.linear", "aten.addmm") for op in func.ops):
        require_calibration(ctx, pass_name)
        if normalise_linears(func, ctx):
            ctx.analyses.invalidate()  # statistics must see the normalised graph
            changed = True
    groups, loose = norm_linear_groups(func, ctx, selection)
    record_loose(ctx, pass_name, func, loose)
    if not groups:
        return func, [], changed
    stats = ctx.analyses.get(CalibrationStats, module)
    measured = [(g, st) for g in groups if (st := stats.get(g.parts.op.result)) is not None]
    return func, measured, changed


@dataclass
class Smooth(LayerSelection, Pass):
    """SmoothQuant: migrate activation outliers from norm outputs into linear weights."""

    name = "smooth"
    needs_unfused = True
    alpha: float = option(0.5, range=Range(0.0, 1.0), why="the share of the outliers moved into the weights")

    def statistics(self) -> frozenset[str]:
        return frozenset({ABSMAX})

    def run(self, module: Module, ctx: PassContext) -> bool:
        func, groups, changed = calibrated_norm_groups(module, ctx, self.name, self)
        unused = unused_params(func)
        for grp, st in groups:
            xmax = st.absmax.double()
            # abs-max is exact in the weights' own dtype: no float64 copy of the group
            ws = [param_tensor(func, ctx.weights, lin.operands[1]) for lin in grp.linears]
            wmax = torch.stack([w.abs().amax(dim=0) for w in ws]).amax(dim=0).double()
            del ws  # each old weight is freed as soon as its smoothed copy replaces it
            s = xmax.pow(self.alpha) / wmax.pow(1.0 - self.alpha)
            s = torch.where(torch.isfinite(s) & (s > 0) & (xmax > 0) & (wmax > 0), s, torch.ones_like(s))
            s = s.clamp(SCALE_MIN, SCALE_MAX)
            g, b = norm_weight_bias(func, ctx, grp.parts)
            dup = rebuild_norm(func, ctx, grp, g / s, None if b is None else b / s, ".smoothed")
            for lin in grp.linears:
                w = _scale_columns(param_tensor(func, ctx.weights, lin.operands[1]), s)
                replace_weight(func, ctx, lin, w, ".smoothed", module)
                del w
                ctx.report.append(LayerEntry(
                    self.name, layer_of(func, lin), "smoothed",
                    details={"alpha": self.alpha, "norm_duplicated": dup,
                             "act_absmax_before": float(xmax.max()),
                             "act_absmax_after": float((xmax / s).max())}))
            ctx.stat(self.name, "norms smoothed")
            if dup:
                ctx.stat(self.name, "norms duplicated (output also read by non-linears)")
            changed = True
        drop_dead_params(func, ctx.weights, unused)
        return changed
