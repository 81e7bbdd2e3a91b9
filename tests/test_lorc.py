"""`lorc{rank whiten}`: low-rank compensation of compressed linears (ZeroQuant-V2 LoRC, and
its activation-whitened variant), the factorisation it rests on, and differential tests on
random models through the reference backend."""
from __future__ import annotations

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.compiler import PipelineError
from spokeshave.compiler.weights import WeightStore
from spokeshave_models import Correlated, rel_err
from spokeshave.passes.lorc import low_rank_factors


@pytest.fixture
def mlp(mlp_case, mlp_compile):
    """`mlp(pipeline)`: the MLP compiled with its calibration batches, on the export its
    tests share."""
    cal = mlp_case[3]
    return lambda pipeline: mlp_compile(pipeline, calibration=cal)


# ------------------------------------------------------------------ the factorisation


def test_plain_factors_are_the_truncated_svd():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(40, 24, generator=g, dtype=torch.float64)
    a, b = low_rank_factors(e, 5)
    assert a.shape == (40, 5) and b.shape == (5, 24)
    s = torch.linalg.svdvals(e)
    # Eckart-Young: the residual is exactly the energy of the dropped singular values.
    assert torch.allclose(((e - a @ b) ** 2).sum(), (s[5:] ** 2).sum())


def test_whitened_factors_minimise_the_output_error():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(32, 48, generator=g, dtype=torch.float64)
    x = Correlated(48, seed=3)(512).double()
    h = x.T @ x / x.shape[0]

    def out_err(a, b):
        d = e - a @ b
        return float(((d @ h) * d).sum())

    plain, white = low_rank_factors(e, 6), low_rank_factors(e, 6, h, percdamp=1e-6)
    assert out_err(*white) < 0.8 * out_err(*plain)
    # ...at the price of a larger weight error: it spends its rank where the inputs are.
    assert ((e - white[0] @ white[1]) ** 2).sum() > ((e - plain[0] @ plain[1]) ** 2).sum()
    # No rank-6 perturbation of the whitened answer does better on the objective.
    for seed in range(5):
        d = 1e-3 * torch.randn(6, 48, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert out_err(white[0], white[1] + d) >= out_err(*white) - 1e-9


# ------------------------------------------------------------------ the pass on models


def test_correction_reduces_error_and_whitening_more(mlp, mlp_case):
    _, x, ref, _ = mlp_case
    errs = {p: rel_err(mlp(p)(x), ref) for p in (
        "quantize{scheme=w4g group=32}",
        "quantize{scheme=w4g group=32},lorc{rank=8}",
        "quantize{scheme=w4g group=32},lorc{rank=8 whiten=true}",
        "quantize{scheme=w4g group=32},lorc{rank=32 whiten=true}")}
    e = list(errs.values())
    assert e[0] > e[1] > e[2] > e[3], errs
    assert e[2] < 0.5 * e[0], errs


@pytest.mark.parametrize("first", ["quantize{scheme=w8}", "quantize{scheme=fp8}",
                                   "quantize{scheme=w4g group=64 symmetric=false method=gptq}",
                                   "quantize{scheme=w8a8}", "sparsify{pattern=2:4 method=wanda}"])
def test_every_compressed_format_is_compensated(mlp, mlp_case, first):
    _, x, ref, _ = mlp_case
    base = mlp(first)
    cm = mlp(first + ",lorc{rank=16 whiten=true}")
    assert rel_err(cm(x), ref) < rel_err(base(x), ref)
    entries = [e for e in cm.report.layers if e.pass_name == "lorc"]
    assert [e.layer for e in entries] == ["up", "down"]
    for e in entries:
        assert e.status == "compensated" and e.rel_err < e.details["rel_err_before"]
    up = next(e for e in cm.report.layers if e.layer == "up" and e.pass_name != "lorc")
    lorc_up = entries[0]
    # factors are f32: 16 * (128 + 256) * 32 bits over 256 * 128 weights
    assert lorc_up.bits_per_weight == pytest.approx(up.bits_per_weight + 16 * 384 * 32 / (256 * 128))


def test_high_rank_whitened_correction_restores_fp32(mlp, mlp_case):
    """A high rank (40 of 128 for `up`, 40 of 256 for `down`) brings int4 back near fp32 on
    the calibration distribution."""
    _, x, ref, _ = mlp_case
    cm = mlp("quantize{scheme=w4g group=32},lorc{rank=40 whiten=true}")
    assert rel_err(cm(x), ref) < 1e-3


def test_originals_are_dropped_after_compile_and_never_saved(mlp, mlp_case, mlp_compile, tmp_path):
    cm = mlp("quantize{scheme=w8},lorc{rank=4}")
    assert "up.weight" not in cm.weights and cm.weights.original_of("up.qweight") is None
    # during a compile whose pipeline reads it (lorc) it was there, under its own name; a
    # pipeline without lorc drops it at once (holding it doubles the weight memory)
    from spokeshave.compiler.passmanager import PassContext, run_pipeline

    m = mlp_case[0]
    for pipeline, kept in (("quantize{scheme=w8},lorc{rank=4}", True), ("quantize{scheme=w8}", False)):
        imported = mlp_compile("")
        ctx = PassContext(weights=WeightStore(dict(imported.weights.items())))
        run_pipeline(imported.module, pipeline, ctx)
        found = ctx.weights.original_of("up.qweight")
        assert (found is not None) == kept, pipeline
        if kept:
            assert found[0] == "up.weight" and torch.equal(found[1], m.up.weight.detach())
    path = str(tmp_path / "w.safetensors")
    cm.weights.save(path)
    assert sorted(WeightStore.load(path)) == sorted(cm.weights)


def test_without_the_float_original_the_layer_is_skipped_and_reported(mlp):
    """IR compressed in another compile (here: printed and parsed back) has no float weight
    to measure the error against: lorc says so instead of guessing."""
    from spokeshave.compiler.passmanager import PassContext, run_pipeline

    cm = mlp("quantize{scheme=w8}")
    module = spokeshave.parse(cm.ir)
    ctx = PassContext(weights=WeightStore(dict(cm.weights.items())))
    run_pipeline(module, "lorc{rank=4}", ctx)
    assert not any(op.name == "aten.add.Tensor" for op in module.entry.ops)
    skipped = [e for e in ctx.report if e.pass_name == "lorc"]
    assert [e.status for e in skipped] == ["skipped", "skipped"]
    assert "same compile" in skipped[0].reason
    assert any("lorc: skipped layer 'up'" in d.message for d in ctx.diagnostics)


@pytest.mark.parametrize("pipeline, message", [
    ("quantize,lorc{rank=0}", "option 'rank' must be a positive integer; got 0"),
    ("quantize,lorc{percdamp=2}", "option 'percdamp' must be in (0, 1]"),
    ("quantize,lorc{rank=x}", "option 'rank'"),
])
def test_bad_options(mlp, pipeline, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        mlp(pipeline)


def test_whiten_needs_calibration(mlp_case):
    m, x, _, _ = mlp_case
    with pytest.raises(PipelineError, match=r"pass 'lorc\{whiten=true\}' needs calibration data"):
        spokeshave.compile(m, (x,), pipeline="quantize,lorc{whiten=true}")


def test_tiny_llama_int4_with_lorc():
    """On a random Llama (every linear: q k v o gate up down, and the lm head) the
    correction verifies, runs, and brings the logits closer to fp32."""
    model, (ids,) = models.tiny_llama(batch=2, seq=16)
    cal = [(models.token_ids(2, 16, 128, seed=s),) for s in range(1, 5)]
    with torch.no_grad():
        ref = model(ids)
    errs, compile_ = [], models.OneExport(model, (ids,))
    for p in ("quantize{scheme=w4g group=16}", "quantize{scheme=w4g group=16},lorc{rank=4 whiten=true}"):
        cm = compile_(p, calibration=cal)
        errs.append(rel_err(cm(ids), ref))
    assert errs[1] < errs[0], errs
