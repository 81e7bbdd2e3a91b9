"""Fusion regions are first class: the rewriter outlines ops into a `spk.fused` region and
inlines it back, remapping values; the verifier checks region rules from op records; the
interpreter and calibration see inside regions; compression passes refuse to run after
fusion, naming the ordering."""
from __future__ import annotations

import pytest
import torch

import spokeshave
from spokeshave.compiler.calibration import CalibrationStats
from spokeshave.compiler.interpreter import Interpreter
from spokeshave.compiler.passmanager import PassContext, PassManager
from spokeshave.compiler.rewrite import Rewriter
from spokeshave.compiler.weights import complete_weights

TEXT = """func.func @forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "up.weight"}, %b: tensor<16xf32> {spk.param = "up.bias"}, %w2: tensor<8x16xf32> {spk.param = "down.weight"}) -> (tensor<4x8xf32>, tensor<4x16xf32>) {
  %0 = "aten.linear"(%x, %w, %b) : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %1 = "aten.gelu"(%0) : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %2 = "aten.neg"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %3 = "aten.linear"(%1, %w2) : (tensor<4x16xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
  %4 = "aten.add.Tensor"(%3, %2) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %4, %0 : tensor<4x8xf32>, tensor<4x16xf32>
}
"""


def _module():
    m = spokeshave.parse(TEXT)
    return m, complete_weights(m, None)


def _run(m, weights, x):
    return Interpreter(m, weights)(x)


def test_outline_linear_gelu_keeps_a_value_used_outside_as_an_output():
    m, w = _module()
    x = torch.randn(4, 8)
    want = _run(m, w, x)
    f = m.entry
    lin, gelu = f.ops[0], f.ops[1]
    fused = Rewriter().outline([lin, gelu])
    spokeshave.verify(m, w)
    text = str(m)
    assert text.count('"spk.fused"') == 1
    # the linear's result is also returned: it leaves the group as a second result
    assert len(fused.results) == 2 and [r.type.shape for r in fused.results] == [(4, 16), (4, 16)]
    body = fused.regions[0].block
    assert [op.name for op in body.ops] == ["aten.linear", "aten.gelu", "spk.yield"]
    assert [a.type for a in body.args] == [v.type for v in fused.operands] and len(body.args) == 3
    got = _run(spokeshave.parse(text), w, x)  # it also round-trips through text
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_outline_moves_dependent_ops_after_the_group_and_inline_undoes_it():
    m, w = _module()
    x = torch.randn(4, 8)
    want = _run(m, w, x)
    f = m.entry
    before = str(m)
    # gelu .. add with the unrelated neg in between: neg feeds add, so it stays before
    group = [f.ops[1], f.ops[3], f.ops[4]]
    fused = Rewriter().outline(group)
    spokeshave.verify(m, w)
    names = [op.name for op in f.ops]
    assert names.index("aten.neg") < names.index("spk.fused")
    assert all(torch.equal(a, b) for a, b in zip(_run(m, w, x), want))
    Rewriter().inline(fused)
    spokeshave.verify(m, w)
    assert "spk.fused" not in str(m)
    assert sorted(op.name for op in f.ops) == sorted(op.name for op in spokeshave.parse(before).entry.ops)
    assert all(torch.equal(a, b) for a, b in zip(_run(m, w, x), want))


def test_a_group_that_would_create_a_cycle_is_refused():
    t = """func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %1 = "aten.neg"(%0) : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "aten.add.Tensor"(%0, %1) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return %2 : tensor<4xf32>
}
"""
    m = spokeshave.parse(t)
    f = m.entry
    before = str(m)
    with pytest.raises(ValueError, match="not convex"):
        Rewriter().outline([f.ops[0], f.ops[2]])  # relu -> neg (outside) -> add: a diamond
    assert str(m) == before


def test_calibration_sees_inside_regions_and_compression_refuses_after_fusion():
    m, w = _module()
    f = m.entry
    Rewriter().outline([f.ops[0], f.ops[1]])
    cal = [[torch.randn(4, 8)] for _ in range(2)]
    ctx = PassContext(weights=w, calibration=cal)
    stats = ctx.analyses.get(CalibrationStats, m)
    inner_linear = next(op for op in m.walk() if op.name == "aten.linear" and op.parent is not f.body)
    s = stats.linear_input(inner_linear)  # a block argument of the region
    assert s.count == 8 and s.hessian.shape == (8, 8)
    with pytest.raises(spokeshave.PipelineError, match=r"pass 'quantize' must run before 'fuse'.*"
                                                       r"put the compression passes before 'fuse'"):
        PassManager.parse("quantize").run(m, ctx)
    PassManager.parse("cse,dce").run(m, ctx)  # structural passes are fine
