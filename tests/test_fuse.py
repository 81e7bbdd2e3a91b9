"""`fuse` on whole models: fused IR runs exactly as the unfused IR on the reference backend
(its interpreter runs `spk.fused` regions), after plain import and after w8a8 quantization
(and `lorc`); every region has the shape its kind promises (what a backend lowers); the
grouping is decided by the cost model, not by the pass; a second run changes nothing; and
compression passes refuse to run after it. The per-case rewrites are the FileCheck tests'
(`tests/filecheck/passes/fuse.mlir`)."""
from __future__ import annotations

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.compiler.cost import Cost
from spokeshave.compiler.dialect import COMPRESSED_LINEAR, LINEAR, POINTWISE, has_trait, reduces_last_dim
from spokeshave.compiler.frontend import Imported
from spokeshave.compiler.passmanager import parse_pipeline, print_pipeline
from spokeshave.passes.fuse import ACTIVATION_QUANTIZED, ATTENTION, KINDS

MODELS = ["bert", "llama"]


@pytest.fixture(scope="module")
def imported():
    """name -> (Imported, example inputs, calibration batches), exported once per module."""
    out = {}
    for name in MODELS:
        model, inputs = models.RANDOM_MODELS[name]()
        calibration = [models.RANDOM_MODELS[name](seed=s)[1] for s in (1, 2)]
        out[name] = (spokeshave.import_model(model, inputs), inputs, calibration)
    return out


def _outputs(cm, inputs) -> list[torch.Tensor]:
    return models.flat_outputs(cm(*inputs))


def _groups(module) -> list:
    return [op for op in module.entry.ops if op.name == "spk.fused"]


def _body(group) -> list:
    return group.regions[0].block.ops[:-1]  # without the spk.yield


def _is_rows_op(op) -> bool:
    return has_trait(op, POINTWISE) or reduces_last_dim(op)


def _check_region(group) -> None:
    """The region shape of each kind, as the pass's docstring states it (re-checked here from
    the IR alone, independently of the pass's own classification)."""
    kind, ops = group.attributes["kind"], _body(group)
    assert kind in KINDS
    names = [op.name for op in ops]
    if kind == "attention":
        assert names == [ATTENTION]
    elif kind == "rows":
        assert len(ops) >= 2 and all(_is_rows_op(op) for op in ops), names
    elif kind == "gemm":
        anchor, rest = ops[0], ops[1:]
        assert has_trait(anchor, LINEAR), names
        linears = [op for op in rest if has_trait(op, LINEAR)]
        if linears:  # only lorc's correction: two thin linears on the anchor's input
            assert has_trait(anchor, COMPRESSED_LINEAR) and len(linears) == 2, names
            low, corr = linears
            assert low.operands[0] is anchor.operands[0] and corr.operands[0] is low.result
        reached = {id(anchor.result)} | {id(op.result) for op in linears}
        for op in rest:
            if op in linears:
                continue
            assert _is_rows_op(op) and any(id(v) in reached for v in op.operands), names
            reached.add(id(op.result))
            assert op.result.type.rank <= anchor.result.type.rank
    else:  # prologue
        linears = [op for op in ops if op.name in ACTIVATION_QUANTIZED]
        rows = ops[:len(ops) - len(linears)]
        assert linears and rows and ops[len(rows):] == linears, names
        assert all(_is_rows_op(op) for op in rows), names
        x = linears[0].operands[0]
        assert all(op.operands[0] is x for op in linears) and x.defining_op in rows
        inner = {id(v) for op in ops for v in op.operands}
        assert not any(id(op.result) in inner for op in linears)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("before", ["", "quantize{scheme=w8a8}", "quantize{scheme=w8a8},lorc{rank=4}"])
def test_fused_ir_runs_as_the_unfused_ir(imported, name, before):
    imp, inputs, calibration = imported[name]
    unfused = spokeshave.compile_module(imp, pipeline=before, calibration=calibration)
    pipeline = f"{before},fuse" if before else "fuse"
    fused = spokeshave.compile_module(imp, pipeline=pipeline, calibration=calibration)
    spokeshave.verify(fused.module, fused.weights)  # compile also verified after every pass
    groups = _groups(fused.module)
    for g in groups:
        _check_region(g)
    kinds = {g.attributes["kind"] for g in groups}
    assert {"gemm", "attention"} <= kinds
    if before == "quantize{scheme=w8a8}" and name == "bert":
        # the embedding LayerNorm quantizes once for Q, K and V of the first layer
        prologue = [g for g in groups if g.attributes["kind"] == "prologue"]
        assert [[op.name for op in _body(g)][-3:] for g in prologue] == [["spk.linear_w8a8"] * 3]
    if "lorc" in before:  # every correction joined its compressed linear's group
        compressed = sum(has_trait(op, COMPRESSED_LINEAR) for op in unfused.module.entry.ops)
        assert compressed and sum(op.name == "aten.linear" for g in groups for op in _body(g)) == 2 * compressed
    stats = fused.stats["fuse"]
    assert stats["groups"] == len(groups)
    assert stats["ops fused"] == sum(len(_body(g)) for g in groups)
    for got, want in zip(_outputs(fused, inputs), _outputs(unfused, inputs)):
        assert torch.equal(got, want)


def test_fuse_is_a_fixed_point(imported):
    imp, _, calibration = imported["llama"]
    once = spokeshave.compile_module(imp, pipeline="quantize{scheme=w8a8},lorc{rank=4},fuse",
                                     calibration=calibration)
    again = spokeshave.compile_module(Imported(once.module, once.weights, once.in_spec, once.out_spec),
                                      pipeline="fuse")
    assert str(again.module) == str(once.module)
    assert "groups" not in again.stats.get("fuse", {})


class Additive:
    """A cost model under which one kernel never beats two: each op costs one second alone
    or in any group, so `cost(A + B) == cost(A) + cost(B)`. It records what it was asked."""

    name = "additive"

    def __init__(self):
        self.asked: list[tuple[str, ...]] = []

    def predict(self, candidate, target) -> Cost:
        self.asked.append(tuple(op.name for op in candidate.ops))
        return Cost(float(len(candidate.ops)), 0.0, 0.0, "overhead")


class OnlyGemmEpilogues(Additive):
    """Fusing pays only around a linear: a group holding one is cheaper by a second per op."""

    name = "only-gemm-epilogues"

    def predict(self, candidate, target) -> Cost:
        super().predict(candidate, target)
        n = len(candidate.ops)
        if any(has_trait(op, LINEAR) for op in candidate.ops):
            return Cost(1.0, 0.0, 0.0, "overhead")
        return Cost(float(n), 0.0, 0.0, "overhead")


def test_the_cost_model_decides(imported):
    imp, inputs, _ = imported["bert"]
    reference = _outputs(spokeshave.compile_module(imp, pipeline=""), inputs)

    never = Additive()
    cm = spokeshave.compile_module(imp, pipeline="fuse", cost_model=never)
    # asked about merged candidates, and told they do not pay: only one-op attention groups
    assert any(len(ops) >= 2 for ops in never.asked)
    groups = _groups(cm.module)
    assert groups and all(g.attributes["kind"] == "attention" and len(_body(g)) == 1 for g in groups)
    assert cm.stats["fuse"]["merges refused (cost)"] > 0
    assert all(torch.equal(a, b) for a, b in zip(_outputs(cm, inputs), reference))

    gemm = spokeshave.compile_module(imp, pipeline="fuse", cost_model=OnlyGemmEpilogues())
    kinds = {g.attributes["kind"] for g in _groups(gemm.module)}
    assert kinds == {"gemm", "attention"}  # the embedding's add + LayerNorm stays apart
    roofline = spokeshave.compile_module(imp, pipeline="fuse")  # the default model
    assert {g.attributes["kind"] for g in _groups(roofline.module)} == {"gemm", "attention", "rows"}


def test_kinds_option(imported):
    imp, _, _ = imported["bert"]
    cm = spokeshave.compile_module(imp, pipeline="fuse{kinds=rows|attention}")
    assert {g.attributes["kind"] for g in _groups(cm.module)} == {"rows", "attention"}
    passes = parse_pipeline("fuse{kinds=gemm|rows}")
    assert print_pipeline(passes) == "fuse{kinds=gemm|rows}"
    assert print_pipeline(parse_pipeline("fuse")) == "fuse"
    for bad in ("fuse{kinds=loops}", "fuse{kinds=}", "fuse{kinds=rows||gemm}"):
        with pytest.raises(spokeshave.PipelineError, match="option 'kinds' takes '|'-separated"):
            parse_pipeline(bad)


def test_compression_refuses_to_run_after_fuse(imported):
    imp, _, _ = imported["bert"]
    with pytest.raises(spokeshave.PipelineError, match=r"pass 'quantize' must run before 'fuse'"):
        spokeshave.compile_module(imp, pipeline="fuse,quantize{scheme=w8}")
