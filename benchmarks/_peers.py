"""The models, workloads, quality metrics and peer rows of `benchmarks/speed_cpu.py`.

A `Bundle` is one model loaded for the benchmark: the eager fp32 module (called with
positional tensors, returning one tensor: MiniLM's last hidden state, SmolLM2's logits),
its calibration batches, its workloads (the timing input of each) and its quality metric.
`build_peer(name, bundle)` builds one peer row: an object with `forward(*inputs) -> Tensor`
(what the quality metric scores) and `step(workload) -> callable` (what is timed; a zero-
argument callable that runs one forward at the workload's shape, or one llama.cpp decode
step). Everything here is imported by `speed_cpu.py`; nothing runs on import except
loading torch.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)
for _k, _v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("TRANSFORMERS_VERBOSITY", "error"), ("TOKENIZERS_PARALLELISM", "false"),
               ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TQDM_DISABLE", "1")):
    os.environ.setdefault(_k, _v)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch

# ------------------------------------------------------------------ the machine


def usable_cores() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def setup_torch(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    # every compiled row shares the models' `forward` code objects: one cache entry per
    # (row, shape); the default limit (8) would silently send later rows back to eager
    torch._dynamo.config.cache_size_limit = 256
    torch._dynamo.config.accumulated_cache_size_limit = 4096


def _status_mib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{key}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        return int(m.group(1)) / 1024 if m else None
    except OSError:
        return None


def rss_mib() -> float:
    """Resident set size now (MiB)."""
    v = _status_mib("VmRSS")
    if v is None:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return v


def hwm_mib() -> float:
    """The resident set's high-water mark since the last `reset_hwm()` (MiB)."""
    v = _status_mib("VmHWM")
    if v is None:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return v


def reset_hwm() -> bool:
    """Reset the high-water mark to the current RSS (Linux: `5` into clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for mod in ("torchao", "onnxruntime", "llama_cpp", "transformers"):
        if importlib.util.find_spec(mod) is not None:
            try:
                out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
            except Exception:  # noqa: BLE001 - a broken peer install shows as its row's reason
                out[mod] = "broken"
    return out


# ------------------------------------------------------------------ models and workloads

# name -> (model, batch, seq, label)
WORKLOADS = {
    "minilm8x128": ("minilm", 8, 128, "MiniLM-L6 batch 8 x seq 128"),
    "minilm1x16": ("minilm", 1, 16, "MiniLM-L6 batch 1 x seq 16"),
    "smollm_prefill": ("smollm2", 1, 256, "SmolLM2-135M prefill 1 x 256"),
    "smollm_token": ("smollm2", 1, 1, "SmolLM2-135M one token (1 x 1, no KV cache)"),
}
LLAMA_CONTEXT = 16  # tokens in llama.cpp's KV cache before the timed decode step


@dataclass
class Workload:
    name: str
    model: str
    batch: int
    seq: int
    label: str
    inputs: tuple          # the timed input
    quality_key: str       # workloads with equal keys share one quality figure per row


@dataclass
class Bundle:
    name: str                                  # "minilm" | "smollm2"
    module: torch.nn.Module                    # eager fp32: positional tensors -> one tensor
    example: tuple                             # export example
    dynamic_shapes: tuple
    calibration: list                          # batches of positional inputs
    workloads: dict[str, Workload]
    quality_name: str                          # column header
    tmp: str                                   # scratch folder (ONNX files)
    gguf: str | None = None                    # SmolLM2: the bundled GGUF file
    text_ids: torch.Tensor | None = None       # SmolLM2: the held-out text's token ids
    _quality_data: dict = field(default_factory=dict)
    _imported: Any = None
    export_s: float | None = None
    onnx: dict = field(default_factory=dict)   # kind -> path, shared by the ORT rows

    def imported(self):
        """spokeshave's import of the model (exported once per bundle)."""
        if self._imported is None:
            import time

            import spokeshave
            t0 = time.perf_counter()
            self._imported = spokeshave.import_model(self.module, self.example,
                                                     dynamic_shapes=self.dynamic_shapes)
            self.export_s = time.perf_counter() - t0
        return self._imported

    def quality(self, forward: Callable[..., torch.Tensor], workload: Workload) -> float:
        """MiniLM: min cosine vs eager fp32 over the evaluation sentences at the workload's
        shape. SmolLM2: perplexity / eager fp32 perplexity on the held-out windows."""
        data = self._quality_data[workload.quality_key]
        if self.name == "minilm":
            from _minilm import mean_pool
            worst = 1.0
            for (ids, mask), ref in zip(data["batches"], data["reference"]):
                emb = mean_pool(forward(ids, mask).float(), mask)
                cos = torch.nn.functional.cosine_similarity(emb.double(), ref.double(), dim=-1)
                worst = min(worst, float(cos.min()))
            return worst
        import perplexity_smollm2 as ppl
        return ppl.perplexity(lambda x: forward(x), data["batches"]) / data["fp32"]

    def quality_reference(self, workload: Workload) -> str:
        data = self._quality_data[workload.quality_key]
        return data["what"]


def load_bundle(name: str, workloads: list[str], ppl_windows: int = 8,
                calib_windows: int = 64, with_reference: bool = True) -> Bundle:
    """Load `name` ("minilm" or "smollm2") with the selected `workloads`; `with_reference`
    computes the eager fp32 side of the quality metric (the worker processes skip it)."""
    import spokeshave_models as models
    tmp = tempfile.mkdtemp(prefix=f"{name}_", dir=os.environ.get("SPEED_CPU_TMP"))
    if name == "minilm":
        return _load_minilm(models, workloads, tmp, with_reference)
    return _load_smollm2(models, workloads, tmp, ppl_windows, calib_windows, with_reference)


def _load_minilm(models, workloads: list[str], tmp: str, with_reference: bool) -> Bundle:
    import _minilm
    model, tok = models.load_minilm()
    if tok is None:
        raise RuntimeError("the bundled MiniLM tokenizer does not load offline")
    from spokeshave.checkpoints import EncoderHidden  # BertModel -> last hidden state only

    module = EncoderHidden(model).eval()

    def encode(sentences: list[str], seq: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        kw = ({"padding": "max_length", "max_length": seq} if seq
              else {"padding": True, "max_length": 128})
        enc = tok(sentences, truncation=True, return_tensors="pt", **kw)
        return enc["input_ids"], enc["attention_mask"]

    # calibration exactly as benchmarks/_minilm.py builds it (sorted by length, batches of 8)
    by_len = sorted(_minilm.CALIBRATION + _minilm.SHORT_CALIBRATION,
                    key=lambda s: len(tok(s)["input_ids"]))
    calibration = [encode(by_len[i:i + 8], None) for i in range(0, len(by_len), 8)]
    wl, quality = {}, {}
    sentences = _minilm.SENTENCES
    for w in workloads:
        _, batch, seq, label = WORKLOADS[w]
        # timed input: the first `batch` evaluation sentences, padded/truncated to `seq`
        wl[w] = Workload(w, "minilm", batch, seq, label, encode(sentences[:batch], seq), w)
        if with_reference:
            n = len(sentences) - len(sentences) % batch
            batches = [encode(sentences[i:i + batch], seq) for i in range(0, n, batch)]
            ref = [_minilm.mean_pool(module(*b), b[1]) for b in batches]
            quality[w] = {"batches": batches, "reference": ref,
                          "what": f"min cosine over {n} sentences in {len(batches)} batches of "
                                  f"{batch} x {seq}"}
    example = encode(sentences, None)
    b = torch.export.Dim("batch", min=1, max=64)
    s = torch.export.Dim("seq", min=2, max=512)
    return Bundle("minilm", module, example, ({0: b, 1: s}, {0: b, 1: s}), calibration, wl,
                  "min cos", tmp, _quality_data=quality)


def _load_smollm2(models, workloads: list[str], tmp: str, ppl_windows: int,
                  calib_windows: int, with_reference: bool) -> Bundle:
    import perplexity_smollm2 as ppl
    from spokeshave.checkpoints import load_gguf
    module = models.load_smollm2()
    folder, gguf = models.smollm2_gguf()
    _, tok = load_gguf(folder, gguf)  # cached: the model above was converted once

    def ids_of(text: str) -> torch.Tensor:
        return torch.tensor(tok(text)["input_ids"], dtype=torch.long)

    held_out = ids_of(ppl.docstrings(ppl.EVAL_MODULES))
    # 256-token windows: the prefill workload's shape; the perplexity text of
    # benchmarks/perplexity_smollm2.py (its docstrings, its windows, its perplexity())
    eval_batches = [w.unsqueeze(0) for w in ppl.windows(held_out, 256, ppl_windows)]
    calib = ppl.windows(ids_of(ppl.docstrings(ppl.CALIB_MODULES)), 128, calib_windows)
    calibration = [(torch.stack(calib[i:i + 4]),) for i in range(0, len(calib), 4)]
    wl = {}
    for w in workloads:
        _, batch, seq, label = WORKLOADS[w]
        wl[w] = Workload(w, "smollm2", batch, seq, label, (held_out[:seq].unsqueeze(0),), "ppl")
    quality = {}
    if with_reference:
        fp32 = ppl.perplexity(module, eval_batches)
        quality["ppl"] = {"batches": eval_batches, "fp32": fp32,
                          "what": f"perplexity / fp32 ({fp32:.3f}) over {ppl_windows} x 256 "
                                  f"held-out tokens"}
    example = (held_out[:16].view(2, 8),)   # batch 2: an example batch of 1 would specialise it
    b = torch.export.Dim("batch", min=1, max=8)
    s = torch.export.Dim("seq", min=1, max=512)
    return Bundle("smollm2", module, example, ({0: b, 1: s},), calibration, wl, "ppl x fp32",
                  tmp, gguf=os.path.join(folder, gguf), text_ids=held_out,
                  _quality_data=quality)


# ------------------------------------------------------------------ rows


class Built:
    """A built row: `forward(*inputs)` for the quality metric, `step(workload)` to time."""

    def __init__(self, forward: Callable[..., torch.Tensor], notes: list[str] | None = None):
        self.forward = forward
        self.notes = notes or []

    def step(self, workload: Workload) -> Callable[[], Any]:
        f, x = self.forward, workload.inputs
        return lambda: f(*x)


def _eager(bundle: Bundle, again: bool) -> Built:
    return Built(bundle.module)


def _inductor(bundle: Bundle, again: bool) -> Built:
    # static shapes: one graph specialised per workload shape (inductor's best case here);
    # `again`: a second torch.compile of a fresh copy in the same process (the cached build)
    m = copy.deepcopy(bundle.module) if again else bundle.module
    return Built(torch.compile(m, dynamic=False))


def _torchao(config_name: str) -> Callable[[Bundle, bool], Built]:
    def build(bundle: Bundle, again: bool) -> Built:
        import torchao.quantization as q
        config = getattr(q, config_name)()
        inductor = torch._inductor.config
        saved = inductor.get_config_copy()
        m = copy.deepcopy(bundle.module)
        q.quantize_(m, config)   # set_inductor_config=True: torchao's recommended settings ...
        mine = {k: v for k, v in inductor.get_config_copy().items() if saved.get(k) != v}
        inductor.load_config(saved)  # ... for this row only, not for the rows built after it
        compiled = torch.compile(m, dynamic=False)

        def forward(*a):
            with inductor.patch(mine):
                return compiled(*a)
        notes = [f"torchao inductor settings: {', '.join(sorted(mine))}"] if mine else []
        return Built(forward if mine else compiled, notes)
    return build


def _ort_session(path: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = usable_cores()
    so.inter_op_num_threads = 1
    # idle spinning workers would steal the cores of the rows timed after this one
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _onnx_file(bundle: Bundle, kind: str) -> str:
    """The exported (kind "fp32") or dynamically quantized ("int8") ONNX file, made once."""
    if kind in bundle.onnx:
        return bundle.onnx[kind]
    import logging
    if kind == "fp32":
        path = os.path.join(bundle.tmp, "model.onnx")
        names = ["input_ids", "attention_mask"][:len(bundle.example)]
        quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" x4
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            torch.onnx.export(bundle.module, bundle.example, path, input_names=names,
                              output_names=["out"], dynamic_shapes=bundle.dynamic_shapes,
                              dynamo=True, verbose=False, report=False)
        finally:
            quiet.setLevel(level)
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        src, path = _onnx_file(bundle, "fp32"), os.path.join(bundle.tmp, "model.int8.onnx")
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": not applicable
        try:
            quantize_dynamic(src, path, per_channel=True, reduce_range=True,
                             weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(level)
    bundle.onnx[kind] = path
    return path


def _ort(kind: str) -> Callable[[Bundle, bool], Built]:
    def build(bundle: Bundle, again: bool) -> Built:
        sess = _ort_session(_onnx_file(bundle, kind))  # again: the file exists, session only
        names = [i.name for i in sess.get_inputs()]

        class OrtBuilt(Built):
            def step(self, workload: Workload):
                feeds = {n: t.numpy() for n, t in zip(names, workload.inputs)}
                return lambda: sess.run(None, feeds)

        def forward(*a):
            return torch.from_numpy(sess.run(None, {n: t.numpy() for n, t in zip(names, a)})[0])
        return OrtBuilt(forward)
    return build


def _llamacpp(bundle: Bundle, again: bool) -> Built:
    import llama_cpp
    n = usable_cores()
    # logits_all: prefill computes the logits of every position, as the torch rows do
    llm = llama_cpp.Llama(model_path=bundle.gguf, n_ctx=512, n_threads=n, n_threads_batch=n,
                          logits_all=True, verbose=False)

    class LlamaBuilt(Built):
        def step(self, workload: Workload):
            tokens = workload.inputs[0][0].tolist()
            if workload.seq > 1:   # prefill from an empty cache
                def prefill():
                    llm.reset()
                    llm.eval(tokens)
                return prefill
            # one decode step with a KV cache of LLAMA_CONTEXT tokens of the held-out text;
            # the cache is cut back to the context before every step, so each step is the same
            ctx = bundle.text_ids[:LLAMA_CONTEXT + 1].tolist()
            llm.reset()
            llm.eval(ctx[:-1])

            def decode():
                llm.n_tokens = LLAMA_CONTEXT
                llm.eval(ctx[-1:])
            return decode

    def forward(ids: torch.Tensor) -> torch.Tensor:
        import numpy as np
        out = []
        for row in ids.tolist():
            llm.reset()
            llm.eval(row)
            out.append(torch.from_numpy(np.array(llm.scores[:len(row)], dtype=np.float32)))
        return torch.stack(out)
    return LlamaBuilt(forward, [(f"{os.path.basename(bundle.gguf)} weights as stored; decode "
                                 f"step over a {LLAMA_CONTEXT}-token KV cache")])


# name -> (builder, the module it needs, the models it applies to)
PEERS: dict[str, tuple[Callable[[Bundle, bool], Built], str | None, tuple[str, ...]]] = {
    "eager": (_eager, None, ("minilm", "smollm2")),
    "inductor": (_inductor, None, ("minilm", "smollm2")),
    "ao_int8_dyn": (_torchao("Int8DynamicActivationInt8WeightConfig"), "torchao",
                    ("minilm", "smollm2")),
    "ao_int8_wo": (_torchao("Int8WeightOnlyConfig"), "torchao", ("minilm", "smollm2")),
    "ort_fp32": (_ort("fp32"), "onnxruntime", ("minilm",)),
    "ort_int8": (_ort("int8"), "onnxruntime", ("minilm",)),
    "llamacpp": (_llamacpp, "llama_cpp", ("smollm2",)),
}


def peer_unavailable(name: str) -> str | None:
    """Why peer `name` cannot run here, or None."""
    _, module, _ = PEERS[name]
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken binary wheel
        return f"import {module} failed: {type(e).__name__}"
    if name.startswith("ort_") and importlib.util.find_spec("onnxscript") is None:
        return "onnxscript (torch.onnx.export's dynamo exporter) is not installed"
    return None


def build_peer(name: str, bundle: Bundle, again: bool = False) -> Built:
    return PEERS[name][0](bundle, again)

