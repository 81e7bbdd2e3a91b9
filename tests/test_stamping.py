"""Layer stamping (`compiler.stamping`): a deep stack is exported cut to 4 layers and stamped
to its depth, giving exactly the whole export's IR and weights; a model whose layers are not
alike (by settings, by wiring, or only in what they compute) is exported whole."""
from __future__ import annotations

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.compiler.printer import print_module
from spokeshave.compiler import stamping
from spokeshave.compiler.stamping import MIN_LAYERS, find_layer_stack


def _text(imported) -> str:
    return print_module(imported.module, debug_info=True)


def _both(model, inputs, dynamic_shapes=None):
    stamped = spokeshave.import_model(model, inputs, dynamic_shapes=dynamic_shapes)
    whole = spokeshave.import_model(model, inputs, dynamic_shapes=dynamic_shapes, stamp_layers=False)
    return stamped, whole


@pytest.mark.parametrize("family,dynamic", [("llama", True), ("gpt2", False)])
def test_a_deep_decoder_stamps_to_exactly_the_whole_export(family, dynamic, monkeypatch):
    # 6 layers (2 stamped) check what 30 would, at a fifth of the whole export's time
    monkeypatch.setattr(stamping, "MIN_LAYERS", 6)
    if family == "llama":
        lm, x = models._tiny_causal_lm("LlamaConfig", "LlamaForCausalLM", 2, 8, 0,
                                       num_hidden_layers=6, hidden_size=32,
                                       intermediate_size=64, num_attention_heads=4,
                                       num_key_value_heads=2, max_position_embeddings=64)
    else:
        lm, x = models._tiny_causal_lm("GPT2Config", "GPT2LMHeadModel", 2, 8, 0, n_layer=6,
                                       n_embd=32, n_head=4, n_positions=64)
    stamped, whole = _both(lm, x, models.dynamic_dims(1) if dynamic else None)
    assert stamped.notes and "exported 4 of the 6 layers" in stamped.notes[0], stamped.notes
    assert not whole.notes
    assert _text(stamped) == _text(whole)
    assert list(stamped.weights) == list(whole.weights)
    assert all(torch.equal(stamped.weights[n], whole.weights[n]) for n in whole.weights)
    assert (stamped.in_spec, stamped.out_spec, stamped.inputs) == (whole.in_spec, whole.out_spec,
                                                                   whole.inputs)
    y = spokeshave.compile_module(stamped)(*x)
    torch.testing.assert_close(y, lm(*x), rtol=1e-5, atol=1e-5)
    assert len(find_layer_stack(lm).layers) == 6  # the model has its layers back


class Block(torch.nn.Module):
    def __init__(self, width: int, index: int, scale: float = 1.0, odd_relu: bool = False):
        super().__init__()
        self.layer_idx, self.scale, self.odd_relu = index, scale, odd_relu
        self.up = torch.nn.Linear(width, 2 * width)
        self.down = torch.nn.Linear(2 * width, width)

    def forward(self, x):
        h = self.up(x)
        h = h.relu() if self.odd_relu and self.layer_idx % 2 else torch.nn.functional.gelu(h)
        return x + self.scale * self.down(h)


class Stack(torch.nn.Module):
    """`kind` makes layers differ: "alike" (they do not), "setting" (layer 7's scale),
    "index" (odd layers use relu: visible from layer 3 on), "late" (the parent doubles layer
    9's output: only the outputs show it)."""

    def __init__(self, kind: str, n: int = MIN_LAYERS, width: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.layers = torch.nn.ModuleList(
            Block(width, i, scale=2.0 if kind == "setting" and i == 7 else 1.0,
                  odd_relu=kind == "index") for i in range(n))
        self.head = torch.nn.Linear(width, 4)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.kind == "late" and i == 9:
                x = 2 * x
        return self.head(x)


@pytest.mark.parametrize("kind,stamped", [("alike", True), ("setting", False), ("index", False),
                                          ("late", False)])
def test_layers_that_are_not_alike_are_exported_whole(kind, stamped):
    model = Stack(kind).eval()
    x = torch.randn(3, 16)
    got, whole = _both(model, (x,))
    assert got.notes == ([f"exported 4 of the {MIN_LAYERS} layers of layers and stamped the rest"]
                         if stamped else [])
    assert (find_layer_stack(model) is None) == (kind == "setting")
    assert _text(got) == _text(whole)
    torch.testing.assert_close(spokeshave.compile_module(got)(x), model(x))


def test_a_shallow_stack_is_exported_whole():
    model = Stack("alike", n=MIN_LAYERS - 1).eval()
    assert find_layer_stack(model) is None
    assert not spokeshave.import_model(model, (torch.randn(3, 16),)).notes


@pytest.mark.parametrize("change", ["hook", "shared weight", "tensor attribute", "none"])
def test_hooks_shared_tensors_and_differing_tensors_rule_stamping_out(change):
    model = Stack("alike").eval()
    layer = model.layers[5]
    if change == "hook":
        layer.down.register_forward_hook(lambda m, i, o: o)
    elif change == "shared weight":
        layer.up.weight = model.layers[4].up.weight
    elif change == "tensor attribute":  # an unregistered tensor the forward might read
        for i, b in enumerate(model.layers):
            b.table = torch.full((2,), float(i == 5))
    assert (find_layer_stack(model) is None) == (change != "none")
