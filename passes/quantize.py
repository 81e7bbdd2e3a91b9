"""`quantize{scheme=w8|w8a8|w8a8g|w4g|fp8 group=128 symmetric=true method=rtn|gptq layers=.. skip=..}`

Replaces every `aten.linear` whose weight is a parameter with a quantized linear
(`spk.linear_w8`, `spk.linear_w8a8`, `spk.linear_w8a8g`, `spk.linear_w4g`, `spk.linear_fp8`; records in
`compiler.dialect.spk`, numbers in `compiler.numerics.quant`) whose weights are new
parameters in the weight store, one per weight operand of the op: `<layer>.qweight`,
`<layer>.scale` and, for asymmetric int4, `<layer>.zeros`. A layer is named by its weight's
`spk.param` without `.weight`; `layers=` and `skip=` select layers (`_compression`). A
layer whose in-features the group does not divide is skipped and reported (remark,
statistic and report entry), never crashed on.

A scheme is a `Format` in `FORMATS`: the op that stores it plus one quantizer function.
Adding a format is an op record and a `register_format` call; the pass, calibration,
`lorc`, the report and the interpreter need no other edit.

Methods:
* `rtn`: round to nearest, scales from the weight's range (absmax; min/max when
  asymmetric). Schemes follow LLM.int8() / ZeroQuant's per-channel int8 weights,
  dynamic per-token int8 activations (ZeroQuant, Yao et al. 2022; `w8a8g`: asymmetric, in
  groups of `group` columns, as fine-grained activation quantization does), GPTQ/AWQ-style
  group-wise int4, and per-channel fp8 e4m3 (Micikevicius et al. 2022).
* `gptq`: GPTQ (Frantar et al. 2022): second-order error compensation with the input
  covariance from the calibration batches, through the solver shared with SparseGPT
  (`passes._obs_solver`). Int8/fp8 scales come from the original weight, as GPTQ does for
  per-channel grids; int4 group scales are computed from the error-compensated weights
  when the group is reached (GPTQ's `groupsize` behaviour), or, with `act-order`, from the
  original weights up front (GPTQ's "static groups", which keeps groups contiguous in the
  stored format). Departure: the Hessian of every layer comes from one run of the
  unquantized model, not from inputs propagated through already-quantized layers.

Each layer's report entry has the weight error and, when the pipeline collected the input
covariance (`method=gptq` declares it), the layer's output error over the calibration
tokens, `tr(dW H dW^T) / tr(W H W^T)`. `w8a8`'s entry measures only its weight error
(activation rounding happens at run time).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from spokeshave.compiler.calibration import HESSIAN, require_calibration
from spokeshave.compiler.dialect import bits_per_weight, decode_weight
from spokeshave.compiler.errors import PipelineError
from spokeshave.compiler.ir import Function, Module, Op, TensorType, Value
from spokeshave.compiler.numerics import quant
from spokeshave.compiler.passmanager import Pass, PassContext, option
from spokeshave.compiler.registry import Registry
from spokeshave.compiler.report import LayerEntry

from ._compression import (LayerSelection, add_weight_params, calibration_stats, layer_name,
                           percdamp_option, relative_error, replace_linear, retire_replaced,
                           skip_layer)
from ._obs_solver import obs_solve

METHODS = ("rtn", "gptq")
GROUPS = (16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class QuantOptions:
    """What a quantizer function may read of the pass's options."""

    group: int
    symmetric: bool
    percdamp: float
    act_order: bool


@dataclass
class Quantized:
    """A quantizer's output: the weight-operand tensors of the op, in the op's operand order
    (each becomes the parameter `<layer>.<key>`), and the op's attributes."""

    tensors: dict[str, torch.Tensor]
    attrs: dict


# (float32 weight [N, K], options, input covariance [K, K] or None for round-to-nearest)
Quantizer = Callable[[torch.Tensor, QuantOptions, "torch.Tensor | None"], Quantized]


@dataclass(frozen=True)
class Format:
    """A quantization scheme: the op that stores it and the function that encodes a weight.
    `gptq`: the quantizer accepts an input covariance. `misfit(N, K, options)` says why a
    weight shape cannot take the format (None: it can)."""

    scheme: str
    op: str
    quantize: Quantizer
    gptq: bool = False
    misfit: Callable[[int, int, QuantOptions], str | None] | None = None


FORMATS: Registry[Format] = Registry("quantization scheme")


def register_format(fmt: Format, registry: Registry[Format] | None = None) -> Format:
    return (FORMATS if registry is None else registry).register(fmt.scheme, fmt)


# ------------------------------------------------------------------ the built-in formats


def _per_channel(channel_scale: Callable, round_to_grid: Callable, codes: Callable) -> Quantizer:
    """A quantizer for a grid with one scale per output row (int8, fp8): round to nearest,
    or, given a covariance, GPTQ with the scales of the original weight (as GPTQ does for
    per-channel grids)."""
    def quantize(w: torch.Tensor, opts: QuantOptions, H: torch.Tensor | None) -> Quantized:
        w = w.float()
        scale = channel_scale(w)
        if H is None:
            return Quantized({"qweight": codes(w, scale), "scale": scale}, {})
        scale64 = scale.double()
        res = obs_solve(w, H, lambda j, state: round_to_grid(state.w, scale64),
                        percdamp=opts.percdamp, act_order=opts.act_order)
        return Quantized({"qweight": codes(res.Q, scale64), "scale": scale}, {})
    return quantize


_int8 = _per_channel(quant.int8_channel_scale, quant.int8_round, quant.int8_codes)
_fp8 = _per_channel(quant.fp8_channel_scale, quant.fp8_round, quant.fp8_codes)


def _w4g_tensors(codes: torch.Tensor, params: quant.GroupParams, symmetric: bool) -> Quantized:
    tensors = {"qweight": quant.pack_int4(codes), "scale": params.scale.float().contiguous()}
    if not symmetric:
        tensors["zeros"] = params.zero.contiguous()
    return Quantized(tensors, {"group": params.group, "symmetric": symmetric})


def _w4g(w: torch.Tensor, opts: QuantOptions, H: torch.Tensor | None) -> Quantized:
    group, symmetric = opts.group, opts.symmetric
    if H is None:
        params = quant.int4_group_params(w, group, symmetric)
        return _w4g_tensors(quant.int4_codes(w, params), params, symmetric)
    n, k = w.shape
    codes = torch.zeros(n, k, dtype=torch.uint8)
    scale = torch.zeros(n, k // group, dtype=torch.float32)
    zero = torch.zeros(n, k // group, dtype=torch.uint8)
    if opts.act_order:  # static groups: parameters from the original weights
        p = quant.int4_group_params(w, group, symmetric)
        scale.copy_(p.scale)
        if p.zero is not None:
            zero.copy_(p.zero)

    def round_int4(j, state):
        col = state.col(j)
        g = col // group
        if not opts.act_order and j % group == 0:  # without act_order, j == col
            p = quant.int4_group_params(state.block(j, group).float(), group, symmetric)
            scale[:, g] = p.scale[:, 0]
            if p.zero is not None:
                zero[:, g] = p.zero[:, 0]
        s = scale[:, g].double()
        z = zero[:, g].double() if not symmetric else torch.full_like(s, float(quant.INT4_SYMMETRIC_ZERO))
        u, dq = quant.int4_round_column(state.w, s, z)
        codes[:, col] = u.to(torch.uint8)
        return dq

    obs_solve(w, H, round_int4, percdamp=opts.percdamp, act_order=opts.act_order, align=group)
    return _w4g_tensors(codes, quant.GroupParams(scale, None if symmetric else zero, group), symmetric)


def _group_misfit(n: int, k: int, opts: QuantOptions) -> str | None:
    return f"in-features {k} not divisible by group {opts.group}" if k % opts.group else None


def _w8a8g(w: torch.Tensor, opts: QuantOptions, H: torch.Tensor | None) -> Quantized:
    """int8 weights as w8a8's; the activation group is the op's attribute."""
    return Quantized(_int8(w, opts, H).tensors, {"group": opts.group})


def _activation_group_misfit(n: int, k: int, opts: QuantOptions) -> str | None:
    if opts.group > quant.W8A8G_MAX_GROUP:
        return f"activation group {opts.group} is over {quant.W8A8G_MAX_GROUP}"
    return _group_misfit(n, k, opts)


BUILTIN_FORMATS = (
    Format("w8", "spk.linear_w8", _int8, gptq=True),
    Format("w8a8", "spk.linear_w8a8", _int8, gptq=True),
    Format("w8a8g", "spk.linear_w8a8g", _w8a8g, gptq=True, misfit=_activation_group_misfit),
    Format("w4g", "spk.linear_w4g", _w4g, gptq=True, misfit=_group_misfit),
    Format("fp8", "spk.linear_fp8", _fp8, gptq=True),
)


def load_builtin_formats(registry: Registry[Format] | None = None) -> None:
    for fmt in BUILTIN_FORMATS:
        register_format(fmt, registry)


# ------------------------------------------------------------------ the pass


@dataclass
class Quantize(LayerSelection, Pass):
    """Quantize the weights (and for w8a8 the activations) of linear layers."""

    name = "quantize"
    needs_unfused = True
    scheme: str = option("w8", choices=lambda: tuple(FORMATS))
    group: int = option(128, choices=GROUPS, help="w4g weight group / w8a8g activation group size")
    symmetric: bool = True
    method: str = option("rtn", choices=METHODS)
    act_order: bool = False
    percdamp: float = percdamp_option()

    def validate(self) -> None:
        super().validate()
        if self.method == "gptq" and not FORMATS[self.scheme].gptq:
            raise PipelineError(f"pass 'quantize': scheme '{self.scheme}' has no GPTQ variant; "
                                f"use method=rtn")

    def statistics(self) -> frozenset[str]:
        return frozenset({HESSIAN}) if self.method == "gptq" else frozenset()

    def run(self, module: Module, ctx: PassContext) -> bool:
        if self.method == "gptq":
            require_calibration(ctx, "quantize{method=gptq}")
        stats = calibration_stats(module, ctx, frozenset({HESSIAN}))
        fmt = FORMATS[self.scheme]
        opts = QuantOptions(self.group, self.symmetric, self.percdamp, self.act_order)
        changed = False
        replaced: dict[str, str] = {}  # float weight -> the param holding its quantized codes
        for f in module.functions:
            done: dict[str, tuple[list[Value], dict]] = {}  # shared weight: params, attrs, once
            linears = [o for o in f.body.ops if o.name == "aten.linear"]
            for i, op in enumerate(linears):
                wname = f.param_name(op.operands[1])
                new = self._rewrite(f, op, ctx, fmt, opts, stats if f is module.entry else None, done)
                if new is not None:
                    replaced.setdefault(wname, f.param_name(done[wname][0][0]))
                    # at once, not after the loop: a weight nothing reads any more is freed
                    # before the next one is quantized, so a layer's float weights and codes
                    # are never all held together (the streaming compile's peak). A weight
                    # several linears share goes when the rewrite of its last reader runs.
                    retire_replaced(module, ctx, {wname: replaced[wname]})
                    changed = True
                ctx.step(self.name, i + 1, len(linears), wname or "linear")
        return changed

    def _rewrite(self, f: Function, op: Op, ctx: PassContext, fmt: Format, opts: QuantOptions,
                 stats, done: dict[str, tuple[list[Value], dict]]) -> Op | None:
        wname = f.param_name(op.operands[1])
        if wname is None:
            return None  # a computed weight: nothing to quantize at compile time
        layer = layer_name(wname)
        if not self.selects(layer):
            return None
        wt: TensorType = op.operands[1].type
        n, k = wt.shape
        if not wt.torch_dtype.is_floating_point:
            skip_layer(ctx, self.name, op, layer, f"weight dtype {wt.dtype} is not a float type",
                       "weight not float", scheme=self.scheme)
            return None
        misfit = fmt.misfit(n, k, opts) if fmt.misfit is not None else None
        if misfit is not None:
            skip_layer(ctx, self.name, op, layer, misfit, "shape does not fit the scheme",
                       scheme=self.scheme, in_features=k, out_features=n)
            return None
        s = stats.get(op.operands[0]) if stats is not None else None
        H = s.hessian if s is not None and s.hessian_sum is not None else None
        if self.method == "gptq" and H is None:
            skip_layer(ctx, self.name, op, layer, "no calibration statistics for its input",
                       "no calibration statistics", scheme=self.scheme)
            return None
        w = ctx.weights[wname].float()
        if wname not in done:
            q = fmt.quantize(w, opts, H if self.method == "gptq" else None)
            done[wname] = add_weight_params(f, ctx, layer, q.tensors), q.attrs
        params, attrs = done[wname]
        new = replace_linear(op, fmt.op, params, attrs)
        dq = decode_weight(new, [ctx.weights[f.param_name(v)] for v in params])
        ctx.report.append(LayerEntry(
            self.name, layer, "quantized", scheme=self.scheme, method=self.method, op=fmt.op,
            in_features=k, out_features=n, bits_per_weight=bits_per_weight(new),
            bytes=sum(ctx.weights[f.param_name(v)].nbytes for v in params),
            weight_rel_err=relative_error(w, dq),
            rel_err=relative_error(w, dq, H) if H is not None else None))
        ctx.stat(self.name, f"linears quantized ({self.scheme})")
        return new
