"""Calibration on data as it comes: dims that differ between the example and the calibration
batches become dynamic with no `dynamic_shapes` argument (`compiler/dynamic.py`), a dim the
model pins is reported at the model's line, and every call is checked against what was
compiled (`compiler/signature.py`)."""
from __future__ import annotations

import pytest
import torch

import spokeshave
from spokeshave.compiler.signature import InputSpec, SymDim, check_inputs
from spokeshave_models import flat_outputs, max_rel_error, minilm_inputs, tiny_bert, token_ids


def _bert_batch(batch: int, seq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq - 1:] = 0
    return token_ids(batch, seq, 128, seed), mask


@pytest.fixture(scope="module")
def bert_calibrated():
    model, example = tiny_bert(batch=2, seq=8)
    cal = [_bert_batch(b, s, b * 100 + s) for b, s in [(1, 5), (3, 12), (2, 30)]]
    cm = spokeshave.compile(model, example, pipeline="quantize{scheme=w8a8}", calibration=cal)
    return model, cm


def test_calibration_of_other_sizes_makes_those_dims_dynamic(bert_calibrated):
    model, cm = bert_calibrated
    ids, mask = cm.inputs
    assert isinstance(ids.shape[0], SymDim) and isinstance(ids.shape[1], SymDim)
    # the sequence shares one symbol and is bounded by BERT's position table (128 rows)
    assert ids.shape[1] == mask.shape[1] and ids.shape[1].hi == 128
    assert ids.shape[0].lo == 1  # torch's 0/1 specialisation bound of 2 reads as 1
    for b, s in [(1, 3), (4, 17), (2, 128)]:
        x = _bert_batch(b, s, 7)
        got, want = cm(*x).last_hidden_state, model(*x).last_hidden_state
        assert got.shape == want.shape and max_rel_error(got, want) < 0.05


@pytest.mark.parametrize("inputs, message", [
    ((token_ids(1, 129, 128), torch.ones(1, 129, dtype=torch.long)),
     r"input 0 \('input_ids'\) is \(1, 129\) i64.*dim 1 is 129, but it must be at most 128"),
    ((token_ids(2, 5, 128), torch.ones(2, 6, dtype=torch.long)),
     r"input 1 \('attention_mask'\).*must equal dim 1 of input 0 \('input_ids', 5\)"),
    ((token_ids(2, 5, 128).int(), torch.ones(2, 5, dtype=torch.long)),
     r"input 0 \('input_ids'\) is \(2, 5\) i32.*dtype must be torch.int64"),
    ((token_ids(2, 5, 128)[0], torch.ones(2, 5, dtype=torch.long)),
     r"input 0 \('input_ids'\) is \(5,\) i64.*must have 2 dims"),
])
def test_a_call_outside_what_was_compiled_is_refused(bert_calibrated, inputs, message):
    _, cm = bert_calibrated
    with pytest.raises(spokeshave.SpokeshaveError, match=message):
        cm(*inputs)


class _PinsWidth(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        return y.reshape(x.shape[0], 2, 3)  # the width must be 6


def test_a_dim_the_model_specializes_is_reported_at_the_model_line():
    with pytest.raises(spokeshave.SpokeshaveError) as e:
        spokeshave.compile(_PinsWidth(), (torch.randn(2, 6),), calibration=[torch.randn(3, 8)])
    msg = str(e.value)
    assert "vary dim 1 of input 0 ('x': sizes 6, 8)" in msg and "specializes it to 6" in msg
    assert "test_dynamic.py:" in msg and "y.reshape(x.shape[0], 2, 3)" in msg
    # the batch dim alone varies: fine, and only it is dynamic
    cm = spokeshave.compile(_PinsWidth(), (torch.randn(2, 6),), calibration=[torch.randn(5, 6)])
    assert isinstance(cm.inputs[0].shape[0], SymDim) and cm.inputs[0].shape[1] == 6
    x = torch.randn(7, 6)
    assert torch.equal(cm(x), _PinsWidth()(x))


def test_calibration_batches_may_not_change_rank_or_dtype():
    with pytest.raises(spokeshave.SpokeshaveError, match=r"calibration batch 1, input 0 is "
                                                         r"\(3, 6\) torch.float64.*not in rank or dtype"):
        spokeshave.compile(_PinsWidth(), (torch.randn(2, 6),),
                           calibration=[torch.randn(3, 6), torch.randn(3, 6, dtype=torch.float64)])


def test_a_batch_one_example_still_gives_a_dynamic_batch():
    # torch pins sizes 0 and 1 while tracing: the export uses a calibration batch instead
    cm = spokeshave.compile(_PinsWidth(), (torch.randn(1, 6),), calibration=[torch.randn(4, 6)])
    assert isinstance(cm.inputs[0].shape[0], SymDim)
    assert cm(torch.randn(3, 6)).shape == (3, 2, 3)


def test_without_calibration_shapes_stay_static_and_are_checked():
    cm = spokeshave.compile(_PinsWidth(), (torch.randn(2, 6),))
    assert cm.inputs[0].shape == (2, 6)
    with pytest.raises(spokeshave.SpokeshaveError, match=r"dim 0 must be 2 \(it is static"):
        cm(torch.randn(3, 6))


def test_specs_round_trip_through_json():
    spec = InputSpec("input_ids", "i64", (SymDim("s0", 1, None), SymDim("s1", 1, 512), 4))
    assert InputSpec.from_json(spec.to_json()) == spec
    assert str(spec) == "input_ids: i64[?s0 in 1.., ?s1 in 1..512, 4]"
    with pytest.raises(spokeshave.SpokeshaveError, match="got 2 inputs; the model was compiled for 1"):
        check_inputs([torch.zeros(1), torch.zeros(1)], [spec], "call")


@pytest.mark.slow
def test_minilm_calibrates_on_batches_of_other_sizes_without_dynamic_shapes(minilm):
    model, tokenizer = minilm
    example = minilm_inputs(tokenizer)
    sentences = ["A short one.", "Calibration sets hold sentences of many lengths, and users "
                 "never declare their shapes.", "Three words here.",
                 "The position table bounds the sequence of this encoder to 512 tokens."]
    cal = [minilm_inputs(tokenizer, sentences[:1]), minilm_inputs(tokenizer, sentences[1:]),
           minilm_inputs(tokenizer, sentences[1:3])]
    assert len({c[0].shape for c in cal + [example]}) == 4
    cm = spokeshave.compile(model, example, pipeline="quantize{scheme=w8}", calibration=cal)
    seq = cm.inputs[0].shape[1]
    assert isinstance(seq, SymDim) and seq.hi == 512
    ids, mask = minilm_inputs(tokenizer, sentences[:2])  # a fifth shape
    got, want = flat_outputs(cm(ids, mask))[0], flat_outputs(model(ids, mask))[0]
    real = mask.bool()  # padded positions carry no meaning
    assert got.shape == want.shape
    assert torch.nn.functional.cosine_similarity(got[real], want[real], dim=-1).min() > 0.99
