"""The cpu backend's replay runtime (`backends/cpu/replay.py`): a signature's third call on
replays the recorded kernel calls, and gives the interpreter's results bit for bit, for new
input values, without touching an earlier call's outputs."""
from __future__ import annotations

import threading

import pytest
import torch
from spokeshave.backends.cpu import replay

import spokeshave


def _first(y):
    return y[0] if isinstance(y, (list, tuple)) else y


def _interpreted(cm, *inputs):
    """The same executable's result with the replay runtime bypassed."""
    exe = cm.executable
    saved, exe._run = exe._run, exe._interpreter
    try:
        return _first(cm(*inputs))
    finally:
        exe._run = saved


@pytest.fixture(scope="module")
def llama():
    import spokeshave_models as models
    model, example = models.tiny_llama()
    dims = ({0: torch.export.Dim("b", max=8), 1: torch.export.Dim("s", max=64)},)
    return spokeshave.import_model(model, example, dynamic_shapes=dims), example


@pytest.mark.parametrize("pipeline", [
    "quantize{scheme=w4g group=32},canonicalize,cse,dce,gqa-attention,fuse",
    "quantize{scheme=w8a8},canonicalize,cse,dce,fuse",   # int8 prologues: Quantized values
    "canonicalize,cse,dce,fuse",                         # float GEMMs: library calls
])
def test_replay_matches_the_interpreter_on_new_values(llama, pipeline):
    imported, example = llama
    cm = spokeshave.compile_module(imported, pipeline=pipeline, backend="cpu")
    runner = cm.executable._run
    assert isinstance(runner, replay.Replayer)
    gen = torch.Generator().manual_seed(1)
    ids = [torch.randint(0, 128, (1, 1), generator=gen) for _ in range(5)]
    outs = [_first(cm(x)).clone() for x in ids[:2]]      # first sight, then the recording
    assert runner.replayed == 0
    held = _first(cm(ids[2]))
    kept = held.clone()
    for x in ids[2:]:
        got = _first(cm(x))
        assert torch.equal(got, _interpreted(cm, x))
    assert runner.replayed == 4
    assert torch.equal(held, kept)   # a later call did not write into an earlier result
    assert torch.equal(outs[1], _interpreted(cm, ids[1]))
    assert not torch.equal(outs[0], outs[1])   # different tokens: the check is not vacuous


def test_each_signature_replays_alone(llama):
    imported, example = llama
    cm = spokeshave.compile_module(imported, pipeline="quantize{scheme=w4g group=32},fuse",
                                   backend="cpu")
    runner = cm.executable._run
    a, b = example[0], example[0][:1, :5]
    for _ in range(3):
        for x in (a, b):
            assert torch.equal(_first(cm(x)), _interpreted(cm, x))
    assert runner.replayed == 2 and len(runner.cache) == 2
    assert all(r is not None for r in runner.cache.values())


def test_a_signature_over_the_held_bytes_runs_interpreted(llama, monkeypatch):
    imported, example = llama
    cm = spokeshave.compile_module(imported, pipeline="quantize{scheme=w4g group=32},fuse",
                                   backend="cpu")
    monkeypatch.setattr(replay, "HELD_BYTES", 1024)
    x = example[0]
    for _ in range(4):
        assert torch.equal(_first(cm(x)), _interpreted(cm, x))
    runner = cm.executable._run
    assert runner.replayed == 0 and list(runner.cache.values()) == [None]


def test_concurrent_calls_get_their_own_results(llama):
    imported, _ = llama
    cm = spokeshave.compile_module(imported, pipeline="quantize{scheme=w4g group=32},fuse",
                                   backend="cpu")
    ids = [torch.full((1, 3), t) for t in range(8)]
    want = [_interpreted(cm, x) for x in ids]
    cm(ids[0])   # seen once: one of the threads records while the others interpret, then
    # one caller at a time replays; a recording that logged another thread's kernel calls
    # would replay them on that thread's freed buffers
    wrong: list[int] = []

    def worker(i: int) -> None:
        for _ in range(5):
            if not torch.equal(_first(cm(ids[i])), want[i]):
                wrong.append(i)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert cm.executable._run.replayed > 0
