"""IR, printer, parser and verifier: round-trips, error locations, invariants."""
from __future__ import annotations

import math

import pytest

from spokeshave import ParseError, VerifyError, parse, verify
from spokeshave.compiler.printer import print_module
from spokeshave.compiler.ir import UNIT, Function, Module, Op, TensorType, TypeAttr
from spokeshave.compiler.printer import format_float

FUSED = """func.func @forward(%x: tensor<8x?x384xf32>, %w: tensor<16x384xf32> {spk.param = "l0.w"}) -> (tensor<8x?x16xf32>, i64) {
  %0 = "aten.linear"(%x, %w) : (tensor<8x?x384xf32>, tensor<16x384xf32>) -> tensor<8x?x16xf32>
  %1:2 = "aten.split.Tensor"(%0) {split_size = 8, dim = 2} : (tensor<8x?x16xf32>) -> (tensor<8x?x8xf32>, tensor<8x?x8xf32>)
  %2 = "spk.constant"() {value = 3} : () -> i64
  %3 = "spk.fused"(%1#0, %1#1) ({
  ^bb0(%a: tensor<8x?x8xf32>, %b: tensor<8x?x8xf32>):
    %4 = "aten.add.Tensor"(%a, %b) : (tensor<8x?x8xf32>, tensor<8x?x8xf32>) -> tensor<8x?x8xf32>
    "spk.yield"(%4) : (tensor<8x?x8xf32>) -> ()
  }) : (tensor<8x?x8xf32>, tensor<8x?x8xf32>) -> tensor<8x?x8xf32>
  %5 = "aten.cat"(%3, %1#1) {dim = 2} : (tensor<8x?x8xf32>, tensor<8x?x8xf32>) -> tensor<8x?x16xf32>
  return %5, %2 : tensor<8x?x16xf32>, i64
}
"""


def test_printed_text_is_a_fixed_point():
    m = parse(FUSED)
    assert print_module(m) == FUSED
    verify(m)


def test_attribute_kinds_round_trip():
    text = ('func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n'
            '  %0 = "aten.foo"(%x) {i = -3, f = 1.0e-12, g = 2.5, big = 9223372036854775807, s = "a\\"b\\0A", '
            'l = [1, [2.0, "x"], true], d = bf16, u, inf = 0x7FF0000000000000 : f64, '
            'nan = 0x7FF8000000000000 : f64, "quoted name" = false} : (tensor<2xf32>) -> tensor<2xf32>\n'
            '  return %0 : tensor<2xf32>\n}\n')
    m = parse(text)
    attrs = m.entry.ops[0].attributes
    assert attrs["i"] == -3 and attrs["f"] == 1e-12 and attrs["big"] == 2**63 - 1
    assert attrs["s"] == 'a"b\n' and attrs["l"] == [1, [2.0, "x"], True]
    assert isinstance(attrs["d"], TypeAttr) and str(attrs["d"]) == "bf16"
    assert attrs["u"] is UNIT and math.isinf(attrs["inf"]) and math.isnan(attrs["nan"])
    assert attrs["quoted name"] is False
    assert print_module(m) == text


@pytest.mark.parametrize("x", [0.0, -0.0, 1.0, 1e-5, 1e300, 5e-324, 0.1, -2.5e-7, 123456789.125])
def test_float_literals_are_exact(x):
    s = format_float(x)
    assert "." in s
    assert float(s) == x and math.copysign(1, float(s)) == math.copysign(1, x)


def test_types():
    m = parse('func.func @f(%a: tensor<?x3xbf16>, %b: tensor<i64>, %c: tensor<2xi1>, %d: i64, %e: tensor<4xui8>) '
              '-> tensor<?x3xbf16> {\n  return %a : tensor<?x3xbf16>\n}\n')
    a, b, c, d, e = m.entry.args
    assert a.type == TensorType((None, 3), "bf16") and b.type == TensorType((), "i64")
    assert str(c.type) == "tensor<2xi1>" and str(d.type) == "i64" and str(e.type) == "tensor<4xui8>"


def test_module_wrapper_comments_and_locations_are_accepted():
    m = parse('// a comment\nmodule {\n  func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n'
              '    %y = "aten.relu"(%x) : (tensor<2xf32>) -> tensor<2xf32> loc("model.py":12:4)\n'
              '    return %y : tensor<2xf32>\n  }\n}\n')
    op = m.entry.ops[0]
    assert str(op.loc) == "model.py:12:4"
    assert 'loc("model.py":12:4)' in print_module(m, debug_info=True)


@pytest.mark.parametrize("text,line,col,msg", [
    ('func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = "aten.relu"(%y) : (tensor<2xf32>) -> tensor<2xf32>\n'
     '  return %0 : tensor<2xf32>\n}\n', 2, 20, "use of undefined value '%y'"),
    ('func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = "aten.relu"(%x) : (tensor<3xf32>) -> tensor<2xf32>\n'
     '  return %0 : tensor<2xf32>\n}\n', 2, 25, "operand #0 of 'aten.relu' has type tensor<2xf32>"),
    ('func.func @f(%x: tensor<2xq7>) -> tensor<2xf32> {\n}\n', 1, 18, "unknown element type 'q7'"),
    ('func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = "aten.relu"(%x) {a = 1, a = 2} : '
     '(tensor<2xf32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n', 2, 32, "duplicate attribute 'a'"),
    ('func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = "aten.relu"(%x) : (tensor<2xf32>) -> tensor<2xf32>\n'
     '  %0 = "aten.relu"(%x) : (tensor<2xf32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n', 3, 3,
     "redefinition of SSA value '%0'"),
    ('func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  return %x : tensor<2xf32>\n', 3, 1, "expected '}'"),
    ('func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = "aten.relu"(%x) {s = "abc} : () -> ()\n}\n',
     2, 29, "unterminated string"),
])
def test_parse_errors_point_at_the_problem(text, line, col, msg):
    with pytest.raises(ParseError) as e:
        parse(text, "case.mlir")
    assert e.value.loc.line == line and e.value.loc.col == col, str(e.value)
    assert msg in str(e.value)
    assert str(e.value).startswith(f"case.mlir:{line}:{col}: error: ")
    assert str(e.value).rstrip().endswith("^")


def _linear_module(w_shape=(16, 8)) -> Module:
    f = Function("forward", [TensorType((4, 8), "f32"), TensorType(w_shape, "f32")], ["x", "w"],
                 [{}, {"spk.param": "w"}])
    lin = f.body.append(Op("aten.linear", f.args, [TensorType((4, 16), "f32")]))
    f.result_types = [lin.result.type]
    f.body.append(Op("func.return", [lin.result]))
    return Module([f])


def test_verifier_accepts_well_formed_ir():
    verify(_linear_module())


def test_verifier_checks_declared_op_shapes():
    with pytest.raises(VerifyError, match="in-features"):
        verify(_linear_module((16, 9)), pass_name="my-pass")
    with pytest.raises(VerifyError, match="after pass 'my-pass'.*aten.linear"):
        verify(_linear_module((16, 9)), pass_name="my-pass")


def test_verifier_checks_dominance_and_use_lists():
    m = _linear_module()
    f = m.entry
    lin, ret = f.ops
    f.body.ops = [ret, lin]  # use before definition, and return not last
    with pytest.raises(VerifyError):
        verify(m)
    m = _linear_module()
    lin, ret = m.entry.ops
    lin.result.uses.clear()  # corrupt use list
    with pytest.raises(VerifyError, match="use list"):
        verify(m)


def test_verifier_checks_weights_against_the_store():
    import torch

    from spokeshave.compiler import WeightStore
    m = _linear_module()
    with pytest.raises(VerifyError, match="no tensor in the weight store"):
        verify(m, WeightStore())
    with pytest.raises(VerifyError, match="weight store holds"):
        verify(m, WeightStore({"w": torch.zeros(16, 7)}))
    verify(m, WeightStore({"w": torch.zeros(16, 8)}))


def test_verifier_checks_fused_regions():
    bad = FUSED.replace('"spk.yield"(%4) : (tensor<8x?x8xf32>) -> ()',
                        '"spk.yield"(%a, %b) : (tensor<8x?x8xf32>, tensor<8x?x8xf32>) -> ()')
    with pytest.raises(VerifyError, match="spk.yield gives"):
        verify(parse(bad))


def test_fused_region_is_isolated_from_above():
    bad = FUSED.replace('"aten.add.Tensor"(%a, %b)', '"aten.add.Tensor"(%a, %1#1)')
    with pytest.raises(VerifyError, match="does not dominate"):
        verify(parse(bad))


def test_value_rewiring_keeps_use_lists():
    m = parse(FUSED)
    f = m.entry
    split = f.ops[1]
    assert len(split.results[1].uses) == 2  # the fused op and the cat
    split.results[1].replace_all_uses_with(split.results[0])
    assert not split.results[1].uses and len(split.results[0].uses) == 3
    verify(m)


def test_clone_is_structurally_equal():
    m = parse(FUSED)
    assert print_module(m.clone()) == FUSED


def test_weight_store_saves_tied_and_viewed_tensors(tmp_path):
    """safetensors refuses tensors sharing memory; a tied embedding/LM head (SmolLM2) and
    views of one buffer must still save, each name with its own data, and load back equal."""
    import torch

    from spokeshave.compiler import WeightStore
    emb = torch.randn(10, 4)
    buf = torch.arange(12.0)
    store = WeightStore({"embed.weight": emb, "lm_head.weight": emb, "a": buf[:6], "b": buf[6:]})
    path = str(tmp_path / "w.safetensors")
    store.save(path)
    back = WeightStore.load(path)
    assert sorted(back) == sorted(store)
    for name, t in store.items():
        assert torch.equal(back[name], t)
