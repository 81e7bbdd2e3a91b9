"""The torch.export frontend: errors, generic ATen ops, parameters, and the model's mode."""
from __future__ import annotations

import inspect
import os
import re

import pytest
import torch

import spokeshave
import spokeshave_models as models
from spokeshave.compiler.ir import NONE
from spokeshave.compiler.printer import print_module


def check_exact(cm: spokeshave.CompiledModel, model: torch.nn.Module, inputs: tuple) -> None:
    with torch.no_grad():
        want = models.flat_outputs(model(*inputs))
    got = models.flat_outputs(cm(*inputs))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, f"output {i}"
        assert torch.equal(g, w), f"output {i} differs by {(g.double() - w.double()).abs().max()}"


def round_trips(module: spokeshave.Module) -> str:
    text = print_module(module)
    assert print_module(spokeshave.parse(text)) == text
    return text


# ------------------------------------------------------------------ (a) untraceable models


class DataDependentBranch(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # python control flow on a tensor value: torch.export cannot trace it
            return x * 2
        return x - 1


def _line_of(cls, needle: str) -> int:
    lines, start = inspect.getsourcelines(cls.forward)
    return start + next(i for i, ln in enumerate(lines) if needle in ln)


def test_untraceable_model_raises_export_error():
    model = DataDependentBranch()
    with pytest.raises(spokeshave.ExportError) as info:
        spokeshave.compile(model, (torch.randn(4),))
    msg = str(info.value)
    # where the model lives: class and the file/line of its forward
    assert f"DataDependentBranch.forward ({os.path.abspath(__file__)}:" in msg
    # torch's reason, and the user's line that raised it
    assert re.search(r"data-dependent", msg, re.I), msg
    assert f'line {_line_of(DataDependentBranch, "if x.sum()")}' in msg, msg
    assert "if x.sum() > 0" in msg
    # short and without a stack dump
    assert "Traceback" not in msg
    assert len(msg.splitlines()) <= 20 and len(msg) < 2000, msg
    assert "TORCHDYNAMO_EXTENDED_DEBUG" not in msg  # torch's logging knobs are not the point
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value, spokeshave.SpokeshaveError)


class BadReshape(torch.nn.Module):
    def forward(self, x):
        return x.view(3, -1)


def test_export_failure_from_shapes_names_the_model():
    with pytest.raises(spokeshave.ExportError) as info:
        spokeshave.compile(BadReshape(), (torch.randn(4, 5),))
    msg = str(info.value)
    assert "BadReshape.forward" in msg and "Traceback" not in msg
    assert len(msg.splitlines()) <= 20, msg


def test_dynamic_dim_that_the_model_specializes():
    """A batch marked dynamic but fixed by the example (size 1): torch's reason shows, and the
    location is the model's own forward, not the decorator transformers wraps it in."""
    model, inputs = models.tiny_bert(batch=1, seq=8)
    with pytest.raises(spokeshave.ExportError) as info:
        spokeshave.compile(model, inputs, dynamic_shapes=models.dynamic_dims(2))
    msg = str(info.value)
    assert re.search(r"BertModel\.forward \(.*modeling_bert\.py:\d+\)", msg), msg
    assert "batch" in msg and "Traceback" not in msg


def test_not_a_module():
    with pytest.raises(spokeshave.ExportError, match="nn.Module"):
        spokeshave.compile(lambda x: x + 1, (torch.randn(2),))


# ------------------------------------------------------------------ (b) unusual ATen ops


class UnusualOps(torch.nn.Module):
    """ATen ops no pass declares: each must import generically and run through torch.ops."""

    def forward(self, x, idx):
        a = torch.cumsum(x, dim=1)
        b = torch.flip(x, dims=[0, 2])
        values, indices = torch.topk(x, 3, dim=-1)          # two results
        parts = torch.split(x, [1, 2, 1], dim=1)            # a list of results
        c = torch.cat([parts[2], parts[0], parts[1]], dim=1)  # a list operand
        d = x[:, idx]                                        # index with a None in the list
        e = x[None, :, 1:3]
        s = torch.stack(list(torch.unbind(x, 0)), dim=-1)
        m = torch.where(x > 0, x, torch.zeros_like(x)).amax(dim=-1, keepdim=True)
        g = torch.gather(x, 2, indices)
        srt, _ = torch.sort(x, dim=1, descending=True)
        return a, b, values, indices, c, d, e, s, m, g, srt, parts[1] * 2


def unusual_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 5, generator=g), torch.tensor([3, 0, 0])


def test_unusual_aten_ops_import_and_run():
    model, inputs = UnusualOps(), unusual_inputs()
    cm = spokeshave.compile(model, inputs, pipeline="")
    spokeshave.verify(cm.module, cm.weights)
    text = round_trips(cm.module)
    names = {op.name for op in cm.module.entry.ops}
    for want in ("aten.cumsum", "aten.flip", "aten.topk", "aten.cat", "aten.index.Tensor",
                 "aten.gather", "aten.sort"):
        assert want in names, f"{want} missing; got {sorted(names)}"
    assert any(n.startswith("aten.split") for n in names), sorted(names)
    assert re.search(r'%\d+:2 = "aten.topk"', text)
    assert re.search(r'%\d+:3 = "aten.split', text)
    index = next(op for op in cm.module.entry.ops if op.name == "aten.index.Tensor")
    assert [v.type for v in index.operands][1] == NONE  # x[:, idx] -> [None, idx]
    check_exact(cm, model, inputs)
    # the parsed text runs the same
    from spokeshave.compiler.interpreter import Interpreter
    parsed = spokeshave.parse(text)
    outs = Interpreter(parsed, cm.weights)(*inputs)
    for g, w in zip(outs, models.flat_outputs(cm(*inputs))):
        assert torch.equal(g, w)


@pytest.mark.parametrize("pipeline", ["canonicalize,cse,dce", "fold-constants,canonicalize,cse,dce"])
def test_unusual_ops_through_pipelines(pipeline):
    model, inputs = UnusualOps(), unusual_inputs()
    cm = spokeshave.compile(model, inputs, pipeline=pipeline)
    round_trips(cm.module)
    check_exact(cm, model, inputs)


class SymbolicSizes(torch.nn.Module):
    """Sizes computed from dynamic dims: `sym_size` and Python arithmetic on them."""

    def forward(self, x):
        b, t, c = x.shape
        y = x.reshape(b * t, c).cumsum(0)
        return y.view(b, t, c).flip(1)[:, 1:] * t  # a symbolic scalar operand


def test_symbolic_sizes_import_and_run():
    model = SymbolicSizes()
    x = torch.randn(2, 6, 3)
    dims = ({0: torch.export.Dim("b", min=2, max=16), 1: torch.export.Dim("t", min=3, max=64)},)
    cm = spokeshave.compile(model, (x,), pipeline="", dynamic_shapes=dims)
    text = round_trips(cm.module)
    assert "tensor<?x?x3xf32>" in text
    assert "aten.sym_size.int" in text
    for shape in [(2, 6, 3), (5, 9, 3), (3, 3, 3)]:
        x = torch.randn(*shape)
        check_exact(cm, model, (x,))


# ------------------------------------------------------------------ (c) parameters


class WithParams(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 4))
        self.register_buffer("unused", torch.zeros(3))

    def forward(self, x):
        return self.norm(self.fc(x)) * self.scale


def test_parameters_are_tagged_arguments_with_weights():
    model = WithParams().eval()
    x = torch.randn(2, 8)
    cm = spokeshave.compile(model, (x,), pipeline="")
    f = cm.module.entry
    assert [v.name_hint for v in f.user_inputs()] == ["x"]
    params = f.params()
    used = {"fc.weight", "fc.bias", "norm.weight", "norm.bias", "scale"}
    assert used <= set(params)
    assert set(params) <= set(model.state_dict())
    state = model.state_dict()
    for name, arg in params.items():
        assert name in cm.weights
        w = cm.weights[name]
        assert torch.equal(w, state[name])
        assert tuple(w.shape) == arg.type.shape and str(arg.type.torch_dtype) == str(w.dtype)
        assert not w.requires_grad
    text = round_trips(cm.module)
    for name in used:
        assert f'{{spk.param = "{name}"}}' in text
    # parameters are function arguments: after the user inputs, none holds data in the text
    assert f.args[0] is f.user_inputs()[0]
    assert "dense<" not in text
    check_exact(cm, model, (x,))


def test_parameters_of_a_transformer_with_tied_weights():
    model, inputs = models.tiny_gpt2()
    cm = spokeshave.compile(model, inputs)
    state = model.state_dict()
    params = cm.module.entry.params()
    assert len(params) > 10
    for name in params:
        assert name in state, name
        assert torch.equal(cm.weights[name], state[name])
    # the text holds no weight data: it stays small however big the weights are
    assert len(print_module(cm.module)) < 200 * len(cm.module.entry.ops) + 200 * len(params)


# ------------------------------------------------------------------ (d) train/eval mode


class WithDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.bn = torch.nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.drop(self.fc(x)))


def _modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_mode_is_restored_and_graph_is_inference(mode):
    model = WithDropout()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    if mode == "train":
        model.train()
    elif mode == "eval":
        model.eval()
    else:  # fine-tuning with frozen batch norm: the parent trains, one child does not
        model.train()
        model.bn.eval()
    before = _modes(model)
    bn_state = {k: v.clone() for k, v in model.bn.state_dict().items()}
    x = torch.randn(4, 8)
    cm = spokeshave.compile(model, (x,))
    assert _modes(model) == before
    # compiled for inference: no dropout, batch norm on running statistics, state untouched
    assert not any("dropout" in op.name for op in cm.module.entry.ops)
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, bn_state[k]), k
    model.eval()
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(cm(x), want, rtol=1e-6, atol=1e-6)


def test_mode_is_restored_when_export_fails():
    model = DataDependentBranch().train()
    with pytest.raises(spokeshave.ExportError):
        spokeshave.compile(model, (torch.randn(4),))
    assert model.training


# ------------------------------------------------------------------ value semantics


class TransposeContiguousView(torch.nn.Module):
    def forward(self, x):
        y = x.transpose(1, 2).contiguous()  # canonicalize drops the copy (same type, same values)
        return y.view(y.shape[0], -1)        # so view sees a transposed layout


def test_view_after_a_dropped_contiguous_runs():
    """The IR has value semantics (types carry no strides): the reference backend must run a
    view whatever layout its operand happens to have (Llama's attention hits this)."""
    model, x = TransposeContiguousView(), torch.randn(2, 3, 4)
    cm = spokeshave.compile(model, (x,), pipeline="canonicalize,cse,dce")
    names = [op.name for op in cm.module.entry.ops]
    assert "aten.clone" not in names and "aten.view" in names, names
    check_exact(cm, model, (x,))
