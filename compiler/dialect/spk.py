"""The compressed linears of the `spk` dialect, one record each.

Every op here is `y = x W^T (+ bias)` with `W` stored compressed; its record gives the
operand layout every backend implements, the checks, the decoder (the exact float `W`),
and, where the arithmetic is not "decode, then a float GEMM", the reference semantics.
The numbers live in `compiler.numerics`. Adding a format is one record here (or in any
module that registers it) plus one quantizer function in `passes/quantize.py`'s registry;
calibration, `lorc`, the report and the interpreter derive what they need from the record.

    "spk.linear_w8"(x, qweight i8 [N, K], scale f32 [N], bias?)          int8 weights
    "spk.linear_w8a8"(x, qweight i8 [N, K], scale f32 [N], bias?)        + per-token int8 x
    "spk.linear_w8a8g"(same operands) {group = G}    + int8 x per token and group, asymmetric
    "spk.linear_fp8"(x, qweight f8E4M3FN [N, K], scale f32 [N], bias?)   fp8 e4m3 weights
    "spk.linear_w4g"(x, qweight ui8 [N, K/2], scale f32 [N, K/G], zeros ui8 [N, K/G]?, bias?)
        {group = G, symmetric = true|false}: zeros present iff not symmetric
    "spk.linear_sparse24"(x, values [N, K/2], meta ui8 [N, ceil(K/8)], bias?)   2:4 sparse
    "spk.linear_w8a8_split"(x, qweight i8 [N, K], scale f32 [N], oweight [N, M], oindex i64 [M], bias?)
    "spk.linear_w8_split"(same operands)                                  LLM.int8() split
"""
from __future__ import annotations

from typing import Any

import torch

from ..ir import Op, TensorType
from ..numerics import outliers, quant, sparse
from . import (ACTIVATION_INT8, BIAS, COMPRESSED_LINEAR, FLOAT_TYPES, INPUT, LINEAR, PURE, WEIGHT,
               Attribute, OpDef, Operand, Operands, dim_eq, expect)

_TRAITS = frozenset({PURE, LINEAR, COMPRESSED_LINEAR})
_INT8_ACT_TRAITS = _TRAITS | {ACTIVATION_INT8}
_INPUT = Operand("input", INPUT, dtypes=FLOAT_TYPES)
_BIAS = Operand("bias", BIAS, optional=True, rank=1)


def _result(ops: Operands, n: int) -> list[TensorType]:
    x = ops.type("input")
    return [x.with_shape(x.shape[:-1] + (n,))]


def _check_bias(ops: Operands, n: int) -> None:
    b = ops.type("bias")
    if b is not None:
        expect(dim_eq(b.shape[0], n), f"bias must be [{n}], got {b}")


def _channel_scale(ops: Operands, n: int) -> None:
    s = ops.type("scale")
    expect(dim_eq(s.shape[0], n), f"scale must be tensor<{n}xf32> (one per output channel), got {s}")


def _verify_per_channel(op: Op, ops: Operands):
    """qweight [N, K] with one scale per output channel (int8, fp8)."""
    n, k = ops.type("qweight").shape
    x = ops.type("input")
    expect(dim_eq(x.shape[-1], k), f"input's last dim {x.shape[-1]} != in-features {k}")
    _channel_scale(ops, n)
    _check_bias(ops, n)
    return _result(ops, n)


def _per_channel(name: str, summary: str, qdtype: str, decode, interpret=None,
                 traits: frozenset[str] = _TRAITS, verify=_verify_per_channel,
                 attributes: tuple[Attribute, ...] = ()) -> OpDef:
    return OpDef(name, summary, traits=traits, verify=verify, decode=decode,
                 interpret=interpret, attributes=attributes,
                 operands=(_INPUT, Operand("qweight", WEIGHT, dtypes=(qdtype,), rank=2),
                           Operand("scale", WEIGHT, dtypes=("f32",), rank=1), _BIAS))


def _decode_int8(op: Op, w: list[torch.Tensor]) -> torch.Tensor:
    return quant.dequantize_int8(w[0], w[1])


def _linear_w8a8(op: Op, args: list[Any]) -> torch.Tensor:
    return quant.linear_w8a8(args[0], args[1], args[2], args[3] if len(args) > 3 else None)


def activation_group_error(v: Any) -> str | None:
    """Why `v` is no w8a8g activation group (None: it is one); the verifier and the kernels ask."""
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 16 or v > quant.W8A8G_MAX_GROUP:
        return (f"group must be a multiple of 16 up to {quant.W8A8G_MAX_GROUP} (int32 partial sums "
                f"exact in float32), got {v!r}")
    return None


def _verify_w8a8g(op: Op, ops: Operands):
    group = op.attributes["group"]
    k = ops.type("qweight").shape[1]
    expect(k % group == 0, f"in-features {k} are not divisible by the activation group {group}")
    return _verify_per_channel(op, ops)


def _linear_w8a8g(op: Op, args: list[Any]) -> torch.Tensor:
    return quant.linear_w8a8g(args[0], args[1], args[2], args[3] if len(args) > 3 else None,
                              op.attributes["group"])


def _decode_fp8(op: Op, w: list[torch.Tensor]) -> torch.Tensor:
    return quant.dequantize_fp8(w[0], w[1])


# ------------------------------------------------------------------ group-wise int4


def _even_group(v: Any) -> str | None:
    if isinstance(v, bool) or v <= 0 or v % 2:
        return f"group must be a positive even integer, got {v!r}"
    return None


def _verify_w4g(op: Op, ops: Operands):
    group = op.attributes["group"]
    n, half = ops.type("qweight").shape
    k = 2 * half
    x = ops.type("input")
    expect(dim_eq(x.shape[-1], k), f"input's last dim {x.shape[-1]} != in-features {k} "
                                  f"(qweight packs two int4 per byte)")
    expect(k % group == 0, f"in-features {k} are not divisible by group {group}")
    s = ops.type("scale")
    expect(s.shape == (n, k // group), f"scale must be tensor<{n}x{k // group}xf32>, got {s}")
    z = ops.type("zeros")
    if z is not None:
        expect(z.shape == (n, k // group), f"zeros must be tensor<{n}x{k // group}xui8>, got {z}")
    _check_bias(ops, n)
    return _result(ops, n)


def _decode_w4g(op: Op, w: list[torch.Tensor]) -> torch.Tensor:
    zero = None if op.attributes["symmetric"] else w[2]
    params = quant.GroupParams(w[1].float(), zero, op.attributes["group"])
    return quant.dequantize_int4(quant.unpack_int4(w[0]), params)


# ------------------------------------------------------------------ 2:4 sparse


def _verify_sparse24(op: Op, ops: Operands):
    x, v, m = ops.type("input"), ops.type("values"), ops.type("meta")
    expect(v.is_static, f"values must be a static 2-D [out, in/2] tensor, got {v}")
    expect(v.dtype == x.dtype, f"values ({v.dtype}) must have the input's dtype ({x.dtype})")
    n, half = v.shape
    expect(half % 2 == 0, f"values have {half} columns: in-features {2 * half} not divisible by 4")
    k = 2 * half
    expect(dim_eq(x.shape[-1], k), f"input's last dim {x.shape[-1]} != in-features {k} "
                                  f"(2 x values' columns)")
    expect(m.shape == (n, sparse.meta_cols(k)),
           f"meta must be tensor<{n}x{sparse.meta_cols(k)}xui8> for values {v}, got {m}")
    b = ops.type("bias")
    if b is not None:
        expect(dim_eq(b.shape[0], n) and b.dtype == x.dtype, f"bias must be tensor<{n}x{x.dtype}>, got {b}")
    return _result(ops, n)


def _decode_sparse24(op: Op, w: list[torch.Tensor]) -> torch.Tensor:
    return sparse.decompress_24(w[0], w[1]).float()


def _linear_sparse24(op: Op, args: list[Any]) -> torch.Tensor:
    """Decompress exactly, then a dense linear in the input's dtype ("load compressed,
    compute dense", as the GPU kernel does)."""
    x, values, meta, *bias = args
    return torch.nn.functional.linear(x, sparse.decompress_24(values, meta), bias[0] if bias else None)


# ------------------------------------------------------------------ LLM.int8() split


def _verify_split(op: Op, ops: Operands):
    n, k = ops.type("qweight").shape
    x = ops.type("input")
    expect(dim_eq(x.shape[-1], k), f"input's last dim {x.shape[-1]} != in-features {k}")
    _channel_scale(ops, n)
    ow, oi = ops.type("oweight"), ops.type("oindex")
    expect(dim_eq(ow.shape[0], n) and dim_eq(ow.shape[1], oi.shape[0]),
           f"oweight must be a float tensor [{n}, {oi.shape[0]}] (out, outlier columns), got {ow}")
    _check_bias(ops, n)
    return _result(ops, n)


def _decode_split(op: Op, w: list[torch.Tensor]) -> torch.Tensor:
    return outliers.split_weight(*w)


def _linear_w8a8_split(op: Op, args: list[Any]) -> torch.Tensor:
    return outliers.linear_w8a8_split(*args[:5], args[5] if len(args) > 5 else None)


def _split(name: str, summary: str, interpret=None, traits: frozenset[str] = _TRAITS) -> OpDef:
    return OpDef(name, summary, traits=traits, verify=_verify_split, decode=_decode_split,
                 interpret=interpret,
                 operands=(_INPUT, Operand("qweight", WEIGHT, dtypes=("i8",), rank=2),
                           Operand("scale", WEIGHT, dtypes=("f32",), rank=1),
                           Operand("oweight", WEIGHT, dtypes=FLOAT_TYPES, rank=2),
                           Operand("oindex", WEIGHT, dtypes=("i64",), rank=1), _BIAS))


OPS = (
    _per_channel("spk.linear_w8", "int8 weights, symmetric per output channel.", "i8", _decode_int8),
    _per_channel("spk.linear_w8a8", "int8 weights and dynamic per-token int8 activations; exact "
                 "int32 accumulation.", "i8", _decode_int8, _linear_w8a8, traits=_INT8_ACT_TRAITS),
    _per_channel("spk.linear_w8a8g", "int8 weights and dynamic asymmetric int8 activations per "
                 "token and group of `group` input columns; exact int32 partial sums per group.",
                 "i8", _decode_int8, _linear_w8a8g, traits=_INT8_ACT_TRAITS, verify=_verify_w8a8g,
                 attributes=(Attribute("group", int, check=activation_group_error),)),
    _per_channel("spk.linear_fp8", "fp8 e4m3 weights with a per-output-channel scale.",
                 "f8E4M3FN", _decode_fp8),
    OpDef("spk.linear_w4g", "int4 weights in groups of `group` input columns (two per byte).",
          operands=(_INPUT, Operand("qweight", WEIGHT, dtypes=("ui8",), rank=2),
                    Operand("scale", WEIGHT, dtypes=("f32",), rank=2),
                    Operand("zeros", WEIGHT, dtypes=("ui8",), rank=2, optional=True,
                            present=lambda attrs: attrs["symmetric"] is False),
                    _BIAS),
          attributes=(Attribute("group", int, check=_even_group), Attribute("symmetric", bool)),
          traits=_TRAITS, verify=_verify_w4g, decode=_decode_w4g),
    OpDef("spk.linear_sparse24", "2:4 semi-structured sparse weights (values + 2-bit positions).",
          operands=(Operand("input", INPUT), Operand("values", WEIGHT, dtypes=FLOAT_TYPES, rank=2),
                    Operand("meta", WEIGHT, dtypes=("ui8",), rank=2), _BIAS),
          traits=_TRAITS, verify=_verify_sparse24, decode=_decode_sparse24,
          interpret=_linear_sparse24),
    _split("spk.linear_w8a8_split", "LLM.int8(): outlier input columns in float, the rest w8a8.",
           _linear_w8a8_split, traits=_INT8_ACT_TRAITS),
    _split("spk.linear_w8_split", "Weight-only LLM.int8(): outlier columns kept out of the int8 "
           "weight's row scales."),
)
