"""What `spokeshave compile MODEL` reads: the model, its calibration text and its recipe.

MODEL is one of
- a Hugging Face model directory: `config.json` plus safetensors (an encoder such as BERT is
  called as `(input_ids, attention_mask)` and returns the last hidden state; a causal LM is
  called as `(input_ids)` and returns the logits, without a KV cache), or a GGUF file in the
  directory, as the bundled SmolLM2 ships (a causal LM);
- a `torch.export` program saved as `.pt2`;
- `package.module:factory`, a function returning a module, or `(module, example_inputs)`.

A safetensors checkpoint is checked against its config before anything loads: the model is
built on the meta device from `config.json` and every tensor of the checkpoint is compared
with it, so a mismatch names the tensor and both shapes instead of a transformers traceback.

Calibration text (`.txt`: one document per non-empty line; `.jsonl`: one JSON string or
`{"text": ...}` per line) is tokenized with the checkpoint's own tokenizer, concatenated,
cut into windows of `seq` tokens and batched. A recipe is TOML: a `pipeline`, and
`[[override]]` tables that give the layers matching a glob their own pipeline.
"""
from __future__ import annotations

import glob
import importlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

import torch

from .compiler.errors import SpokeshaveError
from .compiler.passmanager import parse_pipeline, print_pipeline

EXAMPLE_BATCH, EXAMPLE_SEQ = 2, 16


class EncoderHidden(torch.nn.Module):
    """`forward(input_ids, attention_mask) -> last_hidden_state` of a Hugging Face encoder."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CausalLMLogits(torch.nn.Module):
    """`forward(input_ids) -> logits` of a Hugging Face causal LM, without the KV cache."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


@dataclass
class Loaded:
    """A model ready to export: the module, example inputs, dynamic dims, and how to make
    calibration batches from text (None for a `.pt2`, which is already exported)."""

    model: torch.nn.Module | None
    example: tuple
    dynamic_shapes: Any = None
    exported: Any = None            # a torch.export program (MODEL was a .pt2)
    tokenizer: Any = None
    decoder: bool = False
    max_seq: int | None = None
    source: dict[str, Any] = field(default_factory=dict)


def load_model(spec: str) -> Loaded:
    """MODEL as a `Loaded`; one clear error if it is none of the three kinds."""
    if os.path.isdir(spec):
        return _load_hf_dir(spec)
    if spec.endswith(".pt2"):
        if not os.path.isfile(spec):
            raise SpokeshaveError(f"{spec}: no such file")
        ep = torch.export.load(spec)
        return Loaded(None, tuple(ep.example_inputs[0]) if ep.example_inputs else (),
                      exported=ep, source={"kind": "pt2", "path": os.path.abspath(spec)})
    if ":" in spec and not os.path.exists(spec):
        return _load_factory(spec)
    raise SpokeshaveError(f"{spec}: MODEL must be a Hugging Face model directory (config.json "
                          f"with safetensors or a .gguf), a torch.export .pt2 file, or "
                          f"package.module:factory")


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()


def _load_hf_dir(path: str) -> Loaded:
    import transformers

    _quiet_transformers()
    ggufs = sorted(glob.glob(os.path.join(path, "*.gguf")))
    has_config = os.path.isfile(os.path.join(path, "config.json"))
    if ggufs and not glob.glob(os.path.join(path, "*.safetensors")):
        name = os.path.basename(ggufs[0])
        lm, tok = load_gguf(path, name)
        return _hf_loaded(CausalLMLogits(lm).eval(), lm.config, tok, True,
                          {"kind": "hf-gguf", "path": os.path.abspath(path), "file": name,
                           "returns": "logits"})
    if not has_config:
        raise SpokeshaveError(f"{path}: a model directory needs config.json with safetensors "
                              f"weights, or a .gguf file; found neither")
    config = transformers.AutoConfig.from_pretrained(path)
    decoder, auto = hf_model_class(config)
    check_checkpoint(path, auto, config)
    model = auto.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="sdpa").eval()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tok = None
    wrapped = CausalLMLogits(model) if decoder else EncoderHidden(model)
    return _hf_loaded(wrapped.eval(), config, tok, decoder,
                      {"kind": "hf", "path": os.path.abspath(path),
                       "returns": "logits" if decoder else "last_hidden_state"})


def hf_model_class(config: Any) -> tuple[bool, Any]:
    """(is it a causal LM, the transformers Auto class that builds it) for a config."""
    import transformers

    decoder = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel")
                  for a in (config.architectures or []))
    return decoder, transformers.AutoModelForCausalLM if decoder else transformers.AutoModel


def _hf_loaded(model: torch.nn.Module, config: Any, tok: Any, decoder: bool,
               source: dict[str, Any]) -> Loaded:
    vocab = int(getattr(config, "vocab_size", 1000))
    max_seq = getattr(config, "max_position_embeddings", None)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(vocab, 1000), (EXAMPLE_BATCH, EXAMPLE_SEQ), generator=g)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=int(max_seq) if max_seq else 65536)
    if decoder:
        return Loaded(model, (ids,), ({0: batch, 1: seq},), tokenizer=tok, decoder=True,
                      max_seq=max_seq, source=source)
    mask = torch.ones_like(ids)
    return Loaded(model, (ids, mask), ({0: batch, 1: seq}, {0: batch, 1: seq}), tokenizer=tok,
                  max_seq=max_seq, source=source)


GGUF_CACHE_ENV = "SPOKESHAVE_GGUF_CACHE"


def gguf_cache_dir() -> str:
    """Where GGUF checkpoints converted to Hugging Face form are kept ($SPOKESHAVE_GGUF_CACHE,
    else ~/.cache/spokeshave/gguf)."""
    return os.environ.get(GGUF_CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "spokeshave", "gguf")


def load_gguf(folder: str, name: str) -> tuple[torch.nn.Module, Any]:
    """(causal LM in float32, tokenizer) of the GGUF file `name` in `folder`.

    transformers converts a GGUF on every load (about 25 s for SmolLM2-135M, nearly all in
    parsing the metadata and mapping tensor names, not in dequantizing), so the converted
    model and tokenizer are kept in Hugging Face form (config, safetensors, tokenizer.json)
    under `gguf_cache_dir()`, keyed by the file's sha256 and the transformers version: the
    same values, read back in about a second. An entry is written to a temporary directory
    and renamed into place, so a half-written one is never read."""
    import shutil
    import tempfile

    import transformers

    from .compiler.weights import sha256_file

    key = f"{sha256_file(os.path.join(folder, name))[:24]}-transformers-{transformers.__version__}"
    entry = os.path.join(gguf_cache_dir(), key)
    kw = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if os.path.isfile(os.path.join(entry, "config.json")):
        try:
            return (transformers.AutoModelForCausalLM.from_pretrained(entry, **kw),
                    transformers.AutoTokenizer.from_pretrained(entry))
        except (OSError, ValueError):  # unreadable: moved aside (atomically), converted again
            shutil.rmtree(_rename_aside(entry), ignore_errors=True)
    lm = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **kw)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    try:
        os.makedirs(gguf_cache_dir(), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".gguf-", dir=gguf_cache_dir())
        # save_pretrained refuses a model loaded from GGUF ("quantized with gguf, not
        # serializable"): its tensors are plain float32 by now, so write them directly
        from safetensors.torch import save_model

        config = lm.config.to_dict()
        config.pop("quantization_config", None)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        save_model(lm, os.path.join(tmp, "model.safetensors"))  # tied weights written once
        tok.save_pretrained(tmp)
        os.rename(tmp, entry)  # fails if another process made the entry first: theirs stays
    except OSError:  # that, or a read-only or full disk: only the cache is missed
        shutil.rmtree(locals().get("tmp", ""), ignore_errors=True)
    return lm, tok


def _rename_aside(path: str) -> str:
    aside = f"{path}.broken-{os.getpid()}"
    try:
        os.rename(path, aside)
    except OSError:
        return path
    return aside


def name_variants(name: str, base: str) -> tuple[str, str, str]:
    """A tensor's name as checkpoints spell it: as is, under the base model's prefix
    (`bert.`), and without it."""
    return name, f"{base}.{name}", name.removeprefix(base + ".")


def check_checkpoint(path: str, auto: Any, config: Any) -> None:
    """Every safetensors tensor against the model `config.json` builds (on the meta device):
    the first tensor whose shape differs is named with both shapes."""
    from safetensors import SafetensorError, safe_open

    with torch.device("meta"):
        skeleton = auto.from_config(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    prefix = getattr(skeleton, "base_model_prefix", "") or ""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise SpokeshaveError(f"{path}: no .safetensors weights beside config.json")
    for file in files:
        try:
            with safe_open(file, "pt") as f:
                for key in f.keys():
                    shape = tuple(f.get_slice(key).get_shape())
                    for name in name_variants(key, prefix):
                        if name in expected:
                            if expected[name] != shape:
                                raise SpokeshaveError(
                                    f"{file}: tensor '{key}' is {list(shape)}, but "
                                    f"{os.path.join(path, 'config.json')} makes it "
                                    f"{list(expected[name])}; the checkpoint does not match its "
                                    f"config")
                            break
        except SafetensorError as e:
            raise SpokeshaveError(f"{file}: cannot read safetensors ({e})") from None


def _load_factory(spec: str) -> Loaded:
    mod_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise SpokeshaveError(f"{spec}: cannot import the factory ({e})") from None
    got = fn()
    model, example = (got if isinstance(got, tuple) and len(got) == 2 else (got, None))
    if not isinstance(model, torch.nn.Module) or example is None:
        raise SpokeshaveError(f"{spec}: the factory must return (module, example_inputs); "
                              f"got {type(got).__name__}")
    example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    return Loaded(model.eval(), example, source={"kind": "factory", "factory": spec})


# ------------------------------------------------------------------ calibration text


def read_texts(path: str) -> list[str]:
    """The documents of a calibration file; an error naming the file (and line) otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SpokeshaveError(f"{path}: cannot read the calibration file ({e.strerror})") from None
    try:
        if b"\x00" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "NUL byte")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpokeshaveError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); calibration "
                              f"data is plain text (.txt) or JSON lines (.jsonl)") from None
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if path.endswith(".jsonl"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise SpokeshaveError(f"{path}:{n}: not JSON ({e.msg})") from None
            item = item.get("text") if isinstance(item, dict) else item
            if not isinstance(item, str):
                raise SpokeshaveError(f"{path}:{n}: expected a JSON string or an object with a "
                                      f"\"text\" string")
            line = item
        docs.append(line)
    if not any(d.strip() for d in docs):
        raise SpokeshaveError(f"{path}: holds no text; give at least one non-empty line")
    return docs


def calibration_batches(loaded: Loaded, path: str, seq: int = 128, batch: int = 4,
                        max_batches: int = 8) -> list[tuple]:
    """Token windows of the calibration text, batched, as the model's inputs."""
    if loaded.tokenizer is None:
        raise SpokeshaveError(f"{path}: calibration text needs the checkpoint's tokenizer, and "
                              f"this MODEL has none; pass a Hugging Face directory with one")
    docs = read_texts(path)
    seq = min(seq, loaded.max_seq or seq)
    stream: list[int] = []
    for d in docs:
        stream += loaded.tokenizer(d, add_special_tokens=False)["input_ids"]
    if len(stream) < 2:
        raise SpokeshaveError(f"{path}: tokenizes to {len(stream)} token(s); give more text")
    windows = [stream[i:i + seq] for i in range(0, len(stream), seq)]
    windows = [w for w in windows if len(w) == len(windows[0])] or windows[:1]
    out = []
    for i in range(0, min(len(windows), batch * max_batches), batch):
        ids = torch.tensor(windows[i:i + batch], dtype=torch.long)
        out.append((ids,) if loaded.decoder else (ids, torch.ones_like(ids)))
    return out


# ------------------------------------------------------------------ recipes

RECIPE_KEYS = {"pipeline": "the pass pipeline (text)",
               "override": "[[override]] tables: layers (glob) and pipeline"}
OVERRIDE_KEYS = {"layers": "fnmatch glob(s) of layer names, '|'-separated",
                 "pipeline": "the pipeline those layers get instead"}


def read_recipe(path: str) -> str:
    """A recipe as one pipeline: each override's passes run on its layers (`layers=`), and the
    main pipeline's layer-selecting passes skip them (`skip=`)."""
    try:
        with open(path, "rb") as f:
            recipe = tomllib.load(f)
    except OSError as e:
        raise SpokeshaveError(f"{path}: cannot read the recipe ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpokeshaveError(f"{path}: not valid TOML ({e})") from None

    def known(table: dict, keys: dict[str, str], where: str) -> None:
        for k in table:
            if k not in keys:
                valid = "; ".join(f"{n}: {h}" for n, h in keys.items())
                raise SpokeshaveError(f"{path}: unknown key '{k}' in {where}; valid keys are {valid}")

    known(recipe, RECIPE_KEYS, "the recipe")
    if not isinstance(recipe.get("pipeline"), str):
        raise SpokeshaveError(f"{path}: the recipe needs pipeline = \"...\" (a pass pipeline)")
    overrides = recipe.get("override", [])
    for i, o in enumerate(overrides):
        known(o, OVERRIDE_KEYS, f"[[override]] {i + 1}")
        if not isinstance(o.get("layers"), str) or not isinstance(o.get("pipeline"), str):
            raise SpokeshaveError(f"{path}: [[override]] {i + 1} needs layers = \"glob\" and "
                                  f"pipeline = \"...\"")
    try:
        main = parse_pipeline(recipe["pipeline"])
        extra = [(o["layers"], parse_pipeline(o["pipeline"])) for o in overrides]
    except SpokeshaveError as e:
        raise SpokeshaveError(f"{path}: {e}") from None
    globs = "|".join(g for g, _ in extra)
    out, inserted = [], False
    for i, p in enumerate(main):
        if globs and hasattr(p, "skip"):
            p.skip = "|".join(x for x in (p.skip, globs) if x)
        out.append(p)
        last_selecting = hasattr(p, "skip") and not any(hasattr(q, "skip") for q in main[i + 1:])
        if last_selecting and not inserted:
            for layers, passes in extra:
                for q in passes:
                    if hasattr(q, "layers"):
                        q.layers = layers
                    out.append(q)
            inserted = True
    if extra and not inserted:
        out += [q for _, passes in extra for q in passes]
    return print_pipeline(out)
