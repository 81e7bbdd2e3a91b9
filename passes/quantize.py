"""`quantize{scheme=w8|w8a8|w4g|fp8 group=128 symmetric=true method=rtn|gptq layers=.. skip=..}`

Replaces every `aten.linear` whose weight is a parameter with a quantized linear
(`spk.linear_w8`, `spk.linear_w8a8`, `spk.linear_w4g`, `spk.linear_fp8`; formats in
`compiler.quant`) whose weights are new parameters in the weight store:
`<layer>.qweight` (int8 / packed int4 / fp8), `<layer>.scale` and, for asymmetric int4,
`<layer>.zeros`. A layer is named by its weight's `spk.param` without `.weight`
(`encoder.layer.0.attention.self.query`); `layers=` and `skip=` are fnmatch globs, several
separated by `|`. A layer whose in-features the group does not divide is skipped and
reported (remark, statistic and report entry), never crashed on.

Methods:
* `rtn`: round to nearest, scales from the weight's range (absmax; min/max when
  asymmetric). Schemes follow LLM.int8() / ZeroQuant's per-channel int8 weights,
  dynamic per-token int8 activations (ZeroQuant, Yao et al. 2022), GPTQ/AWQ-style
  group-wise int4, and per-channel fp8 e4m3 (Micikevicius et al. 2022).
* `gptq`: GPTQ (Frantar et al. 2022): second-order error compensation with the input
  covariance from the calibration batches, through the solver shared with SparseGPT
  (`passes._obs_solver`). Int8/fp8 scales come from the original weight, as GPTQ does for
  per-channel grids; int4 group scales are computed from the error-compensated weights
  when the group is reached (GPTQ's `groupsize` behaviour), or, with `act-order`, from the
  original weights up front (GPTQ's "static groups", which keeps groups contiguous in the
  stored format). Departure: the Hessian of every layer comes from one run of the
  unquantized model, not from inputs propagated through already-quantized layers.

With calibration data present, each layer's report entry has `rel_err`: the relative
error of the layer's output over the calibration tokens, `tr(dW H dW^T) / tr(W H W^T)`.
`w8a8`'s entry measures only its weight error (activation rounding happens at run time).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch

from spokeshave.compiler import quant
from spokeshave.compiler.calibration import CalibrationStats, require_calibration
from spokeshave.compiler.errors import PipelineError
from spokeshave.compiler.ir import Function, Module, Op, TensorType, Value
from spokeshave.compiler.passmanager import Pass, PassContext, register_pass

from ._obs_solver import obs_solve

SCHEMES = ("w8", "w8a8", "w4g", "fp8")
METHODS = ("rtn", "gptq")
GROUPS = (16, 32, 64, 128, 256, 512, 1024)
OP_OF_SCHEME = {"w8": "spk.linear_w8", "w8a8": "spk.linear_w8a8", "w4g": "spk.linear_w4g",
                "fp8": "spk.linear_fp8"}


def layer_name(param: str) -> str:
    """`encoder.layer.0.attention.self.query.weight` -> `encoder.layer.0.attention.self.query`."""
    return param[:-len(".weight")] if param.endswith(".weight") else param


def glob_match(name: str, globs: str) -> bool:
    return any(fnmatch.fnmatchcase(name, g.strip()) for g in globs.split("|") if g.strip())


@dataclass
class Quantized:
    """A quantized weight: tensors to store (suffix -> tensor), attributes, dequantized W."""

    tensors: dict[str, torch.Tensor]
    attrs: dict
    dequant: torch.Tensor  # float32 [N, K], what the kernel multiplies by


# ------------------------------------------------------------------ the numerics per scheme


def _rtn(scheme: str, w: torch.Tensor, group: int, symmetric: bool) -> Quantized:
    if scheme in ("w8", "w8a8"):
        q, s = quant.quantize_int8_per_channel(w)
        return Quantized({"qweight": q, "scale": s}, {}, quant.dequantize_int8(q, s))
    if scheme == "fp8":
        q, s = quant.quantize_fp8_per_channel(w)
        return Quantized({"qweight": q, "scale": s}, {}, quant.dequantize_fp8(q, s))
    params = quant.int4_group_params(w, group, symmetric)
    return _pack_w4(quant.int4_codes(w, params), params, symmetric)


def _pack_w4(codes: torch.Tensor, params: quant.GroupParams, symmetric: bool) -> Quantized:
    tensors = {"qweight": quant.pack_int4(codes), "scale": params.scale.float().contiguous()}
    if not symmetric:
        tensors["zeros"] = params.zero.contiguous()
    return Quantized(tensors, {"group": params.group, "symmetric": symmetric},
                     quant.dequantize_int4(codes, params))


def _gptq(scheme: str, w: torch.Tensor, H: torch.Tensor, group: int, symmetric: bool,
          percdamp: float, act_order: bool) -> Quantized:
    """GPTQ through the shared OBS solver; the rounding callback records integer codes."""
    w = w.float()
    n, k = w.shape
    if scheme in ("w8", "w8a8", "fp8"):
        scale64 = (quant.int8_channel_scale(w) if scheme != "fp8" else quant.fp8_channel_scale(w)).double()

        def round_int8(j, state):
            return torch.round(state.w / scale64).clamp(-quant.INT8_MAX, quant.INT8_MAX) * scale64

        def round_fp8(j, state):
            return quant.fp8_round(state.w, scale64)

        res = obs_solve(w, H, round_fp8 if scheme == "fp8" else round_int8,
                        percdamp=percdamp, act_order=act_order)
        s32 = scale64.float()
        if scheme == "fp8":
            q = (res.Q / scale64[:, None]).float().clamp(-quant.FP8_MAX, quant.FP8_MAX).to(torch.float8_e4m3fn)
            return Quantized({"qweight": q, "scale": s32}, {}, quant.dequantize_fp8(q, s32))
        q = torch.round(res.Q / scale64[:, None]).clamp(-quant.INT8_MAX, quant.INT8_MAX).to(torch.int8)
        return Quantized({"qweight": q, "scale": s32}, {}, quant.dequantize_int8(q, s32))

    n_groups = k // group
    codes = torch.zeros(n, k, dtype=torch.uint8)
    scale = torch.zeros(n, n_groups, dtype=torch.float32)
    zero = torch.zeros(n, n_groups, dtype=torch.uint8)
    if act_order:  # static groups: parameters from the original weights
        p = quant.int4_group_params(w, group, symmetric)
        scale.copy_(p.scale)
        if p.zero is not None:
            zero.copy_(p.zero)

    def round_int4(j, state):
        col = state.col(j)
        g = col // group
        if not act_order and j % group == 0:  # without act_order, j == col
            p = quant.int4_group_params(state.block(j, group).float(), group, symmetric)
            scale[:, g] = p.scale[:, 0]
            if p.zero is not None:
                zero[:, g] = p.zero[:, 0]
        s = scale[:, g].double()
        z = zero[:, g].double() if not symmetric else torch.full_like(s, 8.0)
        u = torch.round(state.w / s + z).clamp(0, quant.INT4_LEVELS)
        codes[:, col] = u.to(torch.uint8)
        return (u - z) * s

    obs_solve(w, H, round_int4, percdamp=percdamp, act_order=act_order, align=group)
    params = quant.GroupParams(scale, None if symmetric else zero, group)
    return _pack_w4(codes, params, symmetric)


def _rel_err(w: torch.Tensor, dq: torch.Tensor, H: torch.Tensor | None) -> float:
    d = (dq.double() - w.double())
    if H is None:
        return float((d * d).sum() / (w.double() ** 2).sum().clamp_min(1e-30))
    w = w.double()
    num = ((d @ H) * d).sum()
    den = ((w @ H) * w).sum()
    return float(num / den.clamp_min(1e-30))


# ------------------------------------------------------------------ the pass


@register_pass
@dataclass
class Quantize(Pass):
    """Quantize the weights (and for w8a8 the activations) of linear layers."""

    name = "quantize"
    scheme: str = field(default="w8", metadata={"choices": SCHEMES})
    group: int = field(default=128, metadata={"choices": GROUPS, "help": "w4g group size"})
    symmetric: bool = True
    method: str = field(default="rtn", metadata={"choices": METHODS})
    layers: str = "*"
    skip: str = ""
    act_order: bool = False
    percdamp: float = 0.01

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.percdamp <= 1.0:
            raise PipelineError(f"pass 'quantize': option 'percdamp' must be in (0, 1]; "
                                f"got {self.percdamp!r}")

    def run(self, module: Module, ctx: PassContext) -> bool:
        if self.method == "gptq":
            require_calibration(ctx, "quantize{method=gptq}")
        stats = ctx.analyses.get(CalibrationStats, module) if ctx.calibration else None
        changed = False
        replaced: dict[str, str] = {}  # float weight -> the param holding its quantized codes
        for f in module.functions:
            done: dict[str, tuple[list[Value], Quantized]] = {}
            for op in [o for o in f.body.ops if o.name == "aten.linear"]:
                wname = f.param_name(op.operands[1])
                if self._rewrite(f, op, ctx, stats if f is module.entry else None, done):
                    f.body.erase(op)
                    replaced.setdefault(wname, f.param_name(done[wname][0][0]))
                    changed = True
        for f in module.functions:  # drop float weights nothing reads any more
            for arg in list(f.args):
                name = f.param_name(arg)
                if name is not None and not arg.uses and name in replaced:
                    f.erase_arg(arg)
        live = {n for f in module.functions for n in f.params()}
        for name, successor in replaced.items():
            if name not in live and name in ctx.weights:
                ctx.weights.retire(name, successor)  # `lorc` reads the float weight back
        return changed

    def _skip(self, ctx: PassContext, layer: str, key: str, reason: str, **extra) -> bool:
        ctx.remark(f"quantize: skipped layer '{layer}': {reason}")
        ctx.stat(self.name, f"linears skipped ({key})")
        ctx.report.append({"pass": self.name, "layer": layer, "scheme": self.scheme,
                           "status": "skipped", "reason": reason, **extra})
        return False

    def _rewrite(self, f: Function, op: Op, ctx: PassContext, stats, done: dict) -> bool:
        wname = f.param_name(op.operands[1])
        if wname is None:
            return False  # a computed weight: nothing to quantize at compile time
        layer = layer_name(wname)
        if not glob_match(layer, self.layers) or glob_match(layer, self.skip):
            return False
        wt: TensorType = op.operands[1].type
        n, k = wt.shape
        if not wt.torch_dtype.is_floating_point:
            return self._skip(ctx, layer, "weight not float",
                              f"weight dtype {wt.dtype} is not a float type")
        if self.scheme == "w4g" and k % self.group:
            return self._skip(ctx, layer, "group does not divide in-features",
                              f"in-features {k} not divisible by group {self.group}",
                              in_features=k, out_features=n)
        H = None
        if stats is not None:
            s = stats.get(op.operands[0])
            H = s.hessian if s is not None and s.hessian_sum is not None else None
        if self.method == "gptq" and H is None:
            return self._skip(ctx, layer, "no calibration statistics",
                              "no calibration statistics for its input")
        w = ctx.weights[wname].float()
        if wname in done:
            new_args, q = done[wname]
        else:
            if self.method == "gptq":
                q = _gptq(self.scheme, w, H, self.group, self.symmetric, self.percdamp, self.act_order)
            else:
                q = _rtn(self.scheme, w, self.group, self.symmetric)
            new_args = []
            for suffix, t in q.tensors.items():
                pname = ctx.weights.fresh_name(f"{layer}.{suffix}")
                ctx.weights[pname] = t
                new_args.append(f.add_param(pname, TensorType.of(t)))
            done[wname] = (new_args, q)
        opname = OP_OF_SCHEME[self.scheme]
        operands = [op.operands[0], *new_args, *op.operands[2:]]
        new = Op(opname, operands, [op.result.type], dict(q.attrs), loc=op.loc)
        op.parent.insert_before(op, new)
        op.result.replace_all_uses_with(new.result)
        bits = quant.bits_per_weight(opname, k, self.group, self.symmetric)
        entry = {"pass": self.name, "layer": layer, "scheme": self.scheme, "method": self.method,
                 "status": "quantized", "op": opname, "in_features": k, "out_features": n,
                 "bits_per_weight": bits,
                 "bytes": sum(t.numel() * t.element_size() for t in q.tensors.values()),
                 "weight_rel_err": _rel_err(w, q.dequant, None)}
        if H is not None:
            entry["rel_err"] = _rel_err(w, q.dequant, H)
        ctx.report.append(entry)
        ctx.stat(self.name, f"linears quantized ({self.scheme})")
        return True
