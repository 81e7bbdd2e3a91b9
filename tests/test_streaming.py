"""Streaming compilation (`spokeshave.streaming`, `compiler.segments`): a checkpoint compiled
one layer at a time gives what the in-memory compile gives, calibrates each layer on the
outputs of the compressed layers before it, and refuses what it cannot do."""
from __future__ import annotations

import gc
import os

import pytest
import torch
import transformers

import spokeshave
from spokeshave.checkpoints import load_model
from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.segments import layer_of, outline, plan_segments
from spokeshave.compiler.weights import merge_safetensors, read_safetensors
from spokeshave.streaming import (_collector_skips_what_exists, compile_streaming, is_placeholder,
                                  stream_checkpoint)

VOCAB = 256


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, tie_word_embeddings=False,
                                   architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    return str(d)


def _calibration(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, VOCAB, (2, 12), generator=g),),
            (torch.randint(0, VOCAB, (1, 20), generator=g),)]


def test_layer_of_names_the_numbered_block():
    assert layer_of("model.layers.3.mlp.up_proj.weight") == "model.layers.3"
    assert layer_of("encoder.layer.11.output.dense.bias") == "encoder.layer.11"
    assert layer_of("lm_head.weight") is None


def test_skeleton_holds_no_weight_data(llama_dir):
    s = stream_checkpoint(llama_dir)
    params = dict(s.model.named_parameters())
    assert params and all(is_placeholder(p) for p in params.values())
    assert sum(p.untyped_storage().nbytes() for p in params.values()) <= 4 * len(params)
    # every parameter is found in the checkpoint, under the name the file uses
    assert set(s.names) >= set(params) and "lm.lm_head.weight" in s.names
    assert s.names["lm.model.layers.0.mlp.up_proj.weight"] == "model.layers.0.mlp.up_proj.weight"


def test_segments_cut_at_layers_and_outline_round_trips(llama_dir):
    s = stream_checkpoint(llama_dir)
    imported = spokeshave.import_model(s.model, s.loaded.example, None, s.loaded.dynamic_shapes)
    segs = plan_segments(imported.module.entry)
    names = [g.name for g in segs]
    assert names[1:4] == [f"lm.model.layers.{i}" for i in range(3)], names
    assert "embed_tokens" in names[0] and "lm_head" in names[-1]
    fn = outline(imported.module.entry, segs[2])
    # a block reads the hidden state, the rotary tables, the mask and the symbolic sizes
    assert {str(v.type) for v in segs[2].inputs} >= {"i64"}
    assert len(fn.user_inputs()) == len(segs[2].inputs)
    assert set(fn.params()) == set(segs[2].params)
    assert all(p.startswith("lm.model.layers.1.") for p in fn.params())
    # a block ends with its down projection (the residual add joins the next block, with
    # the RMSNorm statistics it feeds, so the norm stays whole for smoothing)
    last = segs[1].ops[-1]
    assert last.name == "aten.linear" and fn is not None
    assert imported.module.entry.param_name(last.operands[1]).endswith("layers.0.mlp.down_proj.weight")


def test_a_post_ln_blocks_closing_norm_joins_the_next_segment():
    """BERT's block ends in a LayerNorm whose output feeds only the next block: it moves
    there, so the next block's smoothing can fold into it."""
    from spokeshave_models import tiny_bert

    model, inputs = tiny_bert()
    imported = spokeshave.import_model(model, inputs)
    segs = plan_segments(imported.module.entry)
    func = imported.module.entry
    first = [op for op in segs[2].ops if op.name == "aten.layer_norm"][0]
    names = {func.param_name(v) for v in first.operands} - {None}
    assert segs[2].layer.endswith("layer.1") and any(".layer.0.output.LayerNorm" in n for n in names)


def test_streamed_w8_is_the_in_memory_compile_bit_for_bit(llama_dir, tmp_path):
    pipeline = "quantize{scheme=w8}"
    r = compile_streaming(stream_checkpoint(llama_dir), str(tmp_path / "a.spk"), pipeline)
    assert len(r.segments) == 5 and r.bytes_after < r.bytes_before / 2  # embeddings stay float
    loaded = spokeshave.load(str(tmp_path / "a.spk"))
    model = load_model(llama_dir)
    ref = spokeshave.compile(model.model, model.example, pipeline=pipeline,
                             dynamic_shapes=model.dynamic_shapes)
    for shape in ((1, 5), (3, 17)):
        x = torch.randint(0, VOCAB, shape)
        assert torch.equal(loaded(x), ref(x))
    schemes = {e.scheme for e in r.layers if not e.skipped}
    assert schemes == {"w8"} and sum(not e.skipped for e in r.layers) == 3 * 7 + 1


def test_sequential_calibration_with_gptq_on_the_cpu_backend(llama_dir, tmp_path):
    pipeline = "smooth{alpha=0.5},quantize{scheme=w8a8 method=gptq},canonicalize,cse,dce,fuse"
    out = str(tmp_path / "b.spk")
    seen = []
    r = compile_streaming(stream_checkpoint(llama_dir), out, pipeline, _calibration(),
                          backend="cpu", progress=lambda done, total, name, s: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]
    assert os.listdir(os.path.join(out, "kernels"))
    assert {e.method for e in r.layers if e.pass_name == "quantize" and not e.skipped} == {"gptq"}
    cm, eager = spokeshave.load(out), load_model(llama_dir).model
    x = torch.randint(0, VOCAB, (2, 9))
    cos = torch.nn.functional.cosine_similarity(cm(x).flatten(), eager(x).flatten(), 0)
    assert cos > 0.999, cos


def test_a_cross_layer_pass_is_refused(llama_dir, tmp_path):
    with pytest.raises(SpokeshaveError, match="pass 'slice' rewrites across layers"):
        compile_streaming(stream_checkpoint(llama_dir), str(tmp_path / "c.spk"),
                          "fold-norms,slice{fraction=0.25}", _calibration())
    assert not os.path.exists(tmp_path / "c.spk")


def test_a_checkpoint_missing_a_tensor_names_it(llama_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in os.listdir(llama_dir):
        if f.endswith(".json"):
            (bad / f).write_bytes(open(os.path.join(llama_dir, f), "rb").read())
    tensors = load_file(os.path.join(llama_dir, "model.safetensors"))
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(SpokeshaveError, match="no tensor for parameter 'model.layers.1.mlp.down_proj"):
        stream_checkpoint(str(bad))


def test_merge_and_read_safetensors_copy_bytes_exactly(tmp_path):
    from safetensors.torch import load_file, save_file

    a = {"x": torch.randn(3, 5), "y": torch.arange(7, dtype=torch.int8)}
    b = {"z": torch.randn(2, dtype=torch.float64).to(torch.bfloat16), "x": torch.zeros(1)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    out = str(tmp_path / "m.safetensors")
    merge_safetensors([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")], out)
    got = load_file(out)
    assert set(got) == {"x", "y", "z"} and torch.equal(got["x"], a["x"])  # first one wins
    assert torch.equal(got["y"], a["y"]) and torch.equal(got["z"], b["z"])
    read = read_safetensors(out, {"z": torch.float32, "y": torch.int8})
    assert read["z"].dtype == torch.float32 and torch.equal(read["z"], b["z"].float())
    with open(out, "r+b") as f:
        f.truncate(os.path.getsize(out) - 4)
    with pytest.raises(SpokeshaveError, match="truncated"):
        read_safetensors(out, {"z": torch.float32})


def test_cli_streams_with_progress_and_writes_the_report(llama_dir, tmp_path, capsys):
    from spokeshave.cli import main

    out, html = str(tmp_path / "e.spk"), str(tmp_path / "report.html")
    assert main(["compile", llama_dir, "-o", out, "--stream", "--pipeline", "quantize{scheme=w8}",
                 "--report", html]) == 0
    text = capsys.readouterr().out
    assert "compiling layer by layer" in text and "5/5" in text  # the per-layer progress bar
    assert "summary (compiled layer by layer)" in text and "22x w8" in text
    page = open(html).read()
    assert page.count("data:image/png;base64,") == 1 and "lm.model.layers.2.mlp.down_proj" in page
    assert spokeshave.load(out)(torch.randint(0, VOCAB, (1, 4))).shape == (1, 4, VOCAB)


def test_report_plots_latency_and_errors(tmp_path):
    from spokeshave.compiler.report import LayerEntry
    from spokeshave.html_report import write_report

    layers = [LayerEntry("quantize", "a.0", "quantized", scheme="w8", weight_rel_err=1e-4),
              LayerEntry("quantize", "a.1", "skipped", reason="too small")]
    path = write_report(str(tmp_path / "r.html"), "t <x>", ["summary", "  weights 1 -> 2"], layers,
                        None, [("2x16", 0.004, 0.002), ("1x16", 0.002, 0.0015)])
    page = open(path).read()
    assert page.count("data:image/png;base64,") == 2 and "t &lt;x&gt;" in page
    assert "too small" in page and "1.000e-04" in page
    with pytest.raises(SpokeshaveError, match="cannot write the report"):
        write_report(str(tmp_path / "no" / "r.html"), "t", [], layers)


def test_the_collector_skips_what_existed_while_segments_compile_and_is_restored():
    class Cycle:
        def __init__(self):
            self.me = self
    assert gc.get_freeze_count() == 0
    with _collector_skips_what_exists():
        assert gc.get_freeze_count() > 0
        # no automatic collection (another thread allocating: xdist's) may take the cycle first
        enabled = gc.isenabled()
        gc.disable()
        try:
            made = Cycle()
            del made
            assert gc.collect() >= 1     # what a segment made is still collected
        finally:
            if enabled:
                gc.enable()
    assert gc.get_freeze_count() == 0
    gc.freeze()                          # a process that froze objects of its own keeps them
    try:
        frozen = gc.get_freeze_count()
        with _collector_skips_what_exists():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
