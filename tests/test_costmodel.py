"""The cost-model protocol (`compiler.cost`) and the roofline model (`costmodel.roofline`):
flop rules, group boundaries, fusion and compression effects, host calibration, and the
pass manager's analysis. Every machine constant is explicit where the test compares
costs, so nothing depends on how fast this machine is."""
from __future__ import annotations

import math

import pytest

from spokeshave import SpokeshaveError, parse, verify
from spokeshave.compiler.cost import Candidate, Cost, CostModel, CostModelAnalysis, boundary
from spokeshave.compiler.passmanager import PassContext
from spokeshave.compiler.target import Target
from spokeshave.costmodel.roofline import (RooflineCostModel, measure_host, op_flops,
                                           table_constants, value_bytes)

CPU = Target.parse("cpu:x86_64:avx2,fma:cores=4")
PEAK, BANDWIDTH = 1e12, 1e11  # FLOP/s, bytes/s: a 10 flop/byte ridge point


def model(overhead_s: float = 2e-6) -> RooflineCostModel:
    return RooflineCostModel(peak_flops=PEAK, bandwidth=BANDWIDTH, overhead_s=overhead_s)


def linear_gelu(tokens: str = "8x128", k: int = 384, n: int = 1536, dtype: str = "f32"):
    x, y = f"tensor<{tokens}x{k}x{dtype}>", f"tensor<{tokens}x{n}x{dtype}>"
    w, b = f"tensor<{n}x{k}x{dtype}>", f"tensor<{n}x{dtype}>"
    m = parse(f"""func.func @forward(%x: {x}, %w: {w} {{spk.param = "w"}}, %b: {b} {{spk.param = "b"}}) -> {y} {{
  %0 = "aten.linear"(%x, %w, %b) : ({x}, {w}, {b}) -> {y}
  %1 = "aten.gelu"(%0) : ({y}) -> {y}
  return %1 : {y}
}}
""")
    verify(m)
    return m


def ops(module):
    return [op for op in module.entry.ops if op.name != "func.return"]


# ------------------------------------------------------------------ protocol types


def test_roofline_satisfies_the_protocol():
    m = RooflineCostModel(peak_flops=PEAK, bandwidth=BANDWIDTH)
    assert isinstance(m, CostModel)
    assert m.name == "roofline"
    assert not isinstance(object(), CostModel)


def test_candidate_of_sorts_config_and_stays_hashable():
    linear, gelu = ops(linear_gelu())
    a = Candidate.of([linear, gelu], tile_n=64, tile_m=32, order=[1, 0])
    b = Candidate.of((linear, gelu), order=(1, 0), tile_m=32, tile_n=64)
    assert a == b and hash(a) == hash(b)
    assert a.config == (("order", (1, 0)), ("tile_m", 32), ("tile_n", 64))
    assert a.config_dict() == {"order": (1, 0), "tile_m": 32, "tile_n": 64}
    assert Candidate.of(linear).ops == (linear,) and Candidate.of(linear).dim_hint == 128
    assert Candidate.of(linear, dim_hint=16).dim_hint == 16
    assert Candidate.of(linear) != Candidate.of(linear, dim_hint=16)


@pytest.mark.parametrize("bad, message", [
    (lambda ops: Candidate.of([]), "one or more ops"),
    (lambda ops: Candidate.of(["aten.linear"]), "one or more ops"),
    (lambda ops: Candidate.of([ops[0], ops[0]]), "lists an op twice"),
    (lambda ops: Candidate.of(ops, dim_hint=0), "dim_hint must be a positive integer"),
])
def test_candidate_errors(bad, message):
    with pytest.raises(SpokeshaveError, match=message):
        bad(ops(linear_gelu()))


def test_cost_arithmetic():
    mem = Cost(0.25, flops=10.0, bytes=1000.0, bound="memory")  # binary fractions: exact sums
    comp = Cost(0.5, flops=1e6, bytes=10.0, bound="compute")
    total = mem + comp
    assert total == Cost(0.75, 1e6 + 10.0, 1010.0, "compute")  # bound of the slower
    assert sum([mem, comp]) == total
    assert mem + Cost.zero() == mem
    assert mem < comp and comp > mem and mem <= mem and comp >= mem
    assert min([comp, mem]) is mem
    with pytest.raises(SpokeshaveError, match="memory, compute, overhead"):
        Cost(1.0, 0.0, 0.0, "latency")


# ------------------------------------------------------------------ boundary


def test_boundary_of_a_fused_group_skips_the_intermediate():
    m = linear_gelu()
    linear, gelu = ops(m)
    x, w, b = m.entry.args
    inputs, outputs = boundary([linear, gelu])
    assert inputs == [x, w, b]
    assert outputs == [gelu.result]  # read by the return
    assert boundary([linear]) == ([x, w, b], [linear.result])
    assert boundary([gelu]) == ([linear.result], [gelu.result])


SHARED = """func.func @forward(%x: tensor<64x32xf32>, %w: tensor<16x32xf32> {spk.param = "w"}) -> tensor<64x16xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<64x32xf32>, tensor<16x32xf32>) -> tensor<64x16xf32>
  %1 = "aten.gelu"(%0) : (tensor<64x16xf32>) -> tensor<64x16xf32>
  %2 = "aten.neg"(%1) : (tensor<64x16xf32>) -> tensor<64x16xf32>
  %3 = "aten.add.Tensor"(%0, %1) : (tensor<64x16xf32>, tensor<64x16xf32>) -> tensor<64x16xf32>
  return %3 : tensor<64x16xf32>
}
"""


def test_a_value_read_outside_the_group_stays_an_output():
    m = parse(SHARED)
    verify(m)
    linear, gelu, neg, add = ops(m)
    _, outputs = boundary([linear, gelu])
    assert outputs == [linear.result, gelu.result]  # both read by the add outside
    assert boundary([linear, gelu, neg, add])[1] == [add.result]  # only the returned value
    assert neg.result not in boundary([gelu, neg])[1]  # nobody reads it: internal
    # The return in a group moves nothing; what it reads is written out.
    assert boundary([add, m.entry.return_op]) == ([linear.result, gelu.result], [add.result])


# ------------------------------------------------------------------ flop rules


def test_linear_flops_are_2mnk():
    linear, gelu = ops(linear_gelu())
    assert op_flops(linear) == 2 * (8 * 128) * 1536 * 384
    assert model().predict(Candidate.of(linear), CPU).flops == 2 * (8 * 128) * 1536 * 384
    assert op_flops(gelu) == 8 * 8 * 128 * 1536  # transcendental: 8 per element


GEMMS = """func.func @forward(%a: tensor<4x64x32xf32>, %b: tensor<4x32x16xf32>, %c: tensor<64x32xf32>, %d: tensor<32x16xf32>, %q: tensor<2x4x64x32xf32>, %k: tensor<2x4x48x32xf32>, %v: tensor<2x4x48x32xf32>, %s: tensor<8x128x128xf32>) -> tensor<4x64x16xf32> {
  %0 = "aten.matmul"(%a, %b) : (tensor<4x64x32xf32>, tensor<4x32x16xf32>) -> tensor<4x64x16xf32>
  %1 = "aten.bmm"(%a, %b) : (tensor<4x64x32xf32>, tensor<4x32x16xf32>) -> tensor<4x64x16xf32>
  %2 = "aten.mm"(%c, %d) : (tensor<64x32xf32>, tensor<32x16xf32>) -> tensor<64x16xf32>
  %3 = "aten.scaled_dot_product_attention"(%q, %k, %v) : (tensor<2x4x64x32xf32>, tensor<2x4x48x32xf32>, tensor<2x4x48x32xf32>) -> tensor<2x4x64x32xf32>
  %4 = "aten.softmax.int"(%s) {dim = -1} : (tensor<8x128x128xf32>) -> tensor<8x128x128xf32>
  %5 = "aten.add.Tensor"(%0, %1) : (tensor<4x64x16xf32>, tensor<4x64x16xf32>) -> tensor<4x64x16xf32>
  %6 = "aten.view"(%5) {size = [4, 1024]} : (tensor<4x64x16xf32>) -> tensor<4x1024xf32>
  %7 = "aten.transpose.int"(%2) {dim0 = 0, dim1 = 1} : (tensor<64x16xf32>) -> tensor<16x64xf32>
  %8 = "aten.sym_size.int"(%s) {dim = 0} : (tensor<8x128x128xf32>) -> i64
  %9 = "aten.mean.dim"(%s) {dim = [-1]} : (tensor<8x128x128xf32>) -> tensor<8x128xf32>
  return %5 : tensor<4x64x16xf32>
}
"""


def test_flop_rules():
    m = parse(GEMMS)
    matmul, bmm, mm, sdpa, softmax, add, view, transpose, sym_size, mean = ops(m)
    assert op_flops(matmul) == op_flops(bmm) == 2 * 4 * 64 * 16 * 32
    assert op_flops(mm) == 2 * 64 * 16 * 32
    batch_heads, lq, lk, d = 2 * 4, 64, 48, 32
    assert op_flops(sdpa) == 4 * batch_heads * lq * lk * d + 5 * batch_heads * lq * lk
    assert op_flops(softmax) == op_flops(mean) == 5 * 8 * 128 * 128  # per input element
    assert op_flops(add) == 4 * 64 * 16
    assert op_flops(view) == op_flops(transpose) == 0
    assert op_flops(sym_size) == 0  # no tensor result


def test_views_and_scalars_alone_cost_nothing():
    m = parse(GEMMS)
    *_, add, view, transpose, sym_size, _mean = ops(m)
    for op in (view, transpose, sym_size):
        assert model().predict(Candidate.of(op), CPU) == Cost.zero()
    # Inside a group a view moves nothing either: the group writes the viewed result once.
    fused = model().predict(Candidate.of([add, view]), CPU)
    alone = model().predict(Candidate.of(add), CPU)
    assert fused.bytes == alone.bytes == 3 * 4 * 64 * 16 * 4
    assert fused.flops == alone.flops


CLASSES = """func.func @forward(%x: tensor<8x1x64xf32>) -> tensor<f32> {
  %0 = "aten.sum"(%x) : (tensor<8x1x64xf32>) -> tensor<f32>
  %1 = "aten.squeeze"(%x) : (tensor<8x1x64xf32>) -> tensor<8x64xf32>
  %2 = "aten.cumsum"(%x) {dim = -1} : (tensor<8x1x64xf32>) -> tensor<8x1x64xf32>
  %3 = "test.reindex"(%x) : (tensor<8x1x64xf32>) -> tensor<8x64xf32>
  return %0 : tensor<f32>
}
"""


def test_op_classes_come_from_the_dialect_traits():
    """Views and reductions are the ops whose records say so; an ATen overload without a
    record is classed like the recorded overloads of its op; anything else is elementwise."""
    from spokeshave.compiler.dialect import OPS, PURE, VIEW, OpDef, Operand, declare

    total, squeeze, cumsum, reindex = ops(parse(CLASSES))
    numel = 8 * 64
    assert op_flops(total) == 5 * numel  # like aten.sum.dim_IntList: per input element
    assert op_flops(squeeze) == 0 and model().predict(Candidate.of(squeeze), CPU) == Cost.zero()
    assert op_flops(cumsum) == numel  # no recorded overload of aten.cumsum: elementwise rate
    assert op_flops(reindex) == numel
    with OPS.scoped():
        declare(OpDef("test.reindex", "A toy view.", traits=frozenset({PURE, VIEW}),
                      operands=(Operand("input"),), strict_attributes=False))
        assert op_flops(reindex) == 0
    assert op_flops(reindex) == numel


FUSED = """func.func @forward(%x: tensor<64x32xf32>, %w: tensor<16x32xf32> {spk.param = "w"}) -> tensor<64x16xf32> {
  %0 = "spk.fused"(%x, %w) ({
  ^bb0(%a: tensor<64x32xf32>, %b: tensor<16x32xf32>):
    %1 = "aten.linear"(%a, %b) : (tensor<64x32xf32>, tensor<16x32xf32>) -> tensor<64x16xf32>
    %2 = "aten.gelu"(%1) : (tensor<64x16xf32>) -> tensor<64x16xf32>
    "spk.yield"(%2) : (tensor<64x16xf32>) -> ()
  }) {kind = "gemm"} : (tensor<64x32xf32>, tensor<16x32xf32>) -> tensor<64x16xf32>
  %3 = "aten.neg"(%0) : (tensor<64x16xf32>) -> tensor<64x16xf32>
  return %3 : tensor<64x16xf32>
}
"""


def test_a_fused_op_costs_its_boundary_and_its_body_flops():
    """A `spk.fused` op (what `fuse` writes) as a candidate, alone or with an op after it:
    its operands and results are what it moves, its body's flops are what it computes."""
    m = parse(FUSED)
    verify(m)
    fused, neg = ops(m)
    linear, gelu, _ = fused.regions[0].block.ops
    flops = op_flops(linear) + op_flops(gelu)
    assert op_flops(fused) == flops
    alone = model().predict(Candidate.of(fused), CPU)
    assert alone.flops == flops
    assert alone.bytes == (64 * 32 + 16 * 32 + 64 * 16) * 4  # x, w in; the gelu out
    inner = model().predict(Candidate.of([linear, gelu]), CPU)
    assert inner.bytes == alone.bytes and inner.flops == alone.flops
    both = model().predict(Candidate.of([fused, neg]), CPU)
    assert both.bytes == alone.bytes  # the fused result is read only by the neg: internal
    assert both < alone + model().predict(Candidate.of(neg), CPU)


# ------------------------------------------------------------------ predictions


def test_bigger_shapes_cost_more():
    small = model().predict(Candidate.of(ops(linear_gelu("8x128"))[0]), CPU)
    big = model().predict(Candidate.of(ops(linear_gelu("8x256"))[0]), CPU)
    assert big.flops == 2 * small.flops
    assert big.bytes > small.bytes
    assert big > small


ADD = """func.func @forward(%x: tensor<8x128x384xf32>, %y: tensor<8x128x384xf32>) -> tensor<8x128x384xf32> {
  %0 = "aten.add.Tensor"(%x, %y) : (tensor<8x128x384xf32>, tensor<8x128x384xf32>) -> tensor<8x128x384xf32>
  return %0 : tensor<8x128x384xf32>
}
"""


def test_tiny_elementwise_is_memory_bound_big_linear_compute_bound():
    add = ops(parse(ADD))[0]
    tiny = model().predict(Candidate.of(add), CPU)
    numel = 8 * 128 * 384
    assert tiny.bound == "memory"
    assert tiny.bytes == 3 * numel * 4 and tiny.flops == numel
    assert tiny.seconds == pytest.approx(tiny.bytes / BANDWIDTH + 2e-6)
    big = model().predict(Candidate.of(ops(linear_gelu("2048", k=2048, n=2048))[0]), CPU)
    assert big.bound == "compute"
    assert big.seconds == pytest.approx(2 * 2048 ** 3 / PEAK + 2e-6)
    # With a large enough launch overhead, a small kernel is overhead-bound.
    assert model(overhead_s=1e-3).predict(Candidate.of(add), CPU).bound == "overhead"


def test_fusing_linear_and_gelu_skips_the_intermediate():
    linear, gelu = ops(linear_gelu())
    m = model()
    fused = m.predict(Candidate.of([linear, gelu]), CPU)
    apart = m.predict(Candidate.of(linear), CPU) + m.predict(Candidate.of(gelu), CPU)
    intermediate = value_bytes(linear.result)
    assert intermediate == 8 * 128 * 1536 * 4
    assert fused.bytes == apart.bytes - 2 * intermediate  # neither written nor read back
    assert fused.flops == apart.flops
    assert fused < apart


W8 = """func.func @forward(%x: tensor<{t}x384xf32>, %w: tensor<1536x384xf32> {{spk.param = "w"}}, %q: tensor<1536x384xi8> {{spk.param = "q"}}, %s: tensor<1536xf32> {{spk.param = "s"}}, %p: tensor<1536x192xui8> {{spk.param = "p"}}, %g: tensor<1536x3xf32> {{spk.param = "g"}}, %b: tensor<1536xf32> {{spk.param = "b"}}) -> (tensor<{t}x1536xf32>, tensor<{t}x1536xf32>, tensor<{t}x1536xf32>) {{
  %0 = "aten.linear"(%x, %w, %b) : (tensor<{t}x384xf32>, tensor<1536x384xf32>, tensor<1536xf32>) -> tensor<{t}x1536xf32>
  %1 = "spk.linear_w8"(%x, %q, %s, %b) : (tensor<{t}x384xf32>, tensor<1536x384xi8>, tensor<1536xf32>, tensor<1536xf32>) -> tensor<{t}x1536xf32>
  %2 = "spk.linear_w4g"(%x, %p, %g, %b) {{group = 128, symmetric = true}} : (tensor<{t}x384xf32>, tensor<1536x192xui8>, tensor<1536x3xf32>, tensor<1536xf32>) -> tensor<{t}x1536xf32>
  return %0, %1, %2 : tensor<{t}x1536xf32>, tensor<{t}x1536xf32>, tensor<{t}x1536xf32>
}}
"""


def test_compressed_weights_move_fewer_bytes():
    m = parse(W8.format(t="8x128"))
    verify(m)
    dense, w8, w4 = (model().predict(Candidate.of(op), CPU) for op in ops(m))
    n, k = 1536, 384
    # fp32 weight: 4 bytes each; int8: 1 byte + one f32 scale per row; int4: half a byte +
    # one f32 scale per row and group of 128.
    assert dense.bytes - w8.bytes == n * k * 4 - (n * k + n * 4)
    assert w8.bytes - w4.bytes == (n * k + n * 4) - (n * k // 2 + n * (k // 128) * 4)
    assert dense.flops == w8.flops == w4.flops == 2 * 8 * 128 * n * k


def test_int4_pays_off_when_memory_bound_only():
    # One token: moving the weight is everything, so the smaller weight is faster.
    decode = parse(W8.format(t="1"))
    dense, w8, w4 = (model().predict(Candidate.of(op), CPU) for op in ops(decode))
    assert dense.bound == "memory" and w4 < w8 < dense
    # Many tokens: compute-bound, and this model charges nothing for dequantization.
    prefill = parse(W8.format(t="64x512"))
    dense, w8, w4 = (model().predict(Candidate.of(op), CPU) for op in ops(prefill))
    assert dense.bound == w4.bound == "compute"
    assert w4.seconds == pytest.approx(dense.seconds)


DYNAMIC = """func.func @forward(%x: tensor<?x384xf32>, %w: tensor<1536x384xf32> {spk.param = "w"}) -> tensor<?x1536xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<?x384xf32>, tensor<1536x384xf32>) -> tensor<?x1536xf32>
  return %0 : tensor<?x1536xf32>
}
"""


def test_dynamic_dims_take_the_hint():
    linear = ops(parse(DYNAMIC))[0]
    assert op_flops(linear, dim_hint=64) == 2 * 64 * 1536 * 384
    c64 = model().predict(Candidate.of(linear, dim_hint=64), CPU)
    c128 = model().predict(Candidate.of(linear), CPU)  # default hint 128
    assert c64.flops == 2 * 64 * 1536 * 384 and c128.flops == 2 * c64.flops
    weight = 1536 * 384 * 4
    assert c64.bytes == weight + 64 * (384 + 1536) * 4
    assert c128.bytes == weight + 128 * (384 + 1536) * 4


# ------------------------------------------------------------------ machine constants


def test_measure_host_is_plausible_and_cached():
    peak, bandwidth = first = measure_host()
    assert math.isfinite(peak) and math.isfinite(bandwidth)
    assert 1e8 <= peak <= 1e14
    assert 1e8 <= bandwidth <= 1e13
    assert measure_host() is first  # measured once per process
    assert RooflineCostModel().machine(Target.host()) == first


def test_other_targets_use_the_table_not_the_host():
    measured = measure_host()
    m = RooflineCostModel()
    narrow = Target.parse("cpu:x86_64:avx2,fma:cores=1")
    wide = Target.parse("cpu:x86_64:avx2,fma,avx512f:cores=8")
    gpu = Target.parse("cuda:sm_90:sms=132")
    assert m.machine(narrow) == table_constants(narrow) != measured
    assert m.machine(wide)[0] > m.machine(narrow)[0]
    assert m.machine(wide)[1] >= m.machine(narrow)[1]
    assert m.machine(gpu)[0] > m.machine(wide)[0] and m.machine(gpu)[1] > m.machine(wide)[1]
    # A GPU given without sms= is the typical part of its generation.
    assert m.machine(Target.parse("cuda:sm_90")) == m.machine(gpu)
    # Explicit constants win for every target; one given alone replaces only itself.
    assert model().machine(gpu) == (PEAK, BANDWIDTH)
    assert RooflineCostModel(peak_flops=PEAK).machine(narrow) == (PEAK, table_constants(narrow)[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"peak_flops": 0}, "peak_flops must be a positive number"),
    ({"bandwidth": float("nan")}, "bandwidth must be a positive number"),
    ({"overhead_s": -1.0}, "overhead_s must be a non-negative number"),
])
def test_roofline_rejects_bad_constants(kwargs, message):
    with pytest.raises(SpokeshaveError, match=message):
        RooflineCostModel(**kwargs)


# ------------------------------------------------------------------ the analysis


class CountingModel:
    """A CostModel that records what it was asked."""

    name = "counting"

    def __init__(self):
        self.calls: list[tuple[Candidate, Target]] = []

    def predict(self, candidate: Candidate, target: Target) -> Cost:
        self.calls.append((candidate, target))
        return Cost(float(len(candidate.ops)), 0.0, 0.0, "overhead")


def test_analysis_memoises_per_ops_and_config():
    module = linear_gelu()
    linear, gelu = ops(module)
    ctx = PassContext()
    ctx.cost_model = CountingModel()
    ctx.target = CPU
    analysis = ctx.analyses.get(CostModelAnalysis, module)
    assert ctx.analyses.get(CostModelAnalysis, module) is analysis
    assert analysis.model is ctx.cost_model and analysis.target is CPU
    first = analysis.cost([linear, gelu], tile=64)
    assert analysis.cost((linear, gelu), tile=64) is first
    assert len(ctx.cost_model.calls) == 1
    analysis.cost([linear, gelu], tile=128)
    analysis.cost(linear)
    analysis.cost(linear, dim_hint=32)
    assert len(ctx.cost_model.calls) == 4
    assert all(target is CPU for _, target in ctx.cost_model.calls)
    analysis.forget()
    analysis.cost([linear, gelu], tile=64)
    assert len(ctx.cost_model.calls) == 5


def test_analysis_with_the_roofline_on_the_host():
    module = linear_gelu()
    ctx = PassContext()
    ctx.cost_model = model()
    ctx.target = Target.host()
    analysis = CostModelAnalysis(module, ctx)
    linear, gelu = ops(module)
    assert analysis.cost([linear, gelu]) < analysis.cost(linear) + analysis.cost(gelu)


def test_analysis_falls_back_to_the_host_target():
    ctx = PassContext()
    ctx.cost_model = CountingModel()
    ctx.target = "cpu"  # not a Target
    assert CostModelAnalysis(linear_gelu(), ctx).target == Target.host()


def test_analysis_without_a_cost_model_says_so():
    ctx = PassContext()
    ctx.cost_model = None
    with pytest.raises(SpokeshaveError, match="no cost model was configured"):
        CostModelAnalysis(linear_gelu(), ctx)
    ctx.cost_model = object()
    with pytest.raises(SpokeshaveError, match="must have a name and predict"):
        CostModelAnalysis(linear_gelu(), ctx)


def test_analysis_rejects_a_model_that_returns_no_cost():
    class Broken:
        name = "broken"

        def predict(self, candidate, target):
            return 1.0

    ctx = PassContext()
    ctx.cost_model = Broken()
    analysis = CostModelAnalysis(linear_gelu(), ctx)
    with pytest.raises(SpokeshaveError, match="cost model 'broken' returned float, not a Cost"):
        analysis.cost(ops(linear_gelu())[0])


# ------------------------------------------------------------------ layering
# (the import directions of every module are tests/test_conventions.py's)


def test_roofline_builds_on_the_core_protocol():
    from spokeshave.compiler import rewrite
    from spokeshave.costmodel import roofline

    assert roofline.boundary is rewrite.boundary  # one definition of what a group moves
