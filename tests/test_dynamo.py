"""`torch.compile(model, backend="spokeshave")` (`spokeshave/dynamo.py`): found through the
entry point, exact with the fp32 pipeline, one compile for many sizes, calibration through
the captured graph, graph breaks, bad options, and training graphs left to inductor."""
from __future__ import annotations

import importlib.metadata

import pytest
import torch

from spokeshave import dynamo
from spokeshave_models import max_rel_error, tiny_bert, token_ids

SEQS = (8, 9, 11, 16, 23)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _batch(seq: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 2:] = 0
    return token_ids(batch, seq, 128, seq), mask


def _new_graphs(before: int) -> list[dynamo.GraphRecord]:
    return dynamo.graphs()[before:]


def test_the_backend_is_registered_by_entry_point():
    names = {e.name for e in importlib.metadata.entry_points(group="torch_dynamo_backends")}
    assert "spokeshave" in names
    assert "spokeshave" in torch._dynamo.list_backends(exclude_tags=())


@pytest.mark.parametrize("dynamic", [None, True])
def test_fp32_matches_eager_and_five_lengths_cost_one_compile(dynamic):
    model, _ = tiny_bert()
    before = len(dynamo.graphs())
    compiled = torch.compile(model, backend="spokeshave", dynamic=dynamic,
                             options={"backend": "cpu"})
    with torch.no_grad():
        for seq in SEQS:
            x = _batch(seq)
            got, want = compiled(*x), model(*x)
            assert max_rel_error(got.last_hidden_state, want.last_hidden_state) < 1e-5
    new = _new_graphs(before)
    assert [g.status for g in new].count("compiled") == 1, dynamo.report()
    # Dynamo's automatic-dynamic retrace (dynamic=None) leaves the static graph uncompiled
    assert len(new) == (2 if dynamic is None else 1)
    (done,) = [g for g in new if g.status == "compiled"]
    assert done.compiled.backend == "cpu" and done.weights == 41
    assert done.user_inputs == ["args[0]", "args[1]"]


def test_calibration_records_the_first_calls_then_compiles_the_pipeline():
    model, _ = tiny_bert()
    before = len(dynamo.graphs())
    compiled = torch.compile(model, backend="spokeshave", dynamic=True,
                             options={"pipeline": "quantize{scheme=w8a8}", "calibration": 3,
                                      "backend": "reference"})
    with torch.no_grad():
        for i, seq in enumerate(SEQS):
            x = _batch(seq)
            got, want = compiled(*x).last_hidden_state, model(*x).last_hidden_state
            (g,) = _new_graphs(before)
            if i < 3:  # recorded: the captured graph runs as it is
                assert g.status == "waiting" and torch.equal(got, want)
            else:
                assert g.status == "compiled" and not torch.equal(got, want)
                assert max_rel_error(got, want) < 0.1
    assert "spk.linear_w8a8" in str(g.compiled.module)
    report = g.compiled.report  # per layer, and end to end on the recorded calls
    assert report.layers and report.end_to_end.batches == 3


class _WithBreak(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.a(x))
        torch._dynamo.graph_break()
        return self.b(h)


def test_each_graph_of_a_graph_break_compiles_on_its_own():
    model = _WithBreak().eval()
    before = len(dynamo.graphs())
    compiled = torch.compile(model, backend="spokeshave", dynamic=True,
                             options={"backend": "reference"})
    with torch.no_grad():
        for rows in (3, 5):
            x = torch.randn(rows, 16)
            assert max_rel_error(compiled(x), model(x)) < 1e-6
    new = _new_graphs(before)
    assert [g.status for g in new] == ["compiled", "compiled"], dynamo.report()
    assert {g.weights for g in new} == {2}
    assert f"graph {new[1].index}: compiled" in dynamo.report()


def test_an_unknown_option_lists_the_valid_ones():
    model, (ids, mask) = tiny_bert()
    compiled = torch.compile(model, backend="spokeshave", options={"pipline": "fuse"})
    with pytest.raises(Exception, match=r"unknown option\(s\) 'pipline'; valid options are "
                                        r"pipeline: .*backend: .*calibration: .*verify: "):
        with torch.no_grad():
            compiled(ids, mask)


def test_a_bad_backend_option_names_the_backends():
    model, (ids, mask) = tiny_bert()
    compiled = torch.compile(model, backend="spokeshave", options={"backend": "tpu"})
    with pytest.raises(Exception, match=r"backend='tpu' is not a backend; choose one of .*cpu"):
        with torch.no_grad():
            compiled(ids, mask)


def test_a_training_graph_goes_to_inductor_with_a_note():
    model = torch.nn.Linear(8, 4)
    before = len(dynamo.graphs())
    compiled = torch.compile(model, backend="spokeshave")
    x = torch.randn(3, 8)
    with pytest.warns(dynamo.SpokeshaveDynamoWarning, match="needs a backward, so it goes to "
                                                            "inductor"):
        y = compiled(x)
    y.sum().backward()  # the inductor graph trains
    assert model.weight.grad is not None
    assert [g.status for g in _new_graphs(before)] == ["inductor"]
