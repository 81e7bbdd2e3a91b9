"""Artifacts (`spokeshave.save` / `spokeshave.load`) and the `spokeshave` command: a round
trip is exact, and every kind of bad input gets one error naming the file and the check."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from spokeshave_models import make_mlp, tiny_bert, token_ids

import spokeshave
from spokeshave import cli
from spokeshave.artifact import MANIFEST, WEIGHTS
from spokeshave.checkpoints import read_recipe
from spokeshave.compiler.weights import sha256_file


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    model, (ids, mask) = tiny_bert()
    cal = [(token_ids(3, 12, 128, 1), torch.ones(3, 12, dtype=torch.long))]
    cm = spokeshave.compile(model, (ids, mask), pipeline="quantize{scheme=w8a8},fuse",
                            calibration=cal, backend="cpu")
    path = str(tmp_path_factory.mktemp("art") / "bert.spk")
    spokeshave.save(cm, path, source={"kind": "test"})
    x = (token_ids(2, 11, 128, 5), torch.ones(2, 11, dtype=torch.long))
    return path, x, cm(*x).last_hidden_state


@pytest.fixture
def copy(artifact, tmp_path):
    dst = str(tmp_path / "copy.spk")
    shutil.copytree(artifact[0], dst)
    return dst


def _manifest(path: str) -> dict:
    with open(os.path.join(path, MANIFEST)) as f:
        return json.load(f)


def _write_manifest(path: str, m: dict) -> None:
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump(m, f)


def test_a_loaded_artifact_matches_the_compiled_model_bit_for_bit(artifact):
    path, x, want = artifact
    loaded = spokeshave.load(path)
    assert loaded.backend == "cpu" and loaded.manifest["source"] == {"kind": "test"}
    got = loaded(*x)
    got = got[0] if isinstance(got, tuple) else got.last_hidden_state
    assert torch.equal(got, want)
    m = _manifest(path)
    assert set(m["files"]) >= {"graph.mlir", WEIGHTS} and any(f.startswith("kernels/") for f in m["files"])
    assert m["inputs"][1]["shape"][1]["max"] == 128  # the position table bounds the sequence
    with pytest.raises(spokeshave.SpokeshaveError, match="dim 1 is 129, but it must be at most 128"):
        loaded(token_ids(1, 129, 128), torch.ones(1, 129, dtype=torch.long))


def test_a_corrupted_weight_file_fails_its_hash(copy):
    w = os.path.join(copy, WEIGHTS)
    data = bytearray(open(w, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(w, "wb").write(bytes(data))
    with pytest.raises(spokeshave.SpokeshaveError, match=rf"{WEIGHTS}: sha256 check failed.*corrupted"):
        spokeshave.load(copy)


def test_a_truncated_weight_file_with_a_matching_hash_is_still_refused(copy):
    w = os.path.join(copy, WEIGHTS)
    data = open(w, "rb").read()
    open(w, "wb").write(data[: len(data) // 3])
    with pytest.raises(spokeshave.SpokeshaveError, match=rf"{WEIGHTS}: sha256 check failed"):
        spokeshave.load(copy)
    m = _manifest(copy)
    m["files"][WEIGHTS] = sha256_file(w)  # a consistent manifest over a broken file
    _write_manifest(copy, m)
    with pytest.raises(spokeshave.SpokeshaveError, match=rf"{WEIGHTS}: error: cannot read weights"):
        spokeshave.load(copy)


def test_a_wrong_hash_in_the_manifest(copy):
    m = _manifest(copy)
    m["files"]["graph.mlir"] = "0" * 64
    _write_manifest(copy, m)
    with pytest.raises(spokeshave.SpokeshaveError, match=r"graph.mlir: sha256 check failed"):
        spokeshave.load(copy)


def test_a_newer_format_version(copy):
    m = _manifest(copy)
    m["format_version"] = 99
    _write_manifest(copy, m)
    with pytest.raises(spokeshave.SpokeshaveError, match=r"format version 99 is newer than this "
                                                         r"spokeshave reads \(1\); upgrade"):
        spokeshave.load(copy)


def test_a_missing_file(copy):
    os.remove(os.path.join(copy, "graph.mlir"))
    with pytest.raises(spokeshave.SpokeshaveError, match=r"graph.mlir: missing; the manifest lists it"):
        spokeshave.load(copy)
    os.remove(os.path.join(copy, MANIFEST))
    with pytest.raises(spokeshave.SpokeshaveError, match=r"manifest.json: missing"):
        spokeshave.load(copy)


def test_a_weight_that_does_not_match_the_graph(copy):
    w = os.path.join(copy, WEIGHTS)
    tensors = load_file(w)
    name = next(k for k, t in tensors.items() if t.dim() == 2 and t.dtype == torch.float32)
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, w)
    m = _manifest(copy)
    m["files"][WEIGHTS] = sha256_file(w)
    _write_manifest(copy, m)
    with pytest.raises(spokeshave.SpokeshaveError, match=rf"tensor '{name}' is \(3, 3\) "
                                                         rf"torch.float32, but graph.mlir declares tensor<"):
        spokeshave.load(copy)


def test_save_refuses_to_overwrite_what_is_not_an_artifact(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    cm = spokeshave.compile(make_mlp(8, 16, 4), (torch.randn(2, 8),))
    with pytest.raises(spokeshave.SpokeshaveError, match="is not a spokeshave artifact"):
        spokeshave.save(cm, str(keep))
    assert (keep / "notes.txt").read_text() == "precious"


# ------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    model, _ = tiny_bert()
    d = tmp_path_factory.mktemp("bert")
    model.save_pretrained(d)
    return str(d)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_compile_a_checkpoint_directory_then_info_and_load(bert_dir, tmp_path, capsys):
    text = tmp_path / "cal.txt"
    text.write_text("\n".join(f"sentence number {i} about compilers" for i in range(40)))
    out = str(tmp_path / "b.spk")
    rc, stdout, err = _run(capsys, "compile", bert_dir, "-o", out, "--pipeline",
                           "quantize{scheme=w8},fuse", "--target", "cpu")
    assert rc == 0, err
    assert "summary" in stdout and "weights" in stdout and "latency" in stdout
    assert "12x w8" in stdout  # 2 layers x 6 linears
    rc, stdout, _ = _run(capsys, "info", out)
    assert rc == 0 and "files match their sha256" in stdout and "input_ids: i64[" in stdout
    loaded = spokeshave.load(out)
    ids = token_ids(3, 9, 128, 2)
    assert loaded(ids, torch.ones_like(ids)).shape == (3, 9, 64)


def test_a_checkpoint_that_does_not_match_its_config(bert_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(bert_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (bad / "config.json").write_text(json.dumps(cfg))
    rc, _, err = _run(capsys, "compile", str(bad), "-o", str(tmp_path / "x.spk"))
    assert rc == 1 and err.count("\n") == 1
    # the first mismatching tensor, in the checkpoint's (sorted) order
    assert "model.safetensors: tensor 'encoder.layer.0.intermediate.dense.bias' is [128], but" in err
    assert "config.json makes it [96]; the checkpoint does not match its config" in err


@pytest.mark.parametrize("content, message", [
    (b"", "holds no text"), (b"\n  \n", "holds no text"),
    (b"\x00\x01\x02binary", "not UTF-8 text"), (b"\xff\xfe\xfa", "not UTF-8 text")])
def test_a_calibration_file_that_is_empty_or_not_text(bert_dir, tmp_path, capsys, content, message):
    cal = tmp_path / "cal.txt"
    cal.write_bytes(content)
    rc, out, err = _run(capsys, "compile", bert_dir, "-o", str(tmp_path / "x.spk"),
                        "--pipeline", "smooth,quantize{scheme=w8a8}", "--calibration", str(cal))
    assert rc == 1 and f"{cal}: {message}" in err and not (tmp_path / "x.spk").exists()
    assert "exporting" not in out  # found before the slow stage, not after it


def test_a_recipe_with_an_unknown_key(tmp_path, capsys, bert_dir):
    r = tmp_path / "r.toml"
    r.write_text('pipeline = "quantize{scheme=w8}"\nschem = "w4"\n')
    rc, _, err = _run(capsys, "compile", bert_dir, "-o", str(tmp_path / "x.spk"), "--recipe", str(r))
    assert rc == 1 and f"{r}: unknown key 'schem' in the recipe; valid keys are pipeline" in err
    r.write_text('pipeline = "quantize{scheme=w8}"\n[[override]]\nlayers = "*.output.dense"\n'
                 'pipline = "quantize{scheme=w8a8}"\n')
    with pytest.raises(spokeshave.SpokeshaveError, match=r"unknown key 'pipline' in \[\[override\]\] 1"):
        read_recipe(str(r))


def test_a_recipe_gives_layers_their_own_pipeline(tmp_path):
    r = tmp_path / "r.toml"
    r.write_text('pipeline = "smooth,quantize{scheme=w8a8},fuse"\n'
                 '[[override]]\nlayers = "*.output.dense"\npipeline = "quantize{scheme=w8}"\n')
    assert read_recipe(str(r)) == ('smooth{skip=*.output.dense},quantize{skip=*.output.dense '
                                   'scheme=w8a8},quantize{layers=*.output.dense},fuse')


def test_a_pt2_file_and_a_factory(tmp_path, capsys):
    m, x = make_mlp(8, 16, 4), torch.randn(3, 8)
    pt2 = str(tmp_path / "mlp.pt2")
    torch.export.save(torch.export.export(m, (x,)), pt2)
    rc, _, err = _run(capsys, "compile", pt2, "-o", str(tmp_path / "p.spk"), "--target", "reference")
    assert rc == 0, err
    assert torch.allclose(spokeshave.load(str(tmp_path / "p.spk"))(x), m(x), atol=1e-6)
    rc, _, err = _run(capsys, "compile", "test_artifact:_factory", "-o", str(tmp_path / "f.spk"))
    assert rc == 0, err
    rc, _, err = _run(capsys, "compile", "no_such_module:f", "-o", str(tmp_path / "g.spk"))
    assert rc == 1 and "cannot import the factory" in err


def _factory():
    return make_mlp(8, 16, 4), (torch.randn(2, 8),)


def test_a_gguf_converts_once_then_loads_from_the_cache(smollm2, monkeypatch):
    """The session's SmolLM2 came through `load_gguf`, so its conversion is cached: a second
    load reads the cache (no GGUF parsing) and its tokenizer tokenizes as the GGUF's own."""
    import transformers

    from spokeshave.checkpoints import load_gguf
    from spokeshave_models import smollm2_gguf

    folder, name = smollm2_gguf()
    direct = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    real = transformers.AutoModelForCausalLM.from_pretrained

    def no_gguf(*args, **kw):
        assert "gguf_file" not in kw, "the cached conversion was not used"
        return real(*args, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_gguf)
    lm, tok = load_gguf(folder, name)
    text = "Compilers turn programs into faster programs; tokenizers turn text into ids."
    assert tok(text)["input_ids"] == direct(text)["input_ids"]
    want = dict(smollm2.lm.named_parameters())
    for n, p in lm.named_parameters():
        assert torch.equal(p, want[n]), n
