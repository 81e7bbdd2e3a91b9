"""`gqa-attention` on a real export (a random-weight Llama with 4 query and 2 key/value heads)
and the claim it rests on: torch's CPU attention gives the same bits with `enable_gqa` as on
the repeated keys and values."""
from __future__ import annotations

import pytest
import torch

import spokeshave
from spokeshave.compiler.printer import print_module


def _first(y):
    return y[0] if isinstance(y, (list, tuple)) else y


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_a_llama_export_attends_with_enable_gqa_bit_for_bit(backend):
    import spokeshave_models as models
    model, example = models.tiny_llama()
    dims = ({0: torch.export.Dim("b", max=8), 1: torch.export.Dim("s", max=64)},)
    imported = spokeshave.import_model(model, example, dynamic_shapes=dims)
    plain = spokeshave.compile_module(imported, pipeline="canonicalize,cse,dce", backend=backend)
    gqa = spokeshave.compile_module(imported, pipeline="canonicalize,cse,dce,gqa-attention",
                                    backend=backend)
    text = print_module(gqa.module)
    assert text.count("enable_gqa = true") == 2   # both layers
    assert text.count('"aten.expand"') == print_module(plain.module).count('"aten.expand"') - 4
    for ids in (example[0], example[0][:1, :3]):   # batch 2 x 8 (a padded row), 1 x 3
        assert torch.equal(_first(gqa(ids)), _first(plain(ids)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq,batch,masked", [(1, 1, False), (1, 1, True), (64, 4, True), (37, 2, False)])
def test_torch_cpu_attention_is_the_same_with_enable_gqa(seq, batch, masked, dtype):
    torch.manual_seed(0)
    q = torch.randn(batch, 9, seq, 64, dtype=dtype)
    k, v = (torch.randn(batch, 3, seq, 64, dtype=dtype) for _ in range(2))
    mask = torch.ones(batch, 1, seq, seq, dtype=torch.bool).tril() if masked else None

    def repeat(t):
        return t[:, :, None].expand(batch, 3, 3, seq, 64).reshape(batch, 9, seq, 64)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    want = sdpa(q, repeat(k), repeat(v), attn_mask=mask, is_causal=not masked and seq > 1, scale=0.125)
    got = sdpa(q, k, v, attn_mask=mask, is_causal=not masked and seq > 1, scale=0.125, enable_gqa=True)
    assert torch.equal(got, want)
