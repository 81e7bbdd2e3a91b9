"""`slice{fraction=0.25}`: SliceGPT — rotate the residual stream onto its principal
components and delete the trailing `fraction` of the embedding dimension.

Follows SliceGPT (Ashkboos et al., "SliceGPT: Compress Large Language Models by Deleting
Rows and Columns", ICLR 2024). After `fold-norms` the pre-LN residual stream
`h_{i+1} = h_i + W_out_i(...)` is read only through scale-free RMSNorms, which commute with
any orthogonal `Q`: `RMSNorm(h Q) = RMSNorm(h) Q`. So every stream value `h_i` may live in
its own basis `Q_i` (section 3.3):

* the writers of `h_0` (embedding tables, or linears) become `E Q_0`;
* each block's output linear writes in the next basis: `W_out <- Q_{i+1}^T W_out`, bias too;
* each residual skip carries `h_i Q_i` into basis `Q_{i+1}`: a new linear with
  `Q_i^T Q_{i+1}` (the paper's shortcut matrix) is inserted on the residual path;
* each linear reading `RMSNorm(h_i)` (the block's input linears, the head) becomes `W Q_i`.

`Q_i` holds the eigenvectors of `E[h_i h_i^T]` over the calibration tokens (descending
eigenvalues), so the trailing columns carry the least energy; slicing keeps the first
`k = d - floor(fraction d)` columns of every `Q_i`: embeddings lose columns, output linears
and shortcuts lose rows, input linears and the head lose columns. With `fraction=0` nothing
is deleted and the model computes the same function up to float rounding (the invariance).

As in the paper, each `Q_i` comes from the activations of the model whose earlier blocks
are already sliced (`sequential=true`, the default): the calibration batches run in
lockstep (`compiler.lockstep`), and each `h_i` is projected onto its kept subspace
`Q_i Q_i^T` before the model goes on, which is exactly what the sliced model computes in
the original basis — so one pass over the calibration data gives the paper's
layer-by-layer statistics. `sequential=false` takes every `Q_i` from the unsliced model
(cheaper to reason about, worse: on SmolLM2-135M at 20%, 1.54x vs 1.34x perplexity).

The sliced RMSNorm must still divide by the original width `d` (the paper's `RMSN` module
does `sum(x^2) / d`). We keep `aten.rms_norm` over `k` channels with `eps' = eps d/k`, which
is exactly `sqrt(k/d)` times the width-`d` norm, and fold the constant `sqrt(d/k)` into the
linears that read it.

Departures from the paper: it acts on the IR, for any model whose residual stream has this
shape (Llama/SmolLM RMSNorm, GPT-2 LayerNorm after `fold-norms`), not through per-model
adapters; one width `k` for every stream value (the paper's uniform schedule); no
eigenvalue damping (it does not change the eigenvectors); calibration padding masks are
not modelled (every token counts). A model where the invariance does not hold (post-LN
BERT, a norm with a scale left, a stream value read by anything but a norm) is refused
with the reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spokeshave.compiler.errors import PipelineError, SpokeshaveError
from spokeshave.compiler.ir import Function, Module, Op, Value
from spokeshave.compiler.lockstep import run_lockstep
from spokeshave.compiler.passmanager import Pass, PassContext, Range, option
from spokeshave.compiler.report import LayerEntry

from ._weights import add_param, drop_dead_params, param_tensor, unused_params
from .fold_norms import ResidualStream, StreamError, make_norm, norm_parts


def pca_basis(second_moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues descending, eigenvectors as columns) of a symmetric `E[x x^T]`, float64."""
    c = second_moment.double()
    c = (c + c.t()) / 2
    vals, vecs = torch.linalg.eigh(c)
    order = torch.argsort(vals, descending=True)
    return vals[order], vecs[:, order]


def _resize(v: Value, k: int) -> None:
    t = v.type
    v.type = t.with_shape(t.shape[:-1] + (k,))


def _store_name(func: Function, v: Value, fallback: str) -> str:
    return func.param_name(v) or fallback


@dataclass
class Slice(Pass):
    """SliceGPT: PCA-rotate the residual stream per block and delete its trailing columns."""

    name = "slice"
    layer_local = False  # one basis per residual-stream value, chosen across all blocks
    needs_unfused = True
    fraction: float = option(0.25, range=Range(0.0, 1.0, hi_open=True),
                             why="the share of the embedding dimension to delete")
    sequential: bool = True

    # ------------------------------------------------------------------ checks

    def _check(self, func: Function, ctx: PassContext) -> ResidualStream:
        try:
            stream = ResidualStream.find(func)
        except StreamError as e:
            hint = "" if e.post_ln else ("; slice works on the form fold-norms produces: run "
                                         "fold-norms first if it has not run")
            raise SpokeshaveError(f"cannot slice this model: {e}{hint}") from None
        w = ctx.weights
        for rs in stream.readers:
            for r in rs:
                p = norm_parts(r)
                if not p.is_rms:
                    raise SpokeshaveError(
                        f"the residual stream is read by {r.describe()}, a LayerNorm: it subtracts "
                        f"the mean (a fixed direction of the stream), so it does not commute with a "
                        f"rotation; run fold-norms first (it turns LayerNorm into RMSNorm where the "
                        f"model allows it)")
                if p.weight is not None:
                    raise SpokeshaveError(
                        f"the RMSNorm {r.describe()} still has a per-channel scale, which does not "
                        f"commute with a rotation of the stream; run fold-norms first")
                for u in r.result.uses:
                    if (u.name != "aten.linear" or u.operands[0] is not r.result
                            or any(param_tensor(func, w, x) is None for x in u.operands[1:])):
                        raise SpokeshaveError(
                            f"the normalised residual stream from {r.describe()} is read by "
                            f"{u.describe()}, not by a linear with parameter weights, so its "
                            f"rotation cannot be folded into weights")
        for op in stream.sources + stream.writers:
            weights = op.operands[1:] if op.name == "aten.linear" else op.operands[:1]
            if any(param_tensor(func, w, x) is None for x in weights):
                raise SpokeshaveError(f"the residual stream is written by {op.describe()}, whose "
                                      f"weights are not parameters; they cannot be rotated")
        if not stream.readers[-1]:
            raise SpokeshaveError("the last residual stream value is not read by a normalisation")
        return stream

    # ------------------------------------------------------------------ the rotations

    def _bases(self, module: Module, ctx: PassContext, stream: ResidualStream,
               k: int) -> list[torch.Tensor]:
        """`Q_i[:, :k]` for every stream value: the top-k eigenvectors of `E[h_i h_i^T]`
        over all calibration tokens. With `sequential`, the batches run in lockstep and each
        `h_i` is projected onto its kept subspace before the model goes on, so every later
        `Q` sees the activations of the sliced model (the paper's layer-by-layer procedure,
        in one pass)."""
        d = stream.dim
        index = {v: i for i, v in enumerate(stream.values)}
        bases: list[torch.Tensor | None] = [None] * len(stream.values)

        def visit(v: Value, xs: list[torch.Tensor]):
            i = index[v]
            c = torch.zeros(d, d, dtype=torch.float64)
            count = 0
            for x in xs:
                x2 = x.reshape(-1, d).double()
                c += x2.t() @ x2
                count += x2.shape[0]
            vals, q = pca_basis(c / max(count, 1))
            bases[i] = q[:, :k]
            total = float(vals.clamp_min(0).sum()) or 1.0
            ctx.report.append(LayerEntry(
                self.name, f"residual.{i}", "sliced",
                details={"dim": d, "kept": k, "tokens": count,
                         "energy_kept": float(vals[:k].clamp_min(0).sum()) / total}))
            if not self.sequential or k == d:
                return None
            p = (bases[i] @ bases[i].t()).to(xs[0].dtype)
            return [x @ p for x in xs]

        run_lockstep(module, ctx, stream.values, visit, self.name)
        return bases

    # ------------------------------------------------------------------ the rewrite

    def run(self, module: Module, ctx: PassContext) -> bool:
        func = module.entry
        stream = self._check(func, ctx)
        d = stream.dim
        k = d - int(math.floor(self.fraction * d + 1e-9))
        if k < 1:
            raise PipelineError(f"pass 'slice': fraction={self.fraction} leaves no channel of {d}")
        bases = self._bases(module, ctx, stream, k)
        before = _param_count(func, ctx)
        w = ctx.weights
        unused = unused_params(func)

        def replace(op: Op, index: int, base: str, t: torch.Tensor) -> None:
            old = op.operands[index]
            op.set_operand(index, add_param(func, w, _store_name(func, old, base) + ".sliced", t))

        def rotate_output(op: Op, q: torch.Tensor) -> None:
            """`op` (embedding or linear) writes into the stream basis `q` [d, k]."""
            if op.name == "aten.embedding":
                table = param_tensor(func, w, op.operands[0])
                replace(op, 0, "embedding.weight", (table.double() @ q).to(table.dtype))
            else:
                wt = param_tensor(func, w, op.operands[1])
                replace(op, 1, "linear.weight", (q.t() @ wt.double()).to(wt.dtype))
                if len(op.operands) > 2:
                    b = param_tensor(func, w, op.operands[2])
                    replace(op, 2, "linear.bias", (q.t() @ b.double()).to(b.dtype))
            _resize(op.result, k)

        scale = math.sqrt(d / k)
        eps = {r: norm_parts(r).eps for rs in stream.readers for r in rs}
        for op in stream.sources:
            rotate_output(op, bases[0])
        for i, h in enumerate(stream.values):
            _resize(h, k)
            for norm in stream.readers[i]:
                new = make_norm("aten.rms_norm", h, k, eps[norm] * d / k, like=norm)
                func.body.insert_before(norm, new)
                norm.result.replace_all_uses_with(new.result)
                func.body.erase(norm)
                for lin in dict.fromkeys(new.result.uses):
                    wt = param_tensor(func, w, lin.operands[1])
                    replace(lin, 1, "linear.weight", (wt.double() @ bases[i] * scale).to(wt.dtype))
            if i < len(stream.adds):
                add, writer = stream.adds[i], stream.writers[i]
                rotate_output(writer, bases[i + 1])
                shortcut = (bases[i + 1].t() @ bases[i]).to(h.type.torch_dtype)  # [k, k]
                sv = add_param(func, w, f"slice.shortcut.{i}", shortcut)
                lin = Op("aten.linear", [h, sv], [h.type], loc=add.loc)
                func.body.insert_before(add, lin)
                add.set_operand(add.operands.index(h), lin.result)
        drop_dead_params(func, w, unused)
        after = _param_count(func, ctx)
        ctx.stat(self.name, "residual stream values rotated", len(stream.values))
        ctx.stat(self.name, "shortcut rotations inserted", len(stream.adds))
        ctx.stat(self.name, "channels deleted", d - k)
        ctx.stat(self.name, "parameters before", before)
        ctx.stat(self.name, "parameters after", after)
        ctx.remark(func, f"slice: residual stream {d} -> {k} channels; parameters {before} -> {after}")
        return True


def _param_count(func: Function, ctx: PassContext) -> int:
    """Elements of every parameter the function binds: what the compiled model stores
    (an unused one, e.g. a buffer export kept, still costs memory until `dce`)."""
    return sum(a.type.numel() or 0 for a in func.args if func.param_name(a))
