"""`sparsify{pattern=2:4 method=magnitude|wanda|sparsegpt layers=<glob> skip=<glob>}`:
2:4 semi-structured pruning of `aten.linear` weights, stored compressed.

In every group of 4 consecutive input features of each output row, 2 weights are kept.
The pruned weight is stored as values + 2-bit positions (`compiler.sparse`) and the linear
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

from dataclasses import dataclass, field

import torch

from spokeshave.compiler.calibration import CalibrationStats
from spokeshave.compiler.errors import PipelineError, SpokeshaveError
from spokeshave.compiler.ir import Function, Module, Op, TensorType
from spokeshave.compiler.passmanager import Pass, PassContext, register_pass
from spokeshave.compiler.sparse import GROUP, compress_24, mask_topk_24, meta_cols

from ._obs_solver import obs_solve
from .quantize import glob_match, layer_name

PATTERNS = ("2:4",)
METHODS = ("magnitude", "wanda", "sparsegpt")
FLOAT_TYPES = ("f32", "f16", "bf16", "f64")


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


def rel_err(w: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor | None) -> float:
    """Relative error of the layer: of the weight (`hessian` None), else of its output over
    the calibration tokens, `tr(dW H dW^T) / tr(W H W^T)` (as `quantize` reports it)."""
    w, d = w.double(), pruned.double() - w.double()
    if hessian is None:
        return float((d * d).sum() / (w * w).sum().clamp_min(1e-30))
    h = hessian.double()
    return float(((d @ h) * d).sum() / ((w @ h) * w).sum().clamp_min(1e-30))


# ------------------------------------------------------------------ the pass


@register_pass
@dataclass
class Sparsify(Pass):
    """2:4 pruning of linear weights (see the module docstring)."""

    name = "sparsify"
    pattern: str = field(default="2:4", metadata={"choices": PATTERNS,
                                                  "help": "N:M pattern (only 2:4 for now)"})
    method: str = field(default="magnitude", metadata={"choices": METHODS,
                                                       "help": "how the kept weights are chosen"})
    layers: str = field(default="*", metadata={"help": "fnmatch globs of layers to prune, '|'-separated"})
    skip: str = field(default="", metadata={"help": "fnmatch globs of layers to leave dense"})
    block_size: int = field(default=128, metadata={"help": "sparsegpt lazy-update block (columns)"})
    percdamp: float = field(default=0.01, metadata={"help": "sparsegpt Hessian damping, x mean(diag H)"})
    sequential: bool = field(default=False, metadata={
        "help": "wanda/sparsegpt: measure each layer's input on the model with the layers "
                "before it already pruned (as both papers do)"})

    def validate(self) -> None:
        if self.pattern not in PATTERNS:
            raise PipelineError(f"pass 'sparsify': option 'pattern' must be one of "
                                f"{', '.join(PATTERNS)} (N:M semi-structured sparsity; other "
                                f"patterns are not supported yet); got {self.pattern!r}")
        super().validate()
        if self.block_size < GROUP or self.block_size % GROUP:
            raise PipelineError(f"pass 'sparsify': option 'block-size' must be a positive multiple "
                                f"of {GROUP}; got {self.block_size}")
        if not 0.0 <= self.percdamp < 1.0:
            raise PipelineError(f"pass 'sparsify': option 'percdamp' must be in [0, 1); "
                                f"got {self.percdamp}")

    def run(self, module: Module, ctx: PassContext) -> bool:
        if self.method != "magnitude" and not ctx.calibration:
            raise SpokeshaveError(f"method={self.method} needs calibration data: pass "
                                  f"calibration=[batches] to spokeshave.compile (each batch a tuple "
                                  f"of the model's positional inputs), or use method=magnitude")
        stats = ctx.analyses.get(CalibrationStats, module) if ctx.calibration else None
        sequential = self.sequential and self.method != "magnitude"
        done: dict[str, tuple[str, str]] = {}  # weight param -> (values, meta) params
        changed = False
        for f in module.functions:
            pruned_since: list[Op] = []  # sparse ops added since `stats` was measured
            for param, ops in self._collect(f, ctx).items():  # in program order
                names = done.get(param)
                if names is None:
                    inputs = {op.operands[0] for op in ops}
                    if sequential and f is module.entry and (
                            (pruned_since and _reads_any(ops, pruned_since))
                            or any(stats.get(v) is None for v in inputs)):
                        stats = CalibrationStats(module, ctx, only=inputs)
                        ctx.stat(self.name, "calibration re-runs (sequential)")
                        pruned_since = []
                    names = self._prune(param, ops, ctx, stats)
                    if names is None:
                        continue
                    done[param] = names
                pruned_since += self._rewrite(f, param, ops, names, ctx)
                changed = True
        if done:
            keep = {n for g in module.functions for n in g.params()}
            for param in done:
                if param not in keep:
                    ctx.weights.retire(param, done[param][0])  # `lorc` reads it back
        return changed

    # -------------------------------------------------------------- steps

    def _skip(self, ctx: PassContext, layer: str, why: str, key: str) -> None:
        ctx.remark(f"{self.name}: skipped layer '{layer}': {why}")
        ctx.stat(self.name, key)
        ctx.report.append({"pass": self.name, "layer": layer, "scheme": self.pattern,
                           "method": self.method, "status": "skipped", "reason": why})

    def _collect(self, f: Function, ctx: PassContext) -> dict[str, list[Op]]:
        """The selected, prunable linears of `f`, grouped by weight parameter."""
        groups: dict[str, list[Op]] = {}
        for op in list(f.body.ops):
            if op.name != "aten.linear":
                continue
            x, w = op.operands[0].type, op.operands[1].type
            param = f.param_name(op.operands[1])
            if param is None:
                ctx.remark(f"{self.name}: a linear{f' at {op.loc}' if op.loc else ''} skipped: "
                           f"its weight is computed, not a parameter")
                ctx.stat(self.name, "linears skipped (weight not a parameter)")
                continue
            layer = layer_name(param)
            if not glob_match(layer, self.layers) or glob_match(layer, self.skip):
                ctx.stat(self.name, "layers left dense (not selected)")
                continue
            if any(u.name != "aten.linear" for u in op.operands[1].uses):
                self._skip(ctx, layer, "its weight is also read by a non-linear op (a tied "
                           "embedding): the dense copy would stay beside the compressed one",
                           "layers skipped (tied weight)")
                continue
            k = w.shape[1]
            if k % GROUP:
                self._skip(ctx, layer, f"in-features {k} not divisible by {GROUP}",
                           "layers skipped (in-features not divisible by 4)")
                continue
            if not isinstance(x, TensorType) or x.dtype != w.dtype or w.dtype not in FLOAT_TYPES:
                self._skip(ctx, layer, f"weight {w} is not a float weight of the input's dtype",
                           "layers skipped (dtype)")
                continue
            groups.setdefault(param, []).append(op)
        return groups

    def _prune(self, param: str, ops: list[Op], ctx: PassContext,
               stats: CalibrationStats | None) -> tuple[str, str] | None:
        """Choose the mask (and new values), store the compressed tensors; their names."""
        layer = layer_name(param)
        w = ctx.weights[param].detach()
        inputs = [stats.get(op.operands[0]) for op in ops] if stats is not None else []
        have_stats = bool(inputs) and all(s is not None and s.hessian_sum is not None
                                          for s in inputs)
        hessian = None
        if have_stats:
            count = sum(s.count for s in inputs)
            hessian = sum(s.hessian_sum for s in inputs) / max(count, 1)
        if self.method == "magnitude":
            mask, pruned = magnitude_mask(w), w
        elif not have_stats:
            self._skip(ctx, layer, "no calibration statistics for its input",
                       "layers skipped (no calibration statistics)")
            return None
        elif self.method == "wanda":
            col_norm = sum(s.sumsq for s in inputs).sqrt()
            mask, pruned = wanda_mask(w, col_norm), w
        else:
            q, mask = sparsegpt_prune(w, hessian, self.block_size, self.percdamp)
            pruned = q.to(w.dtype)
        values, meta = compress_24(pruned.detach(), mask)
        vname = ctx.weights.fresh_name(f"{layer}.sparse_values")
        ctx.weights[vname] = values
        mname = ctx.weights.fresh_name(f"{layer}.sparse_meta")
        ctx.weights[mname] = meta
        n, k = w.shape
        ctx.stat(self.name, f"layers pruned ({self.method})")
        ctx.stat(self.name, "weights pruned", n * k // 2)
        entry = {"pass": self.name, "layer": layer, "scheme": self.pattern, "method": self.method,
                 "status": "sparsified", "op": "spk.linear_sparse24", "in_features": k,
                 "out_features": n, "sparsity": 0.5,
                 "bits_per_weight": values.element_size() * 8 / 2 + 4 * meta.numel() / (n * k),
                 "bytes": values.numel() * values.element_size() + meta.numel(),
                 "weight_rel_err": rel_err(w, pruned * mask, None)}
        if hessian is not None:
            entry["rel_err"] = rel_err(w, pruned * mask, hessian)
        ctx.report.append(entry)
        return vname, mname

    def _rewrite(self, f: Function, param: str, ops: list[Op], names: tuple[str, str],
                 ctx: PassContext) -> list[Op]:
        """Replace `ops` by spk.linear_sparse24 ops reading the compressed weight."""
        vname, mname = names
        params = f.params()
        values = params.get(vname) or f.add_param(vname, TensorType.of(ctx.weights[vname]))
        meta = params.get(mname) or f.add_param(mname, TensorType.of(ctx.weights[mname]))
        weight = ops[0].operands[1]
        new_ops = []
        for op in ops:
            x, _, *bias = op.operands
            bias = [b for b in bias if isinstance(b.type, TensorType)]
            new = Op("spk.linear_sparse24", [x, values, meta, *bias], [op.result.type], {},
                     loc=op.loc)
            op.parent.insert_before(op, new)
            op.result.replace_all_uses_with(new.result)
            op.parent.erase(op)
            new_ops.append(new)
        assert meta.type.shape[1] == meta_cols(weight.type.shape[1])
        if not weight.uses:
            f.erase_arg(weight)
        return new_ops
