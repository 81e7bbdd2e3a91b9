"""`reorder-outliers{metric=absmax}`: permute the input channels of norm-fed linears so that
outlier channels share quantization groups.

After Trukhanov & Soloveychik, "Accurate Block Quantization in LLMs with Outliers" (2024):
channels are sorted by a calibration statistic of the activation (`absmax`: per-channel
abs-max, the paper's choice; `rms`: root-mean-square), largest first, so block/group
quantization puts the outlier channels together in a few groups and the rest in groups with
a small range. The permutation is found at compile time and folded into parameters.

Design (exact): a normalisation's statistics are permutation-invariant, so
`norm(x)[..., P] = norm(x[..., P]; g[P], b[P])`. For a norm whose output feeds `aten.linear`s
(parameter weights), the pass gathers the norm's *input* with one
`aten.index_select(x, perm) {dim = -1}`, gives the norm the permuted weight/bias, and the
linears the permuted weight columns `W[:, P]`; `y = W[:, P] x[P] = W x` is unchanged. All
linears reading one norm share its permutation (norm helpers shared with `fold-norms` via
`passes.smooth.norm_linear_groups`). If the norm output is read by other ops too
(post-LN BERT) the original norm stays for them.

`metric=weight` sorts by the consumers' weight-column abs-max instead (not in the paper):
for weight-only group quantization (`w4g`) that is what groups the large columns together.
Measured here (tests/test_outliers.py): when the outlier channels are in the *activations*,
grouping them in one weight group makes round-to-nearest w4g worse, not better - spread
over groups, every outlier column sets its own group's scale, while sharing a group they
round each other; the activation metrics are the paper's, for activation block formats.

Departures: the paper permutes activations for block-quantized *activations*; here the
permutation is also (mainly) what regroups weight columns for `quantize{scheme=w4g}`. It is
not free at inference: one gather per normalisation of width d (the paper's zero-cost form
permutes the whole residual stream - embeddings, every writer's rows, every norm - which
would need all stream readers to share one permutation; not done here). A permutation
cannot change per-token int8 (`w8a8`) rounding at all: every token's abs-max is the same.
Linears whose input is not a norm output are left alone and listed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spokeshave.compiler.calibration import ABSMAX, MEAN_SQUARE
from spokeshave.compiler.ir import Module, Op
from spokeshave.compiler.passmanager import Pass, PassContext, option
from spokeshave.compiler.report import LayerEntry

from ._compression import LayerSelection, layer_of
from ._weights import add_param, drop_dead_params, param_tensor, unused_params
from .smooth import calibrated_norm_groups, norm_weight_bias, rebuild_norm, replace_weight

METRICS = ("absmax", "rms", "weight")


@dataclass
class ReorderOutliers(LayerSelection, Pass):
    """Sort norm-output channels by calibration magnitude; fold the permutation."""

    name = "reorder-outliers"
    needs_unfused = True
    metric: str = option("absmax", choices=METRICS)

    def statistics(self) -> frozenset[str]:
        return {"absmax": frozenset({ABSMAX}), "rms": frozenset({MEAN_SQUARE}),
                "weight": frozenset()}[self.metric]

    def run(self, module: Module, ctx: PassContext) -> bool:
        func, groups, changed = calibrated_norm_groups(module, ctx, self.name, self)
        unused = unused_params(func)
        for grp, st in groups:
            if self.metric == "weight":
                key = torch.cat([param_tensor(func, ctx.weights, lin.operands[1]).double()
                                 for lin in grp.linears]).abs().amax(dim=0)
            else:
                key = st.absmax.double() if self.metric == "absmax" else st.rms.double()
            perm = torch.argsort(key, descending=True, stable=True)
            if torch.equal(perm, torch.arange(perm.numel())):
                ctx.stat(self.name, "norms already in order")
                continue
            p = grp.parts
            g, b = norm_weight_bias(func, ctx, p)
            base = (func.param_name(p.weight) if p.weight is not None else None) or \
                f"{layer_of(func, grp.linears[0])}.norm"
            idx = add_param(func, ctx.weights, base.removesuffix(".weight") + ".perm", perm.to(torch.int64))
            gather = Op("aten.index_select", [p.input, idx], [p.input.type], {"dim": -1}, loc=p.op.loc)
            func.body.insert_before(p.op, gather)
            dup = rebuild_norm(func, ctx, grp, g[perm], None if b is None else b[perm], ".permuted",
                               input=gather.result)
            for lin in grp.linears:
                w = param_tensor(func, ctx.weights, lin.operands[1])
                replace_weight(func, ctx, lin, w[:, perm].clone(), ".permuted", module)
                top = perm[: max(1, perm.numel() // 64)]
                ctx.report.append(LayerEntry(
                    self.name, layer_of(func, lin), "reordered",
                    details={"metric": self.metric, "norm_duplicated": dup,
                             "top_channels": [int(i) for i in top]}))
            ctx.stat(self.name, "norms reordered")
            changed = True
        drop_dead_params(func, ctx.weights, unused)
        return changed
