"""The Triton backend on the real models under `TRITON_INTERPRET=1`: all-MiniLM-L6-v2 and
SmolLM2-135M, each cut to its first two layers (the interpreter runs a tile step in about a
millisecond, so whole models would take minutes), real weights.

Tolerances, against the reference backend running the same compiled module:

* fp32 (`fuse`) and weight-only pipelines (w4g): max|triton - ref| <= 1e-4 * max|ref|. The
  weights decode exactly; what differs is the order of float sums (tiles, tree
  reductions) and Triton's exp/erf, a few float32 ulps per op.
* w8a8 (smooth + per-token int8 activations): the GEMM and the prologue's quantization are
  bit-exact on the same float input (`test_triton.py`), but the float rows feeding them
  differ by ulps, and a value within an ulp of a rounding boundary takes the neighbouring
  int8 code; one code is 1/127 of its row's range, carried through later layers. So the
  bar is cosine >= 0.9999 and max|triton - ref| <= 2e-2 * max|ref| (the CPU backend differs
  from the reference by the same 0.9% on MiniLM, for the same reason).
"""
from __future__ import annotations

import warnings

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.backends.triton.runtime import TritonBackendWarning
from spokeshave.checkpoints import CausalLMLogits

pytestmark = pytest.mark.slow

FLOAT = 1e-4


def _compare(imported, inputs, pipeline: str, calibration=None):
    tri = spokeshave.compile_module(imported, pipeline=pipeline, backend="triton",
                                    calibration=calibration)
    ref = spokeshave.compile_module(imported, pipeline=pipeline, backend="reference",
                                    calibration=calibration)
    assert tri.target.arch == "interpreter"
    kinds = {k.name.split("_")[1] for k in tri.executable.kernels if k.name.startswith("spk_")}
    assert {"gemm", "rows"} <= kinds, kinds
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonBackendWarning)  # a fallback would hide a bug
        got = models.flat_outputs(tri(*inputs))[0]
    want = models.flat_outputs(ref(*inputs))[0]
    err = float((got - want).abs().max() / want.abs().max())
    cos = float(torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0))
    return err, cos


@pytest.fixture(scope="module")
def minilm_cut(minilm, minilm_inputs):
    model, _ = minilm
    ids, mask = minilm_inputs
    inputs = (ids[:2, :12], mask[:2, :12])
    return spokeshave.import_model(models.first_layers(model, 2), inputs), inputs


@pytest.fixture(scope="module")
def smollm2_cut(smollm2):
    model = CausalLMLogits(models.first_layers(smollm2.lm, 2)).eval()
    ids = models.token_ids(1, 8, smollm2.lm.config.vocab_size, seed=0)
    return spokeshave.import_model(model, (ids,)), (ids,)


@pytest.mark.parametrize("pipeline", ["fuse", "quantize{scheme=w4g group=32},fuse"])
def test_minilm_float_and_weight_only(interpret, minilm_cut, pipeline):
    imported, inputs = minilm_cut
    err, _ = _compare(imported, inputs, pipeline)
    assert err <= FLOAT, (pipeline, err)


def test_minilm_w8a8_with_the_prologue(interpret, minilm_cut):
    imported, inputs = minilm_cut
    err, cos = _compare(imported, inputs, "smooth{alpha=0.75},quantize{scheme=w8a8},fuse",
                        calibration=[inputs])
    assert cos >= 0.9999 and err <= 2e-2, (err, cos)


@pytest.mark.parametrize("pipeline", ["fuse", "quantize{scheme=w4g group=64 skip=*lm_head},fuse"])
def test_smollm2_float_and_weight_only(interpret, smollm2_cut, pipeline):
    """The int4 lm_head (49152 x 576) alone would be 3456 interpreted tile steps: skipped."""
    imported, inputs = smollm2_cut
    err, _ = _compare(imported, inputs, pipeline)
    assert err <= FLOAT, (pipeline, err)
