"""The front door: `compile_module` on imported IR, the `Target` and cost model every pass
sees, backends that do not fit a target, and what an `Executable` exposes."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import spokeshave
from spokeshave.compiler.backend import BACKENDS, Backend, Executable, KernelInfo
from spokeshave.compiler.cost import CostModel, CostModelAnalysis
from spokeshave.compiler.passmanager import PASSES, Pass, register_pass
from spokeshave.compiler.target import Target
from spokeshave.costmodel.roofline import RooflineCostModel
from spokeshave_models import make_mlp


@pytest.fixture(scope="module")
def imported():
    m = make_mlp(k=16, hidden=32, out=8).requires_grad_(False)
    x = torch.randn(4, 16)
    return m, x, spokeshave.import_model(m, (x,))


def test_compile_module_compiles_a_copy(imported):
    m, x, imp = imported
    before = str(imp.module)
    names = set(imp.weights)
    a = spokeshave.compile_module(imp, pipeline="quantize{scheme=w8}")
    b = spokeshave.compile_module(imp, pipeline="")
    assert str(imp.module) == before and set(imp.weights) == names  # the user's IR is untouched
    assert "spk.linear_w8" in str(a.module) and "spk.linear_w8" not in str(b.module)
    assert torch.equal(b(x), m(x))
    assert float(((a(x) - m(x)) ** 2).sum() / (m(x) ** 2).sum()) < 1e-3
    # a Module and its weights, without the calling convention: positional flat inputs
    c = spokeshave.compile_module(imp.module, imp.weights, pipeline="canonicalize,cse,dce")
    assert torch.equal(c(x), m(x))
    with pytest.raises(spokeshave.SpokeshaveError, match="positional"):
        c(x=x)


def test_compile_module_measures_the_report_against_a_reference(imported):
    m, x, imp = imported
    cal = [(torch.randn(4, 16),) for _ in range(3)]
    cm = spokeshave.compile_module(imp, pipeline="quantize{scheme=w4g group=16}", calibration=cal,
                                   reference=m)
    assert cm.report.end_to_end.batches == 3 and 0 < cm.report.end_to_end.rel_mse < 0.05
    assert spokeshave.compile_module(imp, pipeline="quantize{scheme=w8}").report.end_to_end is None


def test_the_backend_supplies_the_default_pipeline(imported):
    _, _, imp = imported
    cm = spokeshave.compile_module(imp)
    assert cm.pipeline == BACKENDS["reference"].default_pipeline == "canonicalize,cse,dce"


def test_every_pass_sees_the_target_and_the_cost_model(imported):
    _, _, imp = imported
    seen = {}

    @dataclass
    class _Ask(Pass):
        """Asks the cost model about the first linear."""
        name = "test-ask"

        def run(self, module, ctx):
            costs = ctx.analyses.get(CostModelAnalysis, module)
            seen["target"] = ctx.target
            seen["cost"] = costs.cost([module.entry.ops[0]])
            seen["model"] = costs.model
            return False

    with PASSES.scoped():
        register_pass(_Ask)
        target = Target.parse("cpu:x86_64:avx2,fma:cores=4")
        spokeshave.compile_module(imp, pipeline="test-ask", target=target)
        assert seen["target"] == target
        assert isinstance(seen["model"], RooflineCostModel) and isinstance(seen["model"], CostModel)
        assert seen["cost"].flops > 0 and seen["cost"].seconds > 0
        model = RooflineCostModel(peak_flops=1e9, bandwidth=1e9)
        spokeshave.compile_module(imp, pipeline="test-ask", cost_model=model)
        assert seen["model"] is model and seen["target"] == Target.host()


def test_a_backend_that_does_not_fit_the_target_says_why(imported):
    _, _, imp = imported
    ref = BACKENDS["reference"]
    with BACKENDS.scoped():
        BACKENDS.register("wide", Backend("wide", "cpu", ref.build, "", requires=frozenset({"avx512f"})))
        BACKENDS.register("gpu-only", Backend("gpu-only", "cuda", ref.build, ""))
        with pytest.raises(spokeshave.SpokeshaveError,
                           match=r"backend 'wide' needs avx512f, which the target \(.*\) lacks"):
            spokeshave.compile_module(imp, backend="wide", target="cpu:x86_64:avx2,fma")
        ok = spokeshave.compile_module(imp, backend="wide", target="cpu:x86_64:avx512f,avx2")
        assert ok.backend == "wide"
        with pytest.raises(spokeshave.SpokeshaveError, match="backend 'gpu-only' runs on cuda"):
            spokeshave.compile_module(imp, backend="gpu-only", target="cpu:x86_64:avx2")
    with pytest.raises(spokeshave.SpokeshaveError, match="unknown backend .wide.; known backends: cpu, reference"):
        spokeshave.compile_module(imp, backend="wide")


def test_the_executable_exposes_what_the_backend_generated(imported):
    _, _, imp = imported
    cm = spokeshave.compile_module(imp, pipeline="quantize{scheme=w8}")
    exe = cm.executable
    assert isinstance(exe, Executable)
    assert exe.sources["module.mlir"] == str(cm.module)
    assert KernelInfo("interpret spk.linear_w8", ("spk.linear_w8",)) in exe.kernels
    assert all(k.ops and k.name for k in exe.kernels)


def test_a_bad_target_text_is_one_clear_error(imported):
    _, _, imp = imported
    with pytest.raises(spokeshave.SpokeshaveError, match="DEVICE:ARCH"):
        spokeshave.compile_module(imp, target="a toaster")
