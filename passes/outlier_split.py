"""`outlier-split{threshold=6.0 scheme=w8a8|w8}`: LLM.int8() mixed-precision decomposition.

Follows LLM.int8() (Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for
Transformers at Scale", NeurIPS 2022), section 3.2: the input channels (columns of X) whose
magnitude exceeds `threshold` are multiplied in high precision, everything else in int8
with vector-wise quantization (per-token activation scales, per-output-channel weight
scales). Every `aten.linear` with a parameter weight (`layers=` / `skip=` globs as in
`quantize`) becomes

* `spk.linear_w8a8_split(x, qweight, scale, oweight, oindex, bias?)` (`compiler.dialect.spk`) if
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

from dataclasses import dataclass

import torch

from spokeshave.compiler.calibration import ABSMAX, CalibrationStats, require_calibration
from spokeshave.compiler.dialect import bits_per_weight, decode_weight
from spokeshave.compiler.ir import Module
from spokeshave.compiler.numerics import quant
from spokeshave.compiler.passmanager import Pass, PassContext, Range, option
from spokeshave.compiler.report import LayerEntry

from ._compression import (LayerSelection, add_weight_params, layer_name, relative_error,
                           replace_linear, retire_replaced, skip_layer)
from ._weights import param_tensor


@dataclass
class OutlierSplit(LayerSelection, Pass):
    """int8 linears with the outlier input channels kept in float (LLM.int8())."""

    name = "outlier-split"
    needs_unfused = True
    threshold: float = option(6.0, range=Range(0.0, lo_open=True))
    scheme: str = option("w8a8", choices=("w8a8", "w8"))

    def statistics(self) -> frozenset[str]:
        return frozenset({ABSMAX})

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
            if self.selects(layer):
                todo.append((op, layer))
        if not todo:
            return False
        require_calibration(ctx, self.name)
        stats = ctx.analyses.get(CalibrationStats, module)
        replaced: dict[str, str] = {}  # float weight -> the param holding its int8 codes
        changed = False
        for op, layer in todo:
            st = stats.get(op.operands[0])
            w = param_tensor(func, ctx.weights, op.operands[1])
            if st is None or not w.is_floating_point():
                skip_layer(ctx, self.name, op, layer, "no calibration statistics for its input"
                           if st is None else "weight is not float")
                continue
            n, k = w.shape
            idx = torch.nonzero(st.absmax > self.threshold).flatten()
            m = idx.numel()
            if m == k:
                skip_layer(ctx, self.name, op, layer, f"all {k} input channels exceed the "
                           f"threshold {self.threshold}: kept in float",
                           "all channels outliers")
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
            args = add_weight_params(func, ctx, layer, tensors)
            replaced[func.param_name(op.operands[1])] = func.param_name(args[0])
            new = replace_linear(op, opname, args)
            dq = decode_weight(new, list(tensors.values()))
            ctx.report.append(LayerEntry(
                self.name, layer, "quantized", scheme=f"{self.scheme}+fp-outliers", op=opname,
                in_features=k, out_features=n, bits_per_weight=bits_per_weight(new),
                bytes=sum(t.nbytes for t in tensors.values()), weight_rel_err=relative_error(wf, dq),
                details={"outlier_channels": m}))
            ctx.stat(self.name, "linears split" if m else f"linears {self.scheme} (no outliers)")
            changed = True
        retire_replaced(module, ctx, replaced)  # `lorc` reads the float weight back
        return changed
