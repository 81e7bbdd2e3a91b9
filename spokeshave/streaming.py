"""Streaming compilation: compile a checkpoint larger than memory, one layer at a time.

    result = compile_streaming(stream_checkpoint("ckpt/"), "out.spk", pipeline, calibration)

1. **Skeleton.** The model is built from its `config.json` with every parameter a
   placeholder: a real CPU tensor of the right shape and dtype whose storage is one element
   (stride 0), so `torch.export` traces it and the IR gets every parameter's type while the
   process holds none of the weights. Buffers the checkpoint does not store (rotary
   frequencies) are computed by the model's constructor as usual.
2. **Segments.** The exported IR is cut into layer segments (`compiler.segments`): the
   embeddings, each numbered block, the head.
3. **Per segment, in order:** its weights are read from the checkpoint's safetensors (with
   plain reads into fresh tensors: a memory map would leave the file's pages resident in the
   process for as long as it stays mapped); the segment is outlined into a function of its own and compiled with the
   pipeline, calibrated on the activations that reach it, which come out of the segments
   already compressed (the sequential calibration GPTQ and SparseGPT ask for); the compiled
   segment runs on those activations to make the next segment's; its compressed weights go
   to a shard file on disk; its ops are spliced back into the model's IR; and its tensors
   are freed. Activations are freed once no remaining segment reads them.
4. **Artifact.** The shards are merged into one `weights.safetensors` by copying bytes (no
   tensor is loaded), and the artifact is written as `spokeshave.save` writes it.

Peak memory is one segment's weights (float and compressed), the calibration activations at
the segment boundaries, and the IR. Passes must be layer-local (`Pass.layer_local`):
`slice` rotates the whole residual stream and is refused with that reason.
"""
from __future__ import annotations

import contextlib
import gc
import glob
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .compiler.errors import SpokeshaveError
from .compiler.ir import Module, Value
from .compiler.passmanager import PassManager
from .compiler.report import LayerEntry
from .compiler.segments import outline, plan_segments, splice
from .compiler.verifier import verify
from .compiler.weights import (WeightStore, is_placeholder, merge_safetensors, read_safetensors,
                               safetensors_header)


# ---------------------------------------------------------------------- the skeleton


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device and buffers where they are
    made (as accelerate's `init_empty_weights(include_buffers=False)` does): constructors
    then allocate and initialise no weight."""
    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def placeholder(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `shape` backed by one element (every stride 0)."""
    return torch.zeros((), dtype=dtype).expand(shape)


def with_placeholders(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Swap every meta parameter of `model` for a placeholder (tied parameters stay tied)."""
    made: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None or not p.is_meta:
                continue
            if id(p) not in made:
                made[id(p)] = torch.nn.Parameter(placeholder(tuple(p.shape), dtype),
                                                 requires_grad=False)
            module._parameters[name] = made[id(p)]
    return model


# ---------------------------------------------------------------------- checkpoint reading


class SafetensorsCheckpoint:
    """The tensors of a directory of safetensors files (one file or HF shards), read by name.
    Only headers are read up front; `read` copies a segment's tensors with plain reads."""

    def __init__(self, directory: str):
        self.directory = directory
        self.files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
        if not self.files:
            raise SpokeshaveError(f"{directory}: no .safetensors weights to stream")
        self.where: dict[str, str] = {}
        for file in self.files:
            header, _ = safetensors_header(file)
            for key, e in header.items():
                self.where[key] = file

    def read(self, names: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
        """`{checkpoint name: tensor}` for `names` (name -> the dtype the model computes in),
        read into fresh memory (no mapping stays behind)."""
        by_file: dict[str, dict[str, torch.dtype]] = {}
        for n, dtype in names.items():
            by_file.setdefault(self.where[n], {})[n] = dtype
        out: dict[str, torch.Tensor] = {}
        for file, want in by_file.items():
            out.update(read_safetensors(file, want))
        return out


@dataclass
class Streamed:
    """A model to compile layer by layer: `loaded` (the placeholder skeleton, its example
    inputs, dynamic dims and tokenizer, as `checkpoints.load_model` gives them) and where
    each parameter's data is."""

    loaded: Any                     # a `checkpoints.Loaded` whose model is the skeleton
    checkpoint: SafetensorsCheckpoint
    names: dict[str, str]           # model fqn (as the IR names it) -> checkpoint tensor name

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model


def stream_checkpoint(path: str) -> Streamed:
    """A Hugging Face safetensors directory as a `Streamed` model (encoder or causal LM,
    called as `spokeshave compile` calls it); the checkpoint is checked against its config."""
    import transformers

    from .checkpoints import CausalLMLogits, EncoderHidden, _hf_loaded, check_checkpoint, hf_model_class

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SpokeshaveError(f"{path}: streaming needs a model directory with config.json and "
                              f"safetensors weights")
    transformers.logging.set_verbosity_error()
    config = transformers.AutoConfig.from_pretrained(path)
    decoder, auto = hf_model_class(config)
    check_checkpoint(path, auto, config)
    ckpt = SafetensorsCheckpoint(path)
    with _parameters_on_meta():
        inner = auto.from_config(config, torch_dtype=torch.float32, attn_implementation="sdpa")
    with_placeholders(inner.eval())
    wrapped = (CausalLMLogits(inner) if decoder else EncoderHidden(inner)).eval()
    prefix = next(n for n, m in wrapped.named_children()) + "."
    base = getattr(inner, "base_model_prefix", "") or ""
    names: dict[str, str] = {}
    aliases: dict[int, list[str]] = {}
    for n, p in wrapped.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(n)
    for group in aliases.values():
        for n in group:  # a tied parameter is stored under one of its names
            found = _checkpoint_name(n.removeprefix(prefix), base, ckpt)
            if found is not None:
                for m in group:
                    names.setdefault(m, found)
                break
    for n, _ in wrapped.named_buffers():
        found = _checkpoint_name(n.removeprefix(prefix), base, ckpt)
        if found is not None:
            names[n] = found
    for n, _ in wrapped.named_parameters():  # before the slow export, not at its layer
        if n not in names:
            raise SpokeshaveError(f"{path}: the checkpoint has no tensor for parameter "
                                  f"'{n.removeprefix(prefix)}' of the model its config.json builds")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tok = None
    loaded = _hf_loaded(wrapped, config, tok, decoder,
                        {"kind": "hf", "path": os.path.abspath(path), "streamed": True,
                         "returns": "logits" if decoder else "last_hidden_state"})
    return Streamed(loaded, ckpt, names)


def _checkpoint_name(name: str, base: str, ckpt: SafetensorsCheckpoint) -> str | None:
    from .checkpoints import name_variants

    for key in name_variants(name, base):
        if key in ckpt.where:
            return key
    return None


# ---------------------------------------------------------------------- the driver


@dataclass
class StreamResult:
    """What `compile_streaming` did: the artifact, sizes, per-layer report and times."""

    path: str
    module: Module
    inputs: list
    layers: list[LayerEntry]
    bytes_before: int
    bytes_after: int
    segments: list[tuple[str, float]]   # (segment, seconds)


Progress = Callable[[int, int, str, float], None]


def compile_streaming(streamed: Streamed, output: str, pipeline: str | None = None,
                      calibration: list | None = None, backend: str = "reference",
                      target: Any = None, progress: Progress | None = None) -> StreamResult:
    """Compile `streamed` segment by segment into the artifact `output` (see the module
    docstring). `calibration`: batches of the model's inputs; `progress(done, total, name,
    seconds)` is called after each segment."""
    from . import api
    from .artifact import write_artifact
    from .compiler.frontend import import_model
    from .compiler.signature import check_inputs

    chosen, tgt, pm = api._plan(backend, target, pipeline)
    _check_layer_local(pm)
    split = None if calibration is None else api._split_calibration(calibration)
    loaded = streamed.loaded
    imported = import_model(loaded.model, loaded.example, None, loaded.dynamic_shapes)
    func = imported.module.entry
    flats = [] if split is None else api._flatten_calibration(split, imported.in_spec)
    for i, b in enumerate(flats):
        check_inputs(b, imported.inputs, f"calibration batch {i}")
    env: dict[Value, list[Any]] = {a: [b[k] for b in flats] for k, a in enumerate(func.user_inputs())}
    segments = plan_segments(func)
    param_types = {n: a.type.torch_dtype for n, a in func.params().items()}
    before = sum(_nbytes(a.type) for a in func.params().values())
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".spk-stream-", dir=parent)
    layers: list[LayerEntry] = []
    times: list[tuple[str, float]] = []
    sources: dict[str, str] = {}
    shards: list[str] = []
    written: set[str] = set()
    remaining = {op for s in segments for op in s.ops}  # ops of the segments not yet compiled
    with _large_blocks_unmapped(), _collector_skips_what_exists():
        try:
            for k, seg in enumerate(segments):
                remaining.difference_update(seg.ops)
                t0 = time.perf_counter()
                sub = outline(func, seg)
                weights = WeightStore(_read_segment(seg.params, streamed, imported.weights, param_types))
                batches = [tuple(env[v][b] for v in seg.inputs) for b in range(len(flats))] or None
                cm = api._compile(Module([sub]), weights, PassManager.parse(pm.pipeline), chosen, tgt,
                                  None if batches is None else [(b, {}) for b in batches], None, None,
                                  None, None, True, False, None)
                outs = [cm.executable(*b) for b in batches or []]
                compiled = cm.module.entry
                shard = {n: cm.weights[n] for n in compiled.params() if n not in written}
                if shard:
                    shards.append(os.path.join(work, f"shard-{k:05d}.safetensors"))
                    WeightStore(shard).save(shards[-1])
                    written.update(shard)
                for name, text in cm.executable.sources.items():
                    if name != "module.mlir" and text not in sources.values():
                        sources[f"{seg.name}.{os.path.basename(name)}"] = text
                layers += cm.context.report
                new = splice(func, seg, compiled)
                for j, v in enumerate(new):
                    env[v] = [o[j] for o in outs]
                for v in [v for v in env if not any(u in remaining for u in v.uses)]:
                    del env[v]
                del cm, weights, shard, outs, batches, sub, compiled
                release_freed_memory()
                times.append((seg.name, time.perf_counter() - t0))
                if progress is not None:
                    progress(k + 1, len(segments), seg.name, times[-1][1])
            verify(imported.module)
            after = sum(_nbytes(a.type) for a in func.params().values())
            merged = os.path.join(work, "weights.safetensors")
            merge_safetensors(shards, merged, keep=set(func.params()))
            for s in shards:
                os.remove(s)
            write_artifact(output, imported.module, merged, sources, {
                "pipeline": pm.pipeline, "backend": chosen.name, "target": tgt.spec(),
                "inputs": imported.inputs, "in_spec": imported.in_spec,
                "out_spec": imported.out_spec, "source": loaded.source})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return StreamResult(output, imported.module, imported.inputs, layers, before, after, times)


# glibc's mallopt parameters (malloc.h) and the ceiling of its dynamic mmap threshold on 64-bit
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DYNAMIC_MMAP_MAX = 32 << 20


@contextlib.contextmanager
def _large_blocks_unmapped() -> Iterator[None]:
    """While the segments compile, every allocation of 1 MiB or more gets a mapping of its
    own, so freeing it gives it back to the system at once.

    Why: glibc raises its mmap threshold to the size of each large block freed (up to
    32 MiB). After the first weight is freed, a segment's weight-sized temporaries come
    from the heap. There freed blocks stay resident and fragment until `malloc_trim`. On a
    19-layer checkpoint with 99 MiB per layer that doubled the peak growth: 568 MiB against
    282-414. glibc cannot turn its dynamic rule back on afterwards, so on the way out the
    thresholds are left where that rule settles in a process that frees large blocks
    (mmap 32 MiB, trim twice that). On other C libraries this does nothing."""
    libc = _glibc()
    if libc is None:
        yield
        return
    mallopt = libc.mallopt
    mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_MMAP_MAX)
        mallopt(_M_TRIM_THRESHOLD, 2 * _DYNAMIC_MMAP_MAX)


@contextlib.contextmanager
def _collector_skips_what_exists() -> Iterator[None]:
    """While the segments compile, the cyclic garbage collector leaves alone every object
    that exists when they start (`gc.freeze`): the export, the whole model's IR and torch's
    own state are millions of objects that a full collection walked after each segment
    (0.45 s of a 1.1 s segment on a 19-layer model), to free only what that segment made.
    Left as it was when the process had frozen objects of its own."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release_freed_memory() -> None:
    """Give freed memory back to the system now (after each segment; before a measurement): its IR and pass context hold its tensors in
    reference cycles (gc), and glibc keeps freed blocks in its per-thread arenas rather than
    return them to the system (malloc_trim), which would grow the resident set by about a
    segment's weights per segment."""
    gc.collect()
    libc = _glibc()
    if libc is not None:  # other C libraries' allocators return memory their own way
        libc.malloc_trim(0)


def _glibc() -> Any:
    """glibc, for its allocator controls (`mallopt`, `malloc_trim`); None on another C library."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _check_layer_local(pm: PassManager) -> None:
    for p in pm.passes:
        if not p.layer_local:
            raise SpokeshaveError(f"pass '{p.name}' rewrites across layers, so it cannot run on "
                                  f"one layer at a time; compile without streaming (the model "
                                  f"must fit in memory) or leave '{p.name}' out of the pipeline")


def _read_segment(params: list[str], streamed: Streamed, imported: WeightStore,
                  dtypes: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """The segment's parameters: from the checkpoint, or (buffers the model computes and
    lifted constants) the real tensors export kept."""
    want = {streamed.names[p]: dtypes[p] for p in params if p in streamed.names}
    data = streamed.checkpoint.read(want)
    out = {}
    for p in params:
        if p in streamed.names:
            out[p] = data[streamed.names[p]]
        elif not is_placeholder(imported[p]):
            out[p] = imported[p]
        else:
            raise SpokeshaveError(f"{streamed.checkpoint.directory}: the checkpoint has no tensor "
                                  f"for parameter '{p}' of the model its config builds")
    return out


def _nbytes(t: Any) -> int:
    n = t.numel()
    return 0 if n is None else n * t.torch_dtype.itemsize
