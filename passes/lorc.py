"""`lorc{rank=8 whiten=false layers=<glob> skip=<glob> percdamp=0.01}`: low-rank compensation
of compressed linears.

Follows LoRC from ZeroQuant-V2 (Yao et al. 2023, "ZeroQuant-V2: Exploring Post-training
Quantization in LLMs from Comprehensive Study to Low Rank Compensation"): the compression
error `E = W - decode(W_compressed)` of each layer is approximated by its best rank-r
factorisation `E ~ A B` (`A = U_r S_r^1/2` [N, r], `B = S_r^1/2 V_r^T` [r, K]) and added back
at run time:

    y = linear_compressed(x) + linear(linear(x, B), A)

The correction is two plain `aten.linear`s and an `aten.add`, so every backend runs it and
fusion may later fold it into the compressed GEMM's epilogue. It applies to any compressed
linear whose record has a weight decoder (`compiler.dialect`): int8, fp8, int4
group-wise, 2:4 sparse, the outlier splits, and any format a record declares with the
`compressed_linear` trait. It must run in the same compile as the pass that compressed the
layer, because that pass hands over the float weight (`WeightStore.original_of`); a layer
without one (IR read back from text) is skipped and reported.

Departures from the paper:
* `whiten=true` minimises the layer's output error on the calibration tokens,
  `||(E - A B) X||`, instead of the weight error `||E - A B||`: with the Cholesky factor
  `H = C C^T` of the input covariance, the best rank-r approximation of `E C` is taken and
  mapped back by `C^-1` (the data whitening of SVD-LLM, Wang et al. 2024). Outlier input
  channels then get the rank they deserve. The covariance is damped by `percdamp` times its
  mean diagonal, as GPTQ does.
* The factors are kept in the layer's float dtype; the paper also tries int8 factors.
A layer whose correction would hold as many numbers as its dense weight
(`rank * (N + K) >= N * K`) is skipped and reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spokeshave.compiler.calibration import HESSIAN, require_calibration
from spokeshave.compiler.dialect import (COMPRESSED_LINEAR, bits_per_weight, decode_weight,
                                         has_trait, weight_operands)
from spokeshave.compiler.ir import Function, Module, Op
from spokeshave.compiler.passmanager import Pass, PassContext, Range, option
from spokeshave.compiler.report import LayerEntry

from ._compression import (LayerSelection, add_weight_params, calibration_stats, layer_name,
                           percdamp_option, pooled_hessian, relative_error, skip_layer)


def low_rank_factors(error: torch.Tensor, rank: int, hessian: torch.Tensor | None = None,
                     percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [N, r], B [r, K]) float64 with `A @ B` the best rank-r approximation of `error`
    [N, K]: in the Frobenius norm, or, given the input covariance `hessian` [K, K], in the
    output norm `tr((E - AB) H (E - AB)^T)`."""
    e = error.double()
    if hessian is None:
        u, s, vh = torch.linalg.svd(e, full_matrices=False)
        root = s[:rank].sqrt()
        return u[:, :rank] * root, root[:, None] * vh[:rank]
    h = hessian.double()
    damp = percdamp * h.diagonal().mean().clamp_min(1e-12)
    c = torch.linalg.cholesky(h + damp * torch.eye(h.shape[0], dtype=h.dtype))
    u, s, vh = torch.linalg.svd(e @ c, full_matrices=False)
    root = s[:rank].sqrt()
    # B = S^1/2 V^T C^-1, solved as C^T B^T = V S^1/2 (C lower triangular).
    b = torch.linalg.solve_triangular(c.T, (root[:, None] * vh[:rank]).T, upper=True).T
    return u[:, :rank] * root, b


@dataclass
class Lorc(LayerSelection, Pass):
    """Add a rank-`rank` correction of the compression error to compressed linears."""

    name = "lorc"
    needs_unfused = True
    reads_originals = True
    rank: int = option(8, range=Range(1))
    whiten: bool = False
    percdamp: float = percdamp_option()

    def statistics(self) -> frozenset[str]:
        return frozenset({HESSIAN}) if self.whiten else frozenset()

    def run(self, module: Module, ctx: PassContext) -> bool:
        if self.whiten:
            require_calibration(ctx, "lorc{whiten=true}")
        stats = calibration_stats(module, ctx, frozenset({HESSIAN}))
        changed = False
        for f in module.functions:
            done: dict[str, tuple | None] = {}  # weight param -> its factor params (None: skipped)
            for op in [o for o in f.body.ops if has_trait(o, COMPRESSED_LINEAR)]:
                s = stats if f is module.entry else None
                changed |= self._compensate(f, op, ctx, s, done)
        return changed

    def _compensate(self, f: Function, op: Op, ctx: PassContext, stats, done: dict) -> bool:
        qname = f.param_name(op.operands[1])
        if qname is None:
            return False
        if qname not in done:
            done[qname] = self._factors(f, op, ctx, stats, qname)
        if done[qname] is None:
            return False
        a, b = done[qname]
        x, y = op.operands[0], op.result
        t_type = x.type.with_shape(x.type.shape[:-1] + (b.type.shape[0],))
        low = Op("aten.linear", [x, b], [t_type], loc=op.loc)
        corr = Op("aten.linear", [low.result, a], [y.type], loc=op.loc)
        total = Op("aten.add.Tensor", [y, corr.result], [y.type], loc=op.loc)
        block = op.parent
        after = block.ops[block.ops.index(op) + 1]  # a compressed linear is never the terminator
        for new in (low, corr, total):
            block.insert_before(after, new)
        y.replace_all_uses_with(total.result)
        total.set_operand(0, y)  # the one use of y that stays
        ctx.stat(self.name, "linears compensated")
        return True

    def _factors(self, f: Function, op: Op, ctx: PassContext, stats, qname: str) -> tuple | None:
        """Compute and store the factors of one compressed weight: their params, or None."""
        found = ctx.weights.original_of(qname)
        layer = layer_name(found[0]) if found else qname.rsplit(".", 1)[0]
        if not self.selects(layer):
            return None
        if found is None:
            return skip_layer(ctx, self.name, op, layer, "no float weight to compare with (lorc "
                              "must run in the same compile as the pass that compressed the "
                              "layer)", "no original", scheme=f"rank {self.rank}")
        original = found[1]
        w = original.double()
        n, k = w.shape
        if self.rank * (n + k) >= n * k:
            return skip_layer(ctx, self.name, op, layer, f"rank {self.rank} correction of a {n}x{k} "
                              f"weight is as large as the weight", "rank too large",
                              scheme=f"rank {self.rank}")
        # a shared weight serves all its readers: their inputs pooled
        readers = [u for u in f.ops if has_trait(u, COMPRESSED_LINEAR) and u.operands[1] is op.operands[1]]
        H = pooled_hessian(stats, [u.operands[0] for u in readers])
        if self.whiten and H is None:
            return skip_layer(ctx, self.name, op, layer, "no calibration statistics for its input",
                              "no calibration statistics", scheme=f"rank {self.rank}")
        tensors = [ctx.weights[f.param_name(v)] for v in weight_operands(op)]
        dq = decode_weight(op, tensors).double()
        a, b = low_rank_factors(w - dq, self.rank, H if self.whiten else None, self.percdamp)
        params = add_weight_params(f, ctx, layer, {"lorc_a": a.to(original.dtype),
                                                    "lorc_b": b.to(original.dtype)})
        corrected = dq + a.to(original.dtype).double() @ b.to(original.dtype).double()
        extra_bits = self.rank * (n + k) * original.element_size() * 8 / (n * k)
        ctx.report.append(LayerEntry(
            self.name, layer, "compensated", scheme=f"rank {self.rank}",
            bits_per_weight=bits_per_weight(op) + extra_bits,
            weight_rel_err=relative_error(w, corrected),
            rel_err=relative_error(w, corrected, H) if H is not None else None,
            details={"rank": self.rank, "extra_bits_per_weight": extra_bits,
                     "rel_err_before": relative_error(w, dq, H) if H is not None else None}))
        return params[0], params[1]
