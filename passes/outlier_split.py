"""`outlier-split{threshold=6.0 scheme=w8a8|w8}`: LLM.int8() mixed-precision decomposition.

Follows LLM.int8() (Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for
Transformers at Scale", NeurIPS 2022), section 3.2: the input channels (columns of X) whose
magnitude exceeds `threshold` are multiplied in high precision, everything else in int8
with vector-wise quantization (per-token activation scales, per-output-channel weight
scales). Every `aten.linear` with a parameter weight (`layers=` / `skip=` globs as in
`quantize`) becomes

* `spk.linear_w8a8_split(x, qweight, scale, oweight, oindex, bias?)` (`compiler.outliers`) if
  some input channel's calibration abs-max exceeds `threshold`: `oweight` = the outlier
  columns of W in the model's float type, `qweight` the int8 rest (outlier columns zero,
  scales from the rest only);
* `spk.linear_w8a8` (exactly `quantize{scheme=w8a8}`'s) if none does.

`scheme=w8` is the weight-only variant (`spk.linear_w8_split` / `spk.linear_w8`): activations
stay float, and taking the outlier columns out of the int8 weight keeps their large weights
from setting the row's int8 scale. Real models need it: all-MiniLM-L6-v2 writes its massive
residual channel 99 with two weights of |6.2| and |3.7| in a row of `layer.2.output.dense`
whose other weights are ~0.03, so plain per-channel int8 rounds that row to a handful of
levels; those two weights read exactly the activation-outlier channels.

Departures: the outlier columns are chosen once at compile time from the calibration
abs-max (the paper picks them per batch at run time, and also requires the outlier to be
present in >= 25% of layers / 6% of tokens); the outlier part stays in the model's float
type (fp32 here) rather than fp16. A linear whose every column is an outlier is left in float
and reported. Parameters: `<layer>.qweight`, `<layer>.scale`, `<layer>.oweight`,
`<layer>.oindex`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from spokeshave.compiler import quant
from spokeshave.compiler.calibration import CalibrationStats, require_calibration
from spokeshave.compiler.errors import PipelineError
from spokeshave.compiler.ir import Module, Op
from spokeshave.compiler.passmanager import Pass, PassContext, register_pass

from .fold_norms import add_param, drop_dead_params, param_tensor, unused_params
from .quantize import glob_match, layer_name


@register_pass
@dataclass
class OutlierSplit(Pass):
    """int8 linears with the outlier input channels kept in float (LLM.int8())."""

    name = "outlier-split"
    threshold: float = 6.0
    scheme: str = field(default="w8a8", metadata={"choices": ("w8a8", "w8")})
    layers: str = "*"
    skip: str = ""

    def validate(self) -> None:
        super().validate()
        if not self.threshold > 0.0:
            raise PipelineError(f"pass 'outlier-split': option 'threshold' must be > 0; "
                                f"got {self.threshold!r}")

    def run(self, module: Module, ctx: PassContext) -> bool:
        func = module.entry
        todo = []
        for op in func.ops:
            if op.name != "aten.linear" or len(op.operands) < 2:
                continue
            name = func.param_name(op.operands[1])
            if name is None or op.operands[0] in op.operands[1:]:
                continue
            layer = layer_name(name)
            if glob_match(layer, self.layers) and not glob_match(layer, self.skip):
                todo.append((op, layer))
        if not todo:
            return False
        require_calibration(ctx, self.name)
        stats = ctx.analyses.get(CalibrationStats, module)
        unused = unused_params(func)
        replaced: dict[str, str] = {}  # float weight -> the param holding its int8 codes
        changed = False
        for op, layer in todo:
            st = stats.get(op.operands[0])
            w = param_tensor(func, ctx.weights, op.operands[1])
            if st is None or not w.is_floating_point():
                ctx.remark(f"outlier-split: skipped layer '{layer}': no calibration statistics "
                           f"for its input" if st is None else f"weight is not float")
                ctx.report.append({"pass": self.name, "layer": layer, "status": "skipped",
                                   "reason": "no calibration statistics" if st is None else "weight not float"})
                continue
            n, k = w.shape
            idx = torch.nonzero(st.absmax > self.threshold).flatten()
            m = idx.numel()
            if m == k:
                ctx.remark(f"outlier-split: kept layer '{layer}' in float: every input channel "
                           f"exceeds the threshold {self.threshold}")
                ctx.report.append({"pass": self.name, "layer": layer, "status": "skipped",
                                   "reason": f"all {k} input channels exceed threshold"})
                ctx.stat(self.name, "linears kept in float (all channels outliers)")
                continue
            wf = w.float()
            rest = wf.clone()
            rest[:, idx] = 0
            q, s = quant.quantize_int8_per_channel(rest)
            tensors = {"qweight": q, "scale": s}
            opname = f"spk.linear_{self.scheme}"
            if m:
                opname = f"spk.linear_{self.scheme}_split"
                tensors["oweight"] = w[:, idx].clone()
                tensors["oindex"] = idx.to(torch.int64)
            args = [add_param(func, ctx.weights, f"{layer}.{suffix}", t) for suffix, t in tensors.items()]
            replaced[func.param_name(op.operands[1])] = func.param_name(args[0])
            new = Op(opname, [op.operands[0], *args, *op.operands[2:]], [op.result.type], loc=op.loc)
            func.body.insert_before(op, new)
            op.result.replace_all_uses_with(new.result)
            func.body.erase(op)
            deq = quant.dequantize_int8(q, s)
            if m:
                deq[:, idx] = wf[:, idx]
            d = (deq.double() - wf.double())
            ctx.report.append({"pass": self.name, "layer": layer, "scheme": f"{self.scheme}+fp-outliers",
                               "status": "quantized", "op": opname, "in_features": k,
                               "out_features": n, "outlier_channels": m,
                               "bits_per_weight": (8.0 * (k - m) + 32.0 * m) / k + 32.0 / k,
                               "weight_rel_err": float((d * d).sum() / (wf.double() ** 2).sum().clamp_min(1e-30))})
            ctx.stat(self.name, "linears split" if m else f"linears {self.scheme} (no outliers)")
            changed = True
        live = {func.param_name(a) for a in func.args if a.uses}
        for name, successor in replaced.items():
            if name not in live and name in ctx.weights:
                ctx.weights.retire(name, successor)  # `lorc` reads the float weight back
        drop_dead_params(func, ctx.weights, unused)
        return changed
