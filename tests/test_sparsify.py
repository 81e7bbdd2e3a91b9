"""`sparsify{pattern=2:4 method=magnitude|wanda|sparsegpt}`: the compressed 2:4 format, the
pass's rewrite, and differential tests on random small models through the reference backend."""
from __future__ import annotations

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.compiler import PipelineError, SpokeshaveError, VerifyError
from spokeshave.compiler.numerics.sparse import compress_24, decompress_24, is_24_sparse, mask_topk_24, meta_cols

# ------------------------------------------------------------------ the compressed format


def _random_24(n: int, k: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    return (w * mask_topk_24(torch.rand(n, k, generator=g))).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [4, 12, 64])
def test_compress_decompress_round_trip_is_exact(dtype, k):
    w = _random_24(6, k, dtype)
    values, meta = compress_24(w)
    assert values.shape == (6, k // 2) and values.dtype == dtype
    assert meta.shape == (6, meta_cols(k)) and meta.dtype == torch.uint8
    assert torch.equal(decompress_24(values, meta), w)


def test_round_trip_with_fewer_than_two_nonzeros_per_group():
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0],
                      [-1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, -5.0]])
    assert torch.equal(decompress_24(*compress_24(w)), w)


def test_meta_layout():
    """Positions (i0, i1) as the nibble i0 | i1 << 2; group 2j low nibble, 2j+1 high."""
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]])
    values, meta = compress_24(w)
    assert values.tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]
    assert meta.tolist() == [[(0 | 2 << 2) | (2 | 3 << 2) << 4, 0 | 1 << 2]]


def test_compress_with_mask_prunes_exactly_two_of_four():
    w = torch.randn(16, 32)
    mask = mask_topk_24(w.abs())
    dense = decompress_24(*compress_24(w, mask))
    assert torch.equal(dense, w * mask)
    zeros = (dense.reshape(16, 8, 4) == 0).sum(-1)
    assert bool((zeros == 2).all())
    kept = w.abs().reshape(16, 8, 4).sort(-1).values[..., 2:]
    assert torch.equal(dense.abs().reshape(16, 8, 4).sort(-1).values[..., 2:], kept)


def test_compress_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible by 4"):
        compress_24(torch.randn(4, 6))
    with pytest.raises(ValueError, match="not 2:4-sparse"):
        compress_24(torch.randn(4, 8))


def test_verifier_checks_the_op():
    text = """func.func @forward(%x: tensor<2x8xf32>, %v: tensor<4x4xf32> {spk.param = "v"},
                   %m: tensor<4x2xui8> {spk.param = "m"}) -> tensor<2x4xf32> {
  %0 = "spk.linear_sparse24"(%x, %v, %m) : (tensor<2x8xf32>, tensor<4x4xf32>, tensor<4x2xui8>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}
"""
    with pytest.raises(VerifyError, match=r"meta must be tensor<4x1xui8>"):
        spokeshave.verify(spokeshave.parse(text))
    spokeshave.verify(spokeshave.parse(text.replace("4x2xui8", "4x1xui8")))


# ------------------------------------------------------------------ models


class MLP(torch.nn.Module):
    def __init__(self, k_in: int = 64):
        super().__init__()
        self.up = torch.nn.Linear(k_in, 128)
        self.down = torch.nn.Linear(128, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def _outlier_batch(seed: int, scale: torch.Tensor) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(16, scale.numel(), generator=g) * scale,)


@pytest.fixture(scope="module")
def mlp_case():
    """An MLP whose inputs have a few outlier channels (20x), with calibration batches."""
    torch.manual_seed(0)
    model = MLP().eval()
    scale = torch.ones(64)
    scale[torch.randperm(64, generator=torch.Generator().manual_seed(1))[:6]] = 20.0
    calib = [_outlier_batch(s, scale) for s in range(8)]
    return model, _outlier_batch(100, scale), calib


def _rel_mse(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(((got - want) ** 2).mean() / (want ** 2).mean())


@pytest.fixture(scope="module")
def mlp_compiled(mlp_case):
    model, (x,), calib = mlp_case
    return {m: spokeshave.compile(model, (x,), pipeline=f"sparsify{{pattern=2:4 method={m}}}",
                                calibration=calib)
            for m in ("magnitude", "wanda", "sparsegpt")}


def _decompressed(cm, layer: str) -> torch.Tensor:
    return decompress_24(cm.weights[f"{layer}.sparse_values"], cm.weights[f"{layer}.sparse_meta"])


def test_mlp_rewrite_and_storage(mlp_compiled):
    cm = mlp_compiled["magnitude"]
    names = [op.name for op in cm.module.walk()]
    assert names.count("spk.linear_sparse24") == 2 and "aten.linear" not in names
    assert "up.weight" not in cm.weights and "down.weight" not in cm.weights
    assert cm.weights["up.sparse_values"].shape == (128, 32)
    assert cm.weights["up.sparse_meta"].shape == (128, 8)
    assert cm.weights["up.sparse_meta"].dtype == torch.uint8
    assert cm.stats["sparsify"]["layers pruned (magnitude)"] == 2


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_mlp_exactly_two_of_four_and_reference_matches_dense(mlp_case, mlp_compiled, method):
    model, (x,), _ = mlp_case
    cm = mlp_compiled[method]
    dense = {}
    for layer in ("up", "down"):
        w = _decompressed(cm, layer)
        assert is_24_sparse(w)
        assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all())
        if method != "sparsegpt":  # kept weights are the original ones
            orig = getattr(model, layer).weight.detach()
            assert torch.equal(w[w != 0], orig[w != 0])
        dense[layer] = w
    # "load compressed, compute dense": the reference backend equals eager with the
    # decompressed weights
    h = torch.relu(torch.nn.functional.linear(x, dense["up"], model.up.bias))
    want = torch.nn.functional.linear(h, dense["down"], model.down.bias)
    torch.testing.assert_close(cm(x), want, rtol=1e-5, atol=1e-5)


def test_mlp_wanda_and_sparsegpt_beat_magnitude(mlp_case, mlp_compiled):
    model, (x,), _ = mlp_case
    with torch.no_grad():
        ref = model(x)
    err = {m: _rel_mse(cm(x), ref) for m, cm in mlp_compiled.items()}
    assert err["wanda"] < 0.75 * err["magnitude"], err
    assert err["sparsegpt"] < 0.25 * err["magnitude"], err
    report = [e for e in mlp_compiled["sparsegpt"].context.report if e.pass_name == "sparsify"]
    assert {e.layer for e in report} == {"up", "down"}
    assert all(e.status == "sparsified" and e.sparsity == 0.5 and 0 < e.rel_err < 1
               for e in report)


def test_mlp_sequential_remeasures_inputs_after_pruning(mlp_case, mlp_compiled):
    """sequential=true: the second layer's input is measured on the model with the first
    layer already pruned (one extra calibration run, stopped at that input)."""
    model, (x,), calib = mlp_case
    cm = spokeshave.compile(model, (x,), pipeline="sparsify{method=sparsegpt sequential=true}",
                          calibration=calib)
    assert cm.stats["sparsify"]["calibration re-runs (sequential)"] == 1
    assert torch.equal(cm.weights["up.sparse_values"],
                       mlp_compiled["sparsegpt"].weights["up.sparse_values"])
    assert not torch.equal(cm.weights["down.sparse_values"],
                           mlp_compiled["sparsegpt"].weights["down.sparse_values"])
    with torch.no_grad():
        ref = model(x)
    assert _rel_mse(cm(x), ref) < 0.25 * _rel_mse(mlp_compiled["magnitude"](x), ref)


@pytest.fixture(scope="module")
def llama_case():
    """A tiny Llama whose RMSNorm scales create outlier input channels for q/k/v and MLP."""
    model, (ids,) = models.tiny_llama(batch=2, seq=16)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.lm.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[torch.randperm(64, generator=g)[:4]] = 15.0
    calib = [(models.token_ids(2, 16, 128, seed=s),) for s in range(1, 9)]
    with torch.no_grad():
        ref = model(ids)
    return model, ids, calib, ref


@pytest.fixture(scope="module")
def llama_compiled(llama_case):
    model, ids, calib, _ = llama_case
    return {m: spokeshave.compile(model, (ids,), pipeline=f"sparsify{{method={m}}}", calibration=calib)
            for m in ("magnitude", "wanda", "sparsegpt")}


def test_llama_all_linears_pruned_two_of_four(llama_case, llama_compiled):
    model = llama_case[0]
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    for cm in llama_compiled.values():
        assert [op.name for op in cm.module.walk()].count("spk.linear_sparse24") == n_linear
        layers = [n[: -len(".sparse_values")] for n in cm.weights if n.endswith(".sparse_values")]
        assert len(layers) == n_linear
        for layer in layers:
            w = _decompressed(cm, layer)
            assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2).all())


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_llama_beats_magnitude(llama_case, llama_compiled, method):
    ids, ref = llama_case[1], llama_case[3]
    err = {m: _rel_mse(llama_compiled[m](ids), ref) for m in ("magnitude", method)}
    assert err[method] < 0.7 * err["magnitude"], err


# ------------------------------------------------------------------ options and bad input


def test_layers_and_skip_globs(mlp_case):
    model, (x,), _ = mlp_case
    cm = spokeshave.compile(model, (x,), pipeline='sparsify{layers="up|down" skip=d*}')
    assert "up.sparse_values" in cm.weights and "down.weight" in cm.weights
    assert "down.sparse_values" not in cm.weights
    assert [op.name for op in cm.module.walk()].count("aten.linear") == 1


def test_bad_pattern_is_a_clear_error():
    with pytest.raises(PipelineError, match=r"option 'pattern' must be one of 2:4.*got '4:8'"):
        spokeshave.parse_pipeline("sparsify{pattern=4:8}")
    with pytest.raises(PipelineError, match=r"'method' must be one of magnitude, wanda, sparsegpt"):
        spokeshave.parse_pipeline("sparsify{method=obs}")


def test_in_features_not_divisible_by_4_is_skipped_and_reported():
    torch.manual_seed(0)
    model = MLP(k_in=6).eval()
    x = torch.randn(4, 6)
    cm = spokeshave.compile(model, (x,), pipeline="sparsify")
    assert "up.weight" in cm.weights and "down.sparse_values" in cm.weights
    assert any("'up'" in d.message and "in-features 6 not divisible by 4" in d.message
               and d.loc is not None for d in cm.context.diagnostics)
    assert cm.stats["sparsify"]["layers skipped (in-features not divisible by 4)"] == 1
    skipped = [e for e in cm.context.report if e.status == "skipped"]
    assert [e.layer for e in skipped] == ["up"]
    with torch.no_grad():
        h = torch.relu(model.up(x))
    want = torch.nn.functional.linear(h, _decompressed(cm, "down"), model.down.bias)
    torch.testing.assert_close(cm(x), want, rtol=1e-5, atol=1e-5)


class TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(32, 16)
        self.proj = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 32, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(self.emb(ids))))


def test_tied_head_stays_dense_and_is_reported():
    torch.manual_seed(0)
    model = TiedLM().eval()
    ids = torch.randint(0, 32, (2, 5))
    cm = spokeshave.compile(model, (ids,), pipeline="sparsify")
    names = [op.name for op in cm.module.walk()]
    assert names.count("spk.linear_sparse24") == 1 and names.count("aten.linear") == 1
    assert cm.stats["sparsify"]["layers skipped (tied weight)"] == 1
    assert any("tied" in d.message for d in cm.context.diagnostics)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibrated_methods_without_calibration_name_the_pass(mlp_case, method):
    model, (x,), _ = mlp_case
    with pytest.raises(SpokeshaveError, match=rf"pass 'sparsify\{{method={method}\}}' needs "
                                              rf"calibration data"):
        spokeshave.compile(model, (x,), pipeline=f"sparsify{{method={method}}}")
