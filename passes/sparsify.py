"""`sparsify{pattern=2:4 method=magnitude|wanda|sparsegpt layers=<glob> skip=<glob>}`:
2:4 semi-structured pruning of `aten.linear` weights, stored compressed.

In every group of 4 consecutive input features of each output row, 2 weights are kept.
The pruned weight is stored as values + 2-bit positions (`compiler.numerics.sparse`) and the linear
becomes `spk.linear_sparse24(x, values, meta[, bias])`, which the backends run by
decompressing ("load compressed, compute dense").

Methods, and the papers they follow:

- `magnitude`: keep the two largest |W_ij| of each group (the NVIDIA ASP recipe, Mishra et
  al. 2021, "Accelerating Sparse Deep Neural Networks", without the fine-tuning).
- `wanda`: Sun, Liu, Bair, Kolter 2023, "A Simple and Effective Pruning Approach for Large
  Language Models". The score is |W_ij| * ||X_j||_2, with ||X_j||_2 the norm of input
  feature j over all calibration tokens; the comparison group is the N:M group of a row,
  as in the paper's N:M variant. No weight update.
- `sparsegpt`: Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
  Accurately Pruned in One-Shot". Columns are processed left to right; at the first column
  of every group of 4 the mask is chosen by OBS saliency w^2 / [H^-1]_jj^2 on the current,
  error-compensated weights (the paper's N:M "adaptive mask selection"), and every pruned
  weight's error is spread over the later columns with the inverse Hessian. The loop is the
  shared OBS solver of `passes._obs_solver` (GPTQ uses the same one) with `align=4`.

Departures: by default the statistics (norms, the Hessian `E[x x^T]`) come from one
calibration run of the model as it is when the pass starts. Both papers instead feed each
layer the inputs produced by the layers already pruned; `sequential=true` does that (the
inputs of the next group of linears are re-measured, running the model only up to them,
whenever they depend on a layer pruned since the last measurement). On all-MiniLM-L6-v2 it
did not pay for its cost (min cosine 0.78 vs 0.80 one-shot, see
`benchmarks/sparsity_minilm.py`), hence the default. The Hessian is the mean, not 2/n times
the sum, of x x^T (the damping is relative, so only the loss estimate's scale changes). A
weight shared by several linears is pruned once, with the statistics of all its uses summed.

Layers are named by their weight's `spk.param` without the trailing `.weight`; `layers`
and `skip` are fnmatch globs, `|` separating alternatives. A layer whose in-features are
not divisible by 4, whose weight is not a parameter, or whose weight is also read by an op
other than a linear (an LM head tied to the embedding: the dense table would stay beside
the compressed copy, and both papers leave embeddings and head dense) is skipped and
reported (a remark, a statistic and a `ctx.report` entry), never crashed on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spokeshave.compiler.calibration import HESSIAN, MEAN_SQUARE, CalibrationStats, require_calibration
from spokeshave.compiler.dialect import FLOAT_TYPES, bits_per_weight
from spokeshave.compiler.errors import PipelineError
from spokeshave.compiler.ir import Function, Module, Op, TensorType
from spokeshave.compiler.numerics.sparse import GROUP, compress_24, mask_topk_24
from spokeshave.compiler.passmanager import Pass, PassContext, Range, option
from spokeshave.compiler.report import LayerEntry

from ._compression import (LayerSelection, add_weight_params, calibration_stats, layer_name,
                           percdamp_option, pooled_hessian, relative_error, replace_linear,
                           retire_replaced, skip_layer)
from ._obs_solver import obs_solve

PATTERNS = ("2:4",)
METHODS = ("magnitude", "wanda", "sparsegpt")


# ------------------------------------------------------------------ mask selection


def magnitude_mask(w: torch.Tensor) -> torch.Tensor:
    return mask_topk_24(w.detach().float().abs())


def wanda_mask(w: torch.Tensor, col_norm: torch.Tensor) -> torch.Tensor:
    """Keep-mask by |W_ij| * ||X_j||_2 (`col_norm` [K])."""
    return mask_topk_24(w.detach().double().abs() * col_norm.double()[None, :])


def sparsegpt_prune(w: torch.Tensor, hessian: torch.Tensor, block_size: int = 128,
                    percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT 2:4: (updated weight [N, K] float64 with zeros where pruned, keep-mask)."""
    n, k = w.shape
    keep = torch.zeros(n, k, dtype=torch.bool)

    def round_column(j: int, state) -> torch.Tensor:
        c = state.col(j)
        if j % GROUP == 0:
            block = state.block(j, GROUP)
            d = state.hinv_diag(j, GROUP)
            keep[:, c:c + GROUP] = mask_topk_24(block ** 2 / (d ** 2)[None, :])
        return torch.where(keep[:, c], state.w, torch.zeros_like(state.w))

    result = obs_solve(w, hessian, round_column, block_size=block_size, percdamp=percdamp,
                       align=GROUP)
    return result.Q * keep, keep


def _reads_any(ops: list[Op], producers: list[Op]) -> bool:
    """Whether the input of any of `ops` depends (transitively) on a result of `producers`."""
    targets = set(producers)
    seen: set[Op] = set()
    stack = [op.operands[0].defining_op for op in ops]
    while stack:
        d = stack.pop()
        if d is None or d in seen:
            continue
        if d in targets:
            return True
        seen.add(d)
        stack.extend(v.defining_op for v in d.operands)
    return False


# ------------------------------------------------------------------ the pass


@dataclass
class Sparsify(LayerSelection, Pass):
    """2:4 pruning of linear weights (see the module docstring)."""

    name = "sparsify"
    needs_unfused = True
    pattern: str = option("2:4", choices=PATTERNS, help="N:M pattern (only 2:4 for now)")
    method: str = option("magnitude", choices=METHODS, help="how the kept weights are chosen")
    block_size: int = option(128, range=Range(GROUP), help="sparsegpt lazy-update block (columns)")
    percdamp: float = percdamp_option()
    sequential: bool = option(False, help="wanda/sparsegpt: measure each layer's input on the "
                                          "model with the layers before it already pruned (as "
                                          "both papers do)")

    def validate(self) -> None:
        if self.pattern not in PATTERNS:
            raise PipelineError(f"pass 'sparsify': option 'pattern' must be one of "
                                f"{', '.join(PATTERNS)} (N:M semi-structured sparsity; other "
                                f"patterns are not supported yet); got {self.pattern!r}")
        super().validate()
        if self.block_size % GROUP:
            raise PipelineError(f"pass 'sparsify': option 'block-size' must be a positive multiple "
                                f"of {GROUP}; got {self.block_size}")

    def statistics(self) -> frozenset[str]:
        return {"magnitude": frozenset(), "wanda": frozenset({MEAN_SQUARE}),
                "sparsegpt": frozenset({HESSIAN})}[self.method]

    def run(self, module: Module, ctx: PassContext) -> bool:
        if self.method != "magnitude":
            require_calibration(ctx, f"sparsify{{method={self.method}}}")
        stats = calibration_stats(module, ctx, self.statistics() | {HESSIAN})
        sequential = self.sequential and self.method != "magnitude"
        done: dict[str, list] = {}  # weight param -> its (values, meta) params
        replaced: dict[str, str] = {}
        changed = False
        for f in module.functions:
            pruned_since: list[Op] = []  # sparse ops added since `stats` was measured
            collected = self._collect(f, ctx)
            for i, (param, ops) in enumerate(collected.items()):  # in program order
                ctx.step(self.name, i, len(collected), param)
                weights, entry = done.get(param), None
                if weights is None:
                    inputs = {op.operands[0] for op in ops}
                    if sequential and f is module.entry and (
                            (pruned_since and _reads_any(ops, pruned_since))
                            or any(stats.get(v) is None for v in inputs)):
                        stats = CalibrationStats(module, ctx, only=inputs)
                        ctx.stat(self.name, "calibration re-runs (sequential)")
                        pruned_since = []
                    pruned = self._prune(f, param, ops, ctx, stats)
                    if pruned is None:
                        continue
                    weights, entry = pruned
                    done[param] = weights
                    replaced[param] = f.param_name(weights[0])
                new_ops = [replace_linear(op, "spk.linear_sparse24", weights) for op in ops]
                if entry is not None:
                    entry.bits_per_weight = bits_per_weight(new_ops[0])
                    ctx.report.append(entry)
                    entry = None
                pruned_since += new_ops
                changed = True
            ctx.step(self.name, len(collected), len(collected), "")
        retire_replaced(module, ctx, replaced)  # `lorc` reads the dense weight back
        return changed

    # -------------------------------------------------------------- steps

    def _skip(self, ctx: PassContext, op: Op, layer: str, why: str, key: str) -> None:
        skip_layer(ctx, self.name, op, layer, why, key, scheme=self.pattern, method=self.method)

    def _collect(self, f: Function, ctx: PassContext) -> dict[str, list[Op]]:
        """The selected, prunable linears of `f`, grouped by weight parameter."""
        groups: dict[str, list[Op]] = {}
        for op in list(f.body.ops):
            if op.name != "aten.linear":
                continue
            x, w = op.operands[0].type, op.operands[1].type
            param = f.param_name(op.operands[1])
            if param is None:
                ctx.remark(op, f"{self.name}: a linear skipped: its weight is computed, not a parameter")
                ctx.stat(self.name, "linears skipped (weight not a parameter)")
                continue
            layer = layer_name(param)
            if not self.selects(layer):
                ctx.stat(self.name, "layers left dense (not selected)")
                continue
            if any(u.name != "aten.linear" for u in op.operands[1].uses):
                self._skip(ctx, op, layer, "its weight is also read by a non-linear op (a tied "
                           "embedding): the dense copy would stay beside the compressed one",
                           "tied weight")
                continue
            k = w.shape[1]
            if k % GROUP:
                self._skip(ctx, op, layer, f"in-features {k} not divisible by {GROUP}",
                           "in-features not divisible by 4")
                continue
            if not isinstance(x, TensorType) or x.dtype != w.dtype or w.dtype not in FLOAT_TYPES:
                self._skip(ctx, op, layer, f"weight {w} is not a float weight of the input's dtype",
                           "dtype")
                continue
            groups.setdefault(param, []).append(op)
        return groups

    def _prune(self, f: Function, param: str, ops: list[Op], ctx: PassContext,
               stats: CalibrationStats | None) -> tuple[list, LayerEntry] | None:
        """Choose the mask (and new values), store the compressed tensors; their params and
        the layer's report entry."""
        layer = layer_name(param)
        w = ctx.weights[param].detach()
        inputs = [stats.get(op.operands[0]) for op in ops] if stats is not None else []
        hessian = pooled_hessian(stats, [op.operands[0] for op in ops])
        if self.method == "magnitude":
            mask, pruned = magnitude_mask(w), w
        elif not inputs or any(s is None for s in inputs) or (
                self.method == "sparsegpt" and hessian is None):
            self._skip(ctx, ops[0], layer, "no calibration statistics for its input",
                       "no calibration statistics")
            return None
        elif self.method == "wanda":
            col_norm = sum(s.sumsq for s in inputs).sqrt()
            mask, pruned = wanda_mask(w, col_norm), w
        else:
            q, mask = sparsegpt_prune(w, hessian, self.block_size, self.percdamp)
            pruned = q.to(w.dtype)
        values, meta = compress_24(pruned.detach(), mask)
        weights = add_weight_params(f, ctx, layer, {"sparse_values": values, "sparse_meta": meta})
        n, k = w.shape
        ctx.stat(self.name, f"layers pruned ({self.method})")
        ctx.stat(self.name, "weights pruned", n * k // 2)
        kept = pruned * mask
        entry = LayerEntry(
            self.name, layer, "sparsified", scheme=self.pattern, method=self.method,
            op="spk.linear_sparse24", in_features=k, out_features=n, sparsity=0.5,
            bytes=values.nbytes + meta.nbytes, weight_rel_err=relative_error(w, kept),
            rel_err=relative_error(w, kept, hessian) if hessian is not None else None)
        return weights, entry
