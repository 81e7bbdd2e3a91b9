"""Row kernels of the generated-code backends (CPU C++, Triton under its interpreter)
against the reference backend, op by op and fused.

Tolerance (float paths): max |got - want| <= 1e-5 * max |want| (+1e-6 absolute for
near-zero outputs). The kernels reorder sums (vectorised or tree reductions) and use their
own exp/erf/tanh (`backends/cpu/prelude.py`: ~1 ulp, erf < 3.7e-7 absolute; Triton's
`tl.exp`/`tl.erf` and `rows.HELPERS`), so bit equality is not the contract; 1e-5 of the
output's scale is.
"""
from __future__ import annotations

import pytest
import torch
from spokeshave.backends.cpu import toolchain
from spokeshave.backends.rowops import EXPRESSIONS, REDUCTIONS
from spokeshave.compiler.weights import WeightStore

import spokeshave

POSITIVE = {"aten.log", "aten.sqrt", "aten.rsqrt", "aten.pow.Tensor_Scalar", "aten.reciprocal"}
T = "tensor<?x?x24xf32>"


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    err = (got - want).abs().max().item()
    assert err <= 1e-5 * want.abs().max().item() + 1e-6, err


def _unary_or_binary(name: str) -> str:
    attrs = {"aten.add.Scalar": "{other = 0.75}", "aten.sub.Scalar": "{other = 2.5, alpha = 2}",
             "aten.mul.Scalar": "{other = -1.5}", "aten.div.Scalar": "{other = 3.0}",
             "aten.pow.Tensor_Scalar": "{exponent = 1.5}", "aten.gelu": "",
             "aten.add.Tensor": "{alpha = 0.5}"}.get(name, "")
    binary = name.endswith(".Tensor") or name in ("aten.maximum", "aten.minimum")
    if binary:
        return (f'  %0 = "{name}"(%x, %y) {attrs} : ({T}, tensor<?x1x24xf32>) -> {T}\n')
    return f'  %0 = "{name}"(%x) {attrs} : ({T}) -> {T}\n'


def _run_both(text: str, inputs: list[torch.Tensor], weights: dict | None = None, backend="cpu"):
    module = spokeshave.parse(text)
    cm = spokeshave.compile_module(module, WeightStore(dict(weights or {})), pipeline="dce",
                                   backend=backend)
    ref = spokeshave.compile_module(spokeshave.parse(text), WeightStore(dict(weights or {})),
                                    pipeline="dce", backend="reference")
    assert not cm.executable.failed, cm.executable.failed
    return cm, cm(*inputs), ref(*inputs)


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_pointwise_op(name, generated_backend):
    text = (f"func.func @f(%x: {T}, %y: tensor<?x1x24xf32>) -> {T} {{\n" + _unary_or_binary(name)
            + f"  return %0 : {T}\n}}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 24, generator=g) * 3
    y = torch.randn(3, 1, 24, generator=g) + 0.5
    if name in POSITIVE:
        x = x.abs() + 0.1
    cm, got, want = _run_both(text, [x, y], backend=generated_backend)
    kinds = [s.kind for p in cm.executable.plans.values() for s in p.steps]
    assert kinds == ["rows"], kinds
    _close(got, want)


REDUCTION_CASES = {
    "aten.layer_norm": ('"aten.layer_norm"(%x, %g, %b) {normalized_shape = [24], eps = 1.0e-5}',
                        f"({T}, tensor<24xf32>, tensor<24xf32>) -> {T}", T),
    "aten.rms_norm": ('"aten.rms_norm"(%x, %g) {normalized_shape = [24]}', f"({T}, tensor<24xf32>) -> {T}", T),
    "aten.softmax.int": ('"aten.softmax.int"(%x) {dim = -1}', f"({T}) -> {T}", T),
    "aten._softmax": ('"aten._softmax"(%x) {dim = 2, half_to_float = false}', f"({T}) -> {T}", T),
    "aten.mean.dim": ('"aten.mean.dim"(%x) {dim = [-1], keepdim = true}', f"({T}) -> tensor<?x?x1xf32>",
                      "tensor<?x?x1xf32>"),
    "aten.sum.dim_IntList": ('"aten.sum.dim_IntList"(%x) {dim = [2], keepdim = true}',
                             f"({T}) -> tensor<?x?x1xf32>", "tensor<?x?x1xf32>"),
    "aten.amax": ('"aten.amax"(%x) {dim = [-1], keepdim = true}', f"({T}) -> tensor<?x?x1xf32>",
                  "tensor<?x?x1xf32>"),
}


@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_op(name, generated_backend):
    op, sig, ret = REDUCTION_CASES[name]
    text = (f'func.func @f(%x: {T}, %g: tensor<24xf32> {{spk.param = "g"}}, %b: tensor<24xf32> '
            f'{{spk.param = "b"}}) -> {ret} {{\n  %0 = {op} : {sig}\n  return %0 : {ret}\n}}')
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 24, generator=g) * 4 + 1
    w = {"g": torch.rand(24, generator=g) + 0.5, "b": torch.randn(24, generator=g)}
    cm, got, want = _run_both(text, [x], w, generated_backend)
    _close(got, want)


FUSED = f"""
func.func @f(%x: {T}, %r: {T}, %g: tensor<24xf32> {{spk.param = "g"}}, %b: tensor<24xf32> {{spk.param = "b"}}) -> ({T}, {T}, tensor<?x?x1xf32>) {{
  %0:3 = "spk.fused"(%x, %r, %g, %b) ({{
  ^bb0(%a0: {T}, %a1: {T}, %a2: tensor<24xf32>, %a3: tensor<24xf32>):
    %1 = "aten.add.Tensor"(%a0, %a1) : ({T}, {T}) -> {T}
    %2 = "aten.layer_norm"(%1, %a2, %a3) {{normalized_shape = [24], eps = 1.0e-12}} : ({T}, tensor<24xf32>, tensor<24xf32>) -> {T}
    %3 = "aten.gelu"(%2) {{approximate = "tanh"}} : ({T}) -> {T}
    %4 = "aten.softmax.int"(%3) {{dim = -1}} : ({T}) -> {T}
    %5 = "aten.mean.dim"(%4) {{dim = [-1], keepdim = true}} : ({T}) -> tensor<?x?x1xf32>
    %6 = "aten.sub.Tensor"(%4, %5) : ({T}, tensor<?x?x1xf32>) -> {T}
    %7 = "aten.rms_norm"(%6, %a2) {{normalized_shape = [24], eps = 1.0e-6}} : ({T}, tensor<24xf32>) -> {T}
    %8 = "aten.silu"(%7) : ({T}) -> {T}
    "spk.yield"(%8, %2, %5) : ({T}, {T}, tensor<?x?x1xf32>) -> ()
  }}) {{kind = "rows"}} : ({T}, {T}, tensor<24xf32>, tensor<24xf32>) -> ({T}, {T}, tensor<?x?x1xf32>)
  return %0#0, %0#1, %0#2 : {T}, {T}, tensor<?x?x1xf32>
}}"""


def _fused_weights():
    g = torch.Generator().manual_seed(2)
    return {"g": torch.rand(24, generator=g) + 0.5, "b": torch.randn(24, generator=g)}


def test_fused_group_is_one_kernel_with_several_outputs(generated_backend):
    x, r = torch.randn(2, 9, 24), torch.randn(2, 9, 24)
    cm, got, want = _run_both(FUSED, [x, r], _fused_weights(), generated_backend)
    (plan,) = cm.executable.plans.values()
    assert [s.kind for s in plan.steps] == ["rows"]
    src = plan.steps[0].source
    assert plan.steps[0].symbol in cm.executable.sources[plan.unit or "kernels.py"]
    assert "erf" not in src and "spk_tanh" in src
    if generated_backend == "cpu":
        assert src.count("#pragma omp parallel") == 1
    else:  # one row per program: LayerNorm, softmax, mean and RMSNorm reduce the loaded row
        assert src.count("@triton.jit") == 1 and src.count("tl.load(a0") == 1
    for a, b in zip(got, want):
        _close(a, b)


def test_one_compile_serves_every_shape(monkeypatch):
    builds = []
    real = toolchain.build_library
    monkeypatch.setattr(toolchain, "build_library", lambda *a, **k: builds.append(1) or real(*a, **k))
    module = spokeshave.parse(FUSED)
    cm = spokeshave.compile_module(module, WeightStore(_fused_weights()), pipeline="dce", backend="cpu")
    ref = spokeshave.compile_module(spokeshave.parse(FUSED), WeightStore(_fused_weights()), pipeline="dce",
                                    backend="reference")
    for shape in [(1, 1, 24), (3, 17, 24), (8, 128, 24), (2, 5, 24)]:
        x, r = torch.randn(shape), torch.randn(shape)
        for a, b in zip(cm(x, r), ref(x, r)):
            _close(a, b)
    assert len(builds) == 1
    (plan,) = cm.executable.plans.values()
    assert plan.fallbacks == 0


def test_runtime_broadcast_takes_the_reference_path(generated_backend):
    """`?` dims that turn out to broadcast (1 where the kernel iterates) are not what was
    compiled: that call runs on the reference path, correctly. (`y`'s last dim is `?`: a
    call that passes 1 where the type says 24 is refused before any kernel runs.)"""
    ty = "tensor<?x?x?xf32>"
    text = f"""func.func @f(%x: {T}, %y: {ty}) -> {T} {{
  %0 = "aten.add.Tensor"(%x, %y) : ({T}, {ty}) -> {T}
  return %0 : {T}
}}"""
    x, y = torch.randn(2, 3, 24), torch.randn(2, 3, 1)
    cm, got, want = _run_both(text, [x, y], backend=generated_backend)
    _close(got, want)
    (plan,) = cm.executable.plans.values()
    assert plan.fallbacks == 1
    y_outer = torch.randn(1, 3, 24)  # outer-dim broadcast is a runtime stride: still compiled
    _close(cm(x, y_outer), x + y_outer)
    assert plan.fallbacks == 1


def test_layer_norm_of_a_constant_row_is_zero(generated_backend):
    """A constant row normalises to 0 (torch: exactly). A float sum of 8 equal values is not
    8x exactly (3x rounds), so a plain two-pass mean is off by an ulp and 1/sqrt(eps) turns
    that into 3e-5; the kernel's corrected two-pass repairs the mean (a fuzzing find)."""
    text = """func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %0 = "aten.layer_norm"(%x) {normalized_shape = [8], eps = 1.0e-05} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}"""
    levels = torch.cat([torch.tensor([float.fromhex("0x1.f66234p-1"), float.fromhex("0x1.7ff624p-1")]),
                        torch.rand(62, generator=torch.Generator().manual_seed(0)) * 4 - 2])
    x = levels[:, None].expand(64, 8).contiguous()
    _, got, want = _run_both(text, [x], backend=generated_backend)
    assert float(want.abs().max()) == 0.0
    assert float(got.abs().max()) <= 1e-6, float(got.abs().max())


IN_PLACE = """func.func @f(%x: tensor<?x?x16xf32>, %r: tensor<?x?x24xf32>, %w: tensor<24x16xf32> {spk.param = "w"}, %b: tensor<24xf32> {spk.param = "b"}, %g: tensor<24xf32> {spk.param = "g"}) -> (tensor<?x?x24xf32>, tensor<?x?x24xf32>) {
  %0 = "aten.linear"(%x, %w, %b) : (tensor<?x?x16xf32>, tensor<24x16xf32>, tensor<24xf32>) -> tensor<?x?x24xf32>
  %1 = "aten.gelu"(%0) : (tensor<?x?x24xf32>) -> tensor<?x?x24xf32>
  %2 = "aten.linear"(%x, %w, %b) : (tensor<?x?x16xf32>, tensor<24x16xf32>, tensor<24xf32>) -> tensor<?x?x24xf32>
  %3 = "aten.add.Tensor"(%2, %r) : (tensor<?x?x24xf32>, tensor<?x?x24xf32>) -> tensor<?x?x24xf32>
  %4 = "aten.layer_norm"(%3, %g, %b) {normalized_shape = [24], eps = 1.0e-5} : (tensor<?x?x24xf32>, tensor<24xf32>, tensor<24xf32>) -> tensor<?x?x24xf32>
  return %1, %4 : tensor<?x?x24xf32>, tensor<?x?x24xf32>
}"""


def test_a_row_kernel_adds_the_bias_of_the_linear_it_alone_reads_and_writes_over_its_result():
    g = torch.Generator().manual_seed(3)
    weights = {"w": torch.randn(24, 16, generator=g), "b": torch.randn(24, generator=g),
               "g": torch.rand(24, generator=g) + 0.5}
    cm = spokeshave.compile_module(spokeshave.parse(IN_PLACE), WeightStore(dict(weights)),
                                   pipeline="fuse", backend="cpu")
    ref = spokeshave.compile_module(spokeshave.parse(IN_PLACE), WeightStore(dict(weights)),
                                    pipeline="dce", backend="reference")
    written = []
    func = cm.module.entry
    for group, plan in cm.executable.plans.items():
        # the group's own value of the parameter "b"
        (bias,) = [inner for outer, inner in zip(group.operands, plan.inputs)
                   if func.param_name(outer) == "b"]
        for step in plan.steps:
            if step.kind == "library":
                # torch's GEMM runs without the bias, which the row kernel reads instead
                assert bias not in step.inputs and len(step.inputs) == 2, step.inputs
            else:
                assert bias in step.inputs
                call = step.call
                step.call = lambda args, call=call: written.append(out := call(args)) or out
    x, r = torch.randn(3, 5, 16, generator=g), torch.randn(3, 5, 24, generator=g)
    got, want = cm(x, r), ref(x, r)
    kinds = sorted(s.kind for p in cm.executable.plans.values() for s in p.steps)
    assert kinds == ["library", "library", "rows", "rows"], kinds
    # the GELU and the add + LayerNorm (whose passes re-read the row) are exact in place
    for a, b in zip(got, want):
        _close(a, b)
    assert {o.data_ptr() for o in got} == {o[0].data_ptr() for o in written}
    # the user's inputs are never written: a second call gives the same results
    x0, r0 = x.clone(), r.clone()
    for a, b in zip(cm(x, r), want):
        _close(a, b)
    assert torch.equal(x, x0) and torch.equal(r, r0)


def test_a_deferred_bias_of_one_column_is_added_as_a_row_scalar():
    # a 1-output head: the linear's result and its bias are `[..., 1]` scalars per row
    text = """func.func @f(%x: tensor<?x16xf32>, %w: tensor<1x16xf32> {spk.param = "w"}, %b: tensor<1xf32> {spk.param = "b"}) -> tensor<?x1xf32> {
  %0 = "aten.linear"(%x, %w, %b) : (tensor<?x16xf32>, tensor<1x16xf32>, tensor<1xf32>) -> tensor<?x1xf32>
  %1 = "aten.sigmoid"(%0) : (tensor<?x1xf32>) -> tensor<?x1xf32>
  return %1 : tensor<?x1xf32>
}"""
    g = torch.Generator().manual_seed(4)
    weights = {"w": torch.randn(1, 16, generator=g), "b": torch.tensor([2.5])}
    cm = spokeshave.compile_module(spokeshave.parse(text), WeightStore(dict(weights)),
                                   pipeline="fuse", backend="cpu")
    (plan,) = cm.executable.plans.values()
    assert [len(s.inputs) for s in plan.steps] == [2, 2]   # mm without the bias, then the row
    x = torch.randn(7, 16, generator=g)
    want = torch.sigmoid(torch.nn.functional.linear(x, weights["w"], weights["b"]))
    _close(cm(x), want)


def test_cpu_erf_and_gelu_hold_the_preludes_error_bound_over_a_dense_range():
    # `spk_erf` (backends/cpu/prelude.py) claims |error| < 3.7e-7 absolute, |erf| <= 1 with
    # exactly +-1 from its clamp on, signed zeros and NaN kept; the GELU built on it is then
    # within 0.5 |x| * 3.7e-7 (+ rounding) of the exact one
    text = ("func.func @f(%x: tensor<?xf32>) -> (tensor<?xf32>, tensor<?xf32>) {\n"
            '  %0 = "aten.erf"(%x) : (tensor<?xf32>) -> tensor<?xf32>\n'
            '  %1 = "aten.gelu"(%x) : (tensor<?xf32>) -> tensor<?xf32>\n'
            "  return %0, %1 : tensor<?xf32>, tensor<?xf32>\n}")
    small = [0.0, -0.0, 1e-30, -1e-30]
    saturated = [3.6164465, 4.0, 50.0, -50.0, float("inf"), float("-inf")]
    dense = torch.linspace(-6, 6, 1_200_001)
    x = torch.cat([dense, torch.tensor(small + saturated + [float("nan")])])
    cm, (erf, gelu), _ = _run_both(text, [x])
    n = len(dense)
    finite = x.isfinite()
    assert (erf - torch.erf(x.double()))[finite].abs().max().item() < 3.7e-7
    assert erf.abs()[finite].max().item() <= 1.0
    assert torch.equal(torch.signbit(erf[n:n + 4]), torch.tensor([False, True, False, True]))
    assert torch.equal(erf[n + 4:n + 10], torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0, -1.0]))
    assert erf[-1].isnan() and gelu[-1].isnan()
    want = 0.5 * x.double() * (1 + torch.erf(x.double() / 2 ** 0.5))
    bound = 0.5 * x.double().abs() * 3.7e-7 + 2 * 6e-8 * want.abs() + 1e-12
    assert ((gelu.double() - want).abs() <= bound)[finite].all()
