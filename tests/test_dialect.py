"""The op records: a new compressed format is one op record plus one quantizer function.

`spk.linear_toy` below (6-bit codes, one scale per output channel) is declared in this file
only, inside `OPS.scoped()` / `FORMATS.scoped()`. With no other edit anywhere: the verifier
checks it from its record, `quantize{scheme=toy}` writes it, calibration records its input's
covariance (it has the `linear` trait), `lorc` corrects it through its decoder, the report
gives its stored bits per weight, and the interpreter (the reference backend) runs it as
"decode, then a float GEMM". After the test it is gone from both registries.
"""
from __future__ import annotations

import pytest
import torch

import spokeshave
from spokeshave.compiler.calibration import CalibrationStats
from spokeshave.compiler.dialect import (BIAS, COMPRESSED_LINEAR, INPUT, LINEAR, OPS, PURE, WEIGHT,
                                         OpDef, Operand, bits_per_weight, decode_weight, dim_eq,
                                         expect, ops_with, weight_operands)
from spokeshave.compiler.passmanager import PassContext
from spokeshave.passes.quantize import FORMATS, Format, Quantized, register_format

TOY_LEVELS = 31  # 6-bit signed codes


def _verify_toy(op, ops):
    n, k = ops.type("qweight").shape
    expect(dim_eq(ops.type("input").shape[-1], k), "input's last dim does not match qweight")
    expect(ops.type("scale").shape == (n,), f"scale must be [{n}]")
    x = ops.type("input")
    return [x.with_shape(x.shape[:-1] + (n,))]


TOY = OpDef(
    "spk.linear_toy", "6-bit weights with one scale per output channel (a test format).",
    operands=(Operand("input", INPUT), Operand("qweight", WEIGHT, dtypes=("i8",), rank=2),
              Operand("scale", WEIGHT, dtypes=("f32",), rank=1), Operand("bias", BIAS, optional=True)),
    traits=frozenset({PURE, LINEAR, COMPRESSED_LINEAR}), verify=_verify_toy,
    decode=lambda op, w: w[0].float() * w[1][:, None])


def toy_quantize(w: torch.Tensor, opts, hessian) -> Quantized:
    scale = (w.abs().amax(dim=1) / TOY_LEVELS).clamp_min(1e-12)
    q = torch.round(w / scale[:, None]).clamp(-TOY_LEVELS, TOY_LEVELS).to(torch.int8)
    return Quantized({"qweight": q, "scale": scale.float()}, {})


@pytest.fixture
def toy_format():
    with OPS.scoped(), FORMATS.scoped():
        OPS.register(TOY.name, TOY)
        register_format(Format("toy", TOY.name, toy_quantize))
        yield
    assert TOY.name not in OPS and "toy" not in FORMATS


def test_a_format_declared_here_compiles_end_to_end(toy_format, mlp_case):
    m, x, ref, cal = mlp_case
    cm = spokeshave.compile(m, (x,), pipeline="quantize{scheme=toy}", calibration=cal)
    ops = [op for op in cm.module.entry.ops if op.name == "spk.linear_toy"]
    assert len(ops) == 2 and "spk.linear_toy" in ops_with(COMPRESSED_LINEAR)
    # the interpreter runs it: decode, then a float GEMM
    err = float(((cm(x) - ref) ** 2).sum() / (ref ** 2).sum())
    w8 = spokeshave.compile(m, (x,), pipeline="quantize{scheme=w8}")
    w8_err = float(((w8(x) - ref) ** 2).sum() / (ref ** 2).sum())
    assert w8_err < err < 1e-2, (w8_err, err)  # 6 bits: worse than 8, still close
    # the report: stored bits from the record, errors from its decoder
    entries = cm.report.by_layer("quantize")
    up = entries["up"]
    assert up.op == "spk.linear_toy" and up.bits_per_weight == pytest.approx(8 + 32 / 128)
    assert up.bits_per_weight == bits_per_weight(ops[0]) and 0 < up.weight_rel_err < 1e-2
    assert cm.report.end_to_end.min_cosine > 0.99


def test_calibration_and_lorc_handle_the_new_format(toy_format, mlp_case):
    m, x, ref, cal = mlp_case
    plain = spokeshave.compile(m, (x,), pipeline="quantize{scheme=toy}", calibration=cal)
    ctx = PassContext(weights=plain.weights, calibration=[list(c) for c in cal])
    stats = CalibrationStats(plain.module, ctx)  # everything: no pipeline narrowed it
    for op in [o for o in plain.module.entry.ops if o.name == "spk.linear_toy"]:
        s = stats.linear_input(op)
        assert s.hessian.shape == (op.operands[0].type.shape[-1],) * 2
    both = spokeshave.compile(m, (x,), calibration=cal,
                              pipeline="quantize{scheme=toy},lorc{rank=16 whiten=true}")
    lorc = both.report.by_layer("lorc")
    assert set(lorc) == {"up", "down"}
    for e in lorc.values():
        assert e.status == "compensated" and e.rel_err < e.details["rel_err_before"]
    err = lambda c: float(((c(x) - ref) ** 2).sum() / (ref ** 2).sum())  # noqa: E731
    assert err(both) < err(plain)


def test_the_record_verifies_the_new_op(toy_format):
    bad = spokeshave.parse(
        'func.func @f(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, '
        '%s: tensor<8xf32> {spk.param = "s"}) -> tensor<2x4xf32> {\n'
        '  %0 = "spk.linear_toy"(%x, %q, %s) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<8xf32>) -> tensor<2x4xf32>\n'
        '  return %0 : tensor<2x4xf32>\n}\n')
    with pytest.raises(spokeshave.VerifyError, match=r'op "spk.linear_toy": scale must be \[4\]'):
        spokeshave.verify(bad)
    op = bad.entry.ops[0]
    assert [v.name_hint for v in weight_operands(op)] == ["q", "s"]
    w = decode_weight(op, [torch.ones(4, 8, dtype=torch.int8), torch.full((4,), 0.5)])
    assert torch.equal(w, torch.full((4, 8), 0.5))


def test_outside_the_scope_the_format_is_unknown():
    assert "spk.linear_toy" not in OPS
    with pytest.raises(spokeshave.PipelineError, match="option 'scheme' must be one of w8, w8a8, w8a8g, w4g, fp8"):
        spokeshave.parse_pipeline("quantize{scheme=toy}")
