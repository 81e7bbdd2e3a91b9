"""The frontend on real and random models: import, text round trip, verify, run = eager.

Models: small random-weight BERT, GPT-2 and Llama; the real all-MiniLM-L6-v2 and SmolLM2-135M
(slow: loaded once per session). For each, `spokeshave.compile` with the pipelines "", the
default "canonicalize,cse,dce" and "fold-constants,canonicalize,cse,dce" must give a module
whose text round-trips exactly, that verifies, and whose reference-backend output equals
eager's to 1e-5 relative (max|a-b| / max|b|). With dynamic batch/seq dims the types say `?`
and the compiled model runs at a batch and length other than the example's.

Exports dominate the run time, so dynamic-shape exports happen once per model (pipeline "";
other pipelines run on a copy of that module, which is what `compile` does after exporting:
`spokeshave.compile_module`). SmolLM2 (30-60 s per export on two cores) is exported once only,
with dynamic dims and the default pipeline; pipeline "" is left to the other models.
"""
from __future__ import annotations

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.compiler.interpreter import Interpreter
from spokeshave.compiler.printer import print_module
from spokeshave_models import ALL, DEFAULT, FOLD, NONE, PIPELINES, REAL

RTOL = 1e-5
PIPELINE_IDS = {NONE: "none", DEFAULT: "default", FOLD: "fold"}


def _cases(pairs) -> list:
    return [pytest.param(name, pipeline, marks=[pytest.mark.slow] if name in REAL else [],
                         id=f"{name}-{PIPELINE_IDS[pipeline]}") for name, pipeline in pairs]


def static_cases() -> list:
    """(model, pipeline) pairs compiled at the example's static shapes (SmolLM2: dynamic only)."""
    return _cases((n, p) for n in ALL if n != "smollm2" for p in PIPELINES)


def dynamic_cases() -> list:
    return _cases([(n, p) for n in ALL if n != "smollm2" for p in (NONE, FOLD)]
                  + [("smollm2", DEFAULT), ("smollm2", FOLD)])


def check_round_trip(module: spokeshave.Module) -> str:
    text = print_module(module)
    parsed = spokeshave.parse(text)
    assert print_module(parsed) == text, "print(parse(t)) != t"
    with_locs = print_module(module, debug_info=True)  # Python source locations as loc(...)
    assert print_module(spokeshave.parse(with_locs)) == text, "locations change the module"
    return text


def check_matches_eager(case, cm: spokeshave.CompiledModel, inputs: tuple,
                        label: str = "") -> float:
    """`case` is a `conftest.Case`; the error also goes into the end-of-run summary."""
    err = models.max_rel_error(cm(*inputs), case.eager(inputs))
    case.record_error(f"{case.name} {label}".strip(), err)
    assert err <= RTOL, f"{case.name}: max relative error {err:.3g} > {RTOL}"
    return err


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("case,pipeline", static_cases(), indirect=["case"])
def test_compile_round_trip_verify_and_match_eager(case, pipeline):
    cm = case.compiled(pipeline)
    f = cm.module.entry
    assert len(f.user_inputs()) == len(case.inputs)
    assert any(op.name == "aten.linear" for op in f.ops), "linear layers should import whole"
    spokeshave.verify(cm.module, cm.weights)
    check_round_trip(cm.module)
    check_matches_eager(case, cm, case.inputs, f"{PIPELINE_IDS[pipeline]}")
    names = [p.name for p in spokeshave.parse_pipeline(pipeline)] if pipeline else []
    assert [n for n, _ in cm.timings] == names


@pytest.mark.parametrize("case", [pytest.param(n, marks=[pytest.mark.slow] if n in REAL else [])
                                  for n in ALL], indirect=True)
def test_parsed_text_runs_like_the_module(case):
    """The text is the whole program: the parsed module gives bit-identical results."""
    cm = case.compiled(DEFAULT)
    parsed = spokeshave.parse(print_module(cm.module))
    flat = torch.utils._pytree.tree_leaves(case.inputs)
    want = cm.executable(*flat)
    got = Interpreter(parsed, cm.weights)(*flat)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.mark.parametrize("case,pipeline", dynamic_cases(), indirect=["case"])
def test_dynamic_batch_and_sequence(case, pipeline):
    cm = case.compiled(pipeline, dynamic=True)
    f = cm.module.entry
    for v in f.user_inputs():
        assert v.type.shape == (None, None), f"expected tensor<?x?x...>, got {v.type}"
    text = check_round_trip(cm.module)
    assert "tensor<?x?xi64>" in text
    first_out = f.result_types[0]
    assert first_out.shape[:2] == (None, None), f"output should stay dynamic, got {first_out}"
    spokeshave.verify(cm.module, cm.weights)
    for v in f.params().values():
        assert v.type.is_static
    label = f"{PIPELINE_IDS[pipeline]} dynamic"
    check_matches_eager(case, cm, case.inputs, f"{label} {tuple(case.inputs[0].shape)}")
    check_matches_eager(case, cm, case.other, f"{label} {tuple(case.other[0].shape)}")


@pytest.mark.parametrize("case", ["bert"], indirect=True)
def test_compiled_call_checks_input_structure(case):
    cm = case.compiled(DEFAULT)
    with pytest.raises(spokeshave.SpokeshaveError, match="structured"):
        cm(case.inputs[0])
