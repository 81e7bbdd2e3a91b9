"""Pass manager: pipeline text, options, analyses, verification between passes, patterns."""
from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
import torch

from spokeshave import parse
from spokeshave.compiler import (Pass, PassContext, PassManager, PipelineError, VerifyError, parse_pipeline,
                                 print_pipeline)
from spokeshave.compiler.ir import Op
from spokeshave.compiler.passmanager import PASSES, Range, option, register_pass
from spokeshave.compiler.rewrite import PatternSet, apply_patterns_greedily, pattern
from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.weights import complete_weights

TEXT = """func.func @forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "w"}) -> tensor<4x16xf32> {
  %0 = "aten.relu"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = "aten.relu"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %2 = "aten.linear"(%0, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  return %2 : tensor<4x16xf32>
}
"""


@dataclass
class _Probe(Pass):
    """A test pass with every option kind."""

    name = "test-probe"
    count: int = 1
    ratio: float = option(0.5, range=Range(0.0, 1.0, lo_open=True))
    flag: bool = False
    mode: str = option("a", choices=("a", "b"))
    runs = []

    def run(self, module, ctx):
        _Probe.runs.append(self)
        ctx.analyses.get(_Counting, module)
        return False  # changed nothing: analyses survive


@dataclass
class _Breaker(Pass):
    """Breaks the IR on purpose, to see the verifier name it."""

    name = "test-break-ir"

    def run(self, module, ctx):
        f = module.entry
        ops = f.body.ops
        ops[0], ops[2] = ops[2], ops[0]


class _Counting:
    made = 0

    def __init__(self, module, ctx):
        _Counting.made += 1


@pytest.fixture(autouse=True)
def _test_passes():
    """The probe passes exist only inside this module's tests."""
    with PASSES.scoped():
        register_pass(_Probe)
        register_pass(_Breaker)
        yield
    assert "test-probe" not in PASSES


def test_test_passes_do_not_leak_into_the_registry():
    with PASSES.scoped():
        register_pass(dataclass(type("_Leak", (Pass,), {"name": "test-leak", "run": lambda s, m, c: False})))
        assert "test-leak" in PASSES
    assert "test-leak" not in PASSES and "cse" in PASSES


@pytest.mark.parametrize("text", ["canonicalize,cse,dce", "cse", "test-probe{count=3 ratio=0.25 flag=true mode=b}",
                                  "test-probe{mode=b},dce", "fold-constants{max-new-elements=10}"])
def test_pipeline_text_round_trips(text):
    assert print_pipeline(parse_pipeline(text)) == text


def test_pipeline_spellings():
    a = parse_pipeline("builtin.module(test-probe{count=3, flag},cse)")
    assert a[0].count == 3 and a[0].flag is True and a[1].name == "cse"
    assert parse_pipeline(" test-probe{ratio=1e-3} ")[0].ratio == 1e-3
    assert parse_pipeline("test-probe{max_rewrites=1}".replace("test-probe", "canonicalize"))[0].max_rewrites == 1
    assert parse_pipeline("") == []


@pytest.mark.parametrize("text,msg", [
    ("nope", "unknown pass 'nope'; known passes: canonicalize, cse"),
    ("cse{x=1}", "pass 'cse' has no option 'x'"),
    ("test-probe{count=many}", "option 'count' expects int"),
    ("test-probe{mode=c}", "option 'mode' must be one of a, b"),
    ("test-probe{flag=maybe}", "expects bool"),
    ("test-probe{ratio=0}", "option 'ratio' must be in (0, 1]; got 0.0"),
    ("test-probe{ratio=nan}", "option 'ratio' must be in (0, 1]; got nan"),
    ("cse{", "cannot parse pipeline element"),
])
def test_pipeline_errors_say_what_is_allowed(text, msg):
    with pytest.raises(PipelineError) as e:
        parse_pipeline(text)
    assert msg in str(e.value)


def test_analysis_cache_survives_unchanged_passes_only():
    _Counting.made = 0
    m = parse(TEXT)
    ctx = PassContext(weights=complete_weights(m, None))
    PassManager.parse("test-probe,test-probe").run(m, ctx)
    assert _Counting.made == 1  # the second run found it cached
    PassManager.parse("cse,test-probe").run(m, ctx)  # cse changed the IR: recomputed
    assert _Counting.made == 2


def test_verifier_runs_after_each_pass_and_names_the_breaker():
    m = parse(TEXT)
    with pytest.raises(VerifyError) as e:
        PassManager.parse("cse,test-break-ir,dce").run(m, PassContext(weights=complete_weights(m, None)))
    assert "after pass 'test-break-ir'" in str(e.value)


def test_print_ir_after_all_and_timing():
    out = io.StringIO()
    m = parse(TEXT)
    ctx = PassContext(weights=complete_weights(m, None))
    PassManager.parse("cse,dce", print_ir_after_all=True, timing=True, out=out).run(m, ctx)
    text = out.getvalue()
    assert "// -----// IR Dump After cse //----- //" in text
    assert "// -----// IR Dump After dce //----- //" in text
    assert "Pass execution timing report" in text and "cse: 1 ops removed" in text


def test_pattern_sets_compose_and_the_driver_detects_ping_pong():
    @pattern("aten.relu")
    def to_sigmoid(op, rw):
        new = rw.insert_before(op, Op("aten.sigmoid", op.operands, [op.result.type]))
        rw.replace_op(op, [new.result])
        return True

    @pattern("aten.sigmoid")
    def to_relu(op, rw):
        new = rw.insert_before(op, Op("aten.relu", op.operands, [op.result.type]))
        rw.replace_op(op, [new.result])
        return True

    one = PatternSet(to_sigmoid)
    both = one + PatternSet(to_relu)
    assert len(both) == 2 and list(both)[0] is to_sigmoid
    m = parse(TEXT)
    n = apply_patterns_greedily(m, one)
    assert n > 0 and "aten.sigmoid" in str(m) and "aten.relu" not in str(m)
    with pytest.raises(SpokeshaveError, match="did not converge"):
        apply_patterns_greedily(m, both, max_rewrites=50)


def test_long_passes_report_progress_per_layer():
    import spokeshave

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    x = torch.randn(4, 16)
    imported = spokeshave.import_model(m, (x,))
    for name, pipeline in (("quantize", "quantize{scheme=w8}"), ("sparsify", "sparsify{method=magnitude}")):
        seen = []
        spokeshave.compile_module(imported, pipeline=pipeline, progress=lambda *a: seen.append(a))
        assert {a[0] for a in seen} == {name}
        assert seen[-1][1:3] == (2, 2) and max(a[1] for a in seen) == 2, seen
        assert "0.weight" in {a[3] for a in seen}
