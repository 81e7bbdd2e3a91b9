"""SliceGPT (`fold-norms`, `slice`): differential tests on tiny random-weight transformers.

Random HF models start with unit norm scales and zero biases, which would make folding
trivially exact; `_perturbed` gives every 1-D parameter (norm scales, biases) random values
first, so the folds are really exercised.
"""
from __future__ import annotations

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.compiler.errors import PipelineError, SpokeshaveError
from spokeshave.passes.fold_norms import ResidualStream

SEQ = 16


def _perturbed(builder):
    model, inputs = builder(batch=2, seq=SEQ)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model, inputs


def _calibration(vocab: int, n: int = 4) -> list[tuple[torch.Tensor]]:
    return [(models.token_ids(2, SEQ, vocab, seed=100 + i),) for i in range(n)]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def decoder(request):
    model, inputs = _perturbed(models.RANDOM_MODELS[request.param])
    with torch.no_grad():
        want = model(*inputs)
    return request.param, model, inputs, want, _calibration(model.lm.config.vocab_size)


@pytest.fixture(scope="module")
def sliced(decoder):
    """fraction -> CompiledModel, compiled once per model."""
    name, model, inputs, _, calib = decoder
    cache, compile_ = {}, models.OneExport(model, inputs)

    def get(fraction):
        if fraction not in cache:
            pipeline = "fold-norms" if fraction is None else f"fold-norms,slice{{fraction={fraction}}}"
            cache[fraction] = compile_(pipeline, calibration=calib)
        return cache[fraction]
    return get


def _n_params(cm) -> int:
    return sum(cm.weights[n].numel() for n in cm.module.entry.params())


def _ops(cm, name: str) -> list:
    return [op for op in cm.module.entry.ops if op.name == name]


def test_fold_norms_is_exact(decoder, sliced):
    name, model, inputs, want, _ = decoder
    cm = sliced(None)
    assert models.max_rel_error(cm(*inputs), want) < 1e-5
    norms = _ops(cm, "aten.rms_norm")
    assert len(norms) == 5 and not _ops(cm, "aten.layer_norm")   # 2 blocks x 2 + final
    assert all(len(op.operands) == 1 for op in norms)            # scale-free
    assert not _ops(cm, "aten.rsqrt") and not _ops(cm, "aten.addmm")
    assert cm.stats["fold-norms"]["norms folded"] == 5
    if name == "gpt2":
        assert cm.stats["fold-norms"]["layer norms -> rms norms"] == 5


def test_slice_fraction_zero_is_invariant(decoder, sliced):
    _, _, inputs, want, _ = decoder
    cm = sliced(0.0)
    assert models.max_rel_error(cm(*inputs), want) < 1e-4
    # the rotations are really there: one shortcut per residual add
    assert cm.stats["slice"]["shortcut rotations inserted"] == 4
    assert cm.stats["slice"]["channels deleted"] == 0


def test_error_grows_with_fraction(decoder, sliced):
    _, _, inputs, want, _ = decoder
    errs = [models.max_rel_error(sliced(f)(*inputs), want) for f in (0.0, 0.1, 0.25, 0.5)]
    assert errs[0] < 1e-4 < errs[1]
    for a, b in zip(errs[1:], errs[2:]):
        assert b > 0.9 * a, f"error does not grow with the fraction: {errs}"
    assert errs[3] > errs[1], errs


def test_sliced_weights_are_smaller(decoder, sliced):
    _, _, inputs, _, _ = decoder
    dense = _n_params(sliced(None))
    counts = [_n_params(sliced(f)) for f in (0.25, 0.5)]
    assert counts[0] < dense and counts[1] < counts[0], (dense, counts)
    cm = sliced(0.25)
    assert cm.stats["slice"]["parameters after"] == counts[0]
    # the stream is 48 wide now: embeddings, norms, shortcuts and the head's input
    for op in _ops(cm, "aten.embedding"):
        assert op.operands[0].type.shape[-1] == 48 and op.result.type.shape[-1] == 48
    norms = _ops(cm, "aten.rms_norm")
    assert norms and all(op.attributes["normalized_shape"] == [48] for op in norms)
    shortcuts = [op for op in _ops(cm, "aten.linear")
                 if cm.module.entry.param_name(op.operands[1]).startswith("slice.shortcut.")]
    assert len(shortcuts) == 4 and all(op.operands[1].type.shape == (48, 48) for op in shortcuts)
    head = _ops(cm, "aten.linear")[-1]
    assert head.operands[1].type.shape == (128, 48)
    assert cm(*inputs).shape == (2, SEQ, 128)


def test_sliced_norm_keeps_the_full_width_divisor(decoder, sliced):
    """RMSNorm over the k kept channels must still divide by d: eps scales by d/k."""
    cm0, cm = sliced(0.0), sliced(0.25)
    eps0 = _ops(cm0, "aten.rms_norm")[0].attributes["eps"]
    eps = _ops(cm, "aten.rms_norm")[0].attributes["eps"]
    assert eps == pytest.approx(eps0 * 64 / 48)


def test_report_entries(sliced):
    cm = sliced(0.25)
    entries = [e for e in cm.context.report if e.pass_name == "slice"]
    assert len(entries) == 5
    assert all(e.details["kept"] == 48 and e.details["dim"] == 64 and 0 < e.details["energy_kept"] <= 1 for e in entries)


def test_residual_stream_found(decoder, sliced):
    stream = ResidualStream.find(sliced(None).module.entry)
    assert len(stream.values) == 5 and len(stream.adds) == 4
    assert all(op.name == "aten.embedding" for op in stream.sources)
    assert all(op.name == "aten.linear" for op in stream.writers)
    assert [len(r) for r in stream.readers] == [1, 1, 1, 1, 1]


def test_one_shot_is_invariant_too(decoder):
    _, model, inputs, want, calib = decoder
    cm = spokeshave.compile(model, inputs, pipeline="fold-norms,slice{fraction=0 sequential=false}",
                          calibration=calib)
    assert models.max_rel_error(cm(*inputs), want) < 1e-4


def test_lockstep_sees_every_batch_and_substitutes():
    """`run_lockstep` visits each value once with all batches; what `visit` returns is what
    the rest of the program computes with; execution stops after the last value."""
    from spokeshave.compiler.lockstep import run_lockstep
    from spokeshave.compiler.passmanager import PassContext

    module = spokeshave.parse("""
func.func @f(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %0 = "aten.neg"(%x) : (tensor<2x3xf32>) -> tensor<2x3xf32>
  %1 = "aten.exp"(%0) : (tensor<2x3xf32>) -> tensor<2x3xf32>
  %2 = "aten.tanh"(%1) : (tensor<2x3xf32>) -> tensor<2x3xf32>
  return %2 : tensor<2x3xf32>
}
""")
    ops = module.entry.ops
    batches = [[torch.randn(2, 3)] for _ in range(3)]
    seen = []

    def visit(v, xs):
        seen.append((ops.index(v.defining_op), len(xs)))
        if v is ops[0].result:
            return [torch.zeros_like(x) for x in xs]   # exp then sees zeros
        assert all(torch.equal(x, torch.ones(2, 3)) for x in xs)
        return None

    run_lockstep(module, PassContext(calibration=batches), [ops[0].result, ops[1].result],
                 visit, pass_name="test")
    assert seen == [(0, 3), (1, 3)]

    def boom(v, xs):
        raise SpokeshaveError("visit failed")
    with pytest.raises(SpokeshaveError, match="visit failed"):
        run_lockstep(module, PassContext(calibration=batches), [ops[1].result], boom, "test")


def test_bert_is_refused():
    model, inputs = models.tiny_bert(batch=2, seq=8)
    calib = [inputs]
    with pytest.raises(SpokeshaveError, match=r"post-LN.*SliceGPT's invariance needs a pre-LN"):
        spokeshave.compile(model, inputs, pipeline="fold-norms,slice", calibration=calib)


def test_bert_fold_norms_changes_nothing_numerically():
    model, inputs = _perturbed(models.tiny_bert)
    cm = spokeshave.compile(model, inputs, pipeline="fold-norms")
    assert models.max_rel_error(cm(*inputs), model(*inputs)) < 1e-5
    assert cm.stats["fold-norms"].get("norms folded", 0) == 0
    assert any("post-LN" in d.message for d in cm.context.diagnostics)


@pytest.mark.parametrize("fraction", ["1", "1.5", "-0.1", "nan"])
def test_fraction_out_of_range(fraction):
    with pytest.raises(PipelineError, match=r"option 'fraction' must be in \[0, 1\)"):
        spokeshave.compile(torch.nn.Linear(4, 4), torch.randn(2, 4),
                         pipeline=f"slice{{fraction={fraction}}}")


def test_slice_needs_calibration(decoder):
    _, model, inputs, _, _ = decoder
    with pytest.raises(SpokeshaveError, match="pass 'slice' needs calibration data"):
        spokeshave.compile(model, inputs, pipeline="fold-norms,slice")


def test_slice_without_fold_norms_is_refused():
    model, inputs = _perturbed(models.tiny_gpt2)
    with pytest.raises(SpokeshaveError, match="run fold-norms first"):
        spokeshave.compile(model, inputs, pipeline="slice", calibration=[inputs])
