"""Compile a checkpoint layer by layer, holding one layer at a time, and show the peak memory.

    python examples/stream_compile.py [--layers 6 --hidden 2048] [--bound-mib 400]

Writes a Llama-style checkpoint with random weights (Hugging Face layout: `config.json`,
one safetensors shard per layer and `model.safetensors.index.json`; written one layer at a
time too), then compiles it on the streaming path (`spokeshave.streaming`): the model is a
skeleton whose parameters hold no data, and each layer's weights are read, calibrated on the
activations the already-compressed layers before it produce, compressed, written out and
freed. The process's peak resident memory during the compile is measured (Linux `VmHWM`,
reset before the compile starts) and compared with the checkpoint's size; `--bound-mib`
makes the script fail when the peak grows by more than that. Finally the artifact is loaded
and checked against the eager model (which, unlike the compile, holds every weight).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import torch


def write_checkpoint(path: str, layers: int, hidden: int, intermediate: int, vocab: int,
                     seed: int = 0) -> int:
    """A random Llama checkpoint, one shard per layer; returns its size in bytes."""
    import transformers
    from safetensors.torch import save_file

    from spokeshave.compiler.segments import layer_of

    heads = max(hidden // 128, 1)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(heads // 4, 1),
        max_position_embeddings=512, tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    os.makedirs(path, exist_ok=True)
    config.save_pretrained(path)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in transformers.LlamaForCausalLM(config).state_dict().items()}
    groups: dict[str, list[str]] = {}
    for name in shapes:
        groups.setdefault(layer_of(name) or "rest", []).append(name)
    g = torch.Generator().manual_seed(seed)
    index, total = {}, 0
    for i, (group, names) in enumerate(groups.items()):
        shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.ones(shapes[n]) if n.endswith("norm.weight")
                       else torch.randn(shapes[n], generator=g) * 0.02) for n in names}
        save_file(tensors, os.path.join(path, shard))
        total += os.path.getsize(os.path.join(path, shard))
        index.update({n: shard for n in names})
        del tensors
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": index}, f)
    return total


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakRSS:
    """The peak resident memory from `start()` on: Linux's `VmHWM`, reset to the current RSS
    by `/proc/self/clear_refs`; where that reset is refused, a thread sampling `VmRSS`
    every millisecond."""

    def start(self) -> "PeakRSS":
        self.base = _rss_mib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.sampled = None
        except OSError:
            self.sampled, self._stop = self.base, threading.Event()
            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.sampled = max(self.sampled, _rss_mib("VmRSS"))

    def peak(self, stop: bool = True) -> float:
        if self.sampled is None:
            return _rss_mib("VmHWM")
        if stop:
            self._stop.set()
        return self.sampled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=None, help="default: 2.75x hidden")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--pipeline", default="smooth{alpha=0.5},quantize{scheme=w8a8}")
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--bound-mib", type=float, default=None,
                    help="fail if the peak RSS grows by more than this during the compile")
    ap.add_argument("--workdir", default=None, help="where the checkpoint and artifact go")
    args = ap.parse_args(argv)

    import spokeshave
    from spokeshave.streaming import compile_streaming, release_freed_memory, stream_checkpoint

    work = args.workdir or tempfile.mkdtemp(prefix="spokeshave-stream-")
    ckpt, out = os.path.join(work, "llama-random"), os.path.join(work, "llama-random.spk")
    inter = args.intermediate or int(args.hidden * 2.75) // 64 * 64
    size = write_checkpoint(ckpt, args.layers, args.hidden, inter, args.vocab)
    print(f"checkpoint: {ckpt}: {args.layers} layers, hidden {args.hidden}, intermediate {inter}, "
          f"{size / 2**20:.0f} MiB of float32 safetensors")
    g = torch.Generator().manual_seed(1)
    calibration = [(torch.randint(0, args.vocab, (2, 32), generator=g),),
                   (torch.randint(0, args.vocab, (1, 48), generator=g),)]

    streamed = stream_checkpoint(ckpt)
    release_freed_memory()  # what writing the checkpoint freed must not hide the compile's own use
    meter = PeakRSS().start()
    t0 = time.perf_counter()

    def progress(done: int, total: int, name: str, seconds: float) -> None:
        print(f"  [{done}/{total}] {name:<28} {seconds:5.1f} s   rss {_rss_mib('VmRSS'):6.0f} MiB, "
              f"peak so far {meter.peak(stop=False):6.0f} MiB", flush=True)

    result = compile_streaming(streamed, out, args.pipeline, calibration, backend=args.backend,
                               progress=progress)
    peak = meter.peak()
    grew = peak - meter.base
    print(f"compiled in {time.perf_counter() - t0:.1f} s: weights {result.bytes_before / 2**20:.0f} "
          f"MiB -> {result.bytes_after / 2**20:.0f} MiB")
    print(f"peak RSS during the compile: {peak:.0f} MiB, {grew:.0f} MiB above the {meter.base:.0f} "
          f"MiB at its start; the checkpoint is {size / 2**20:.0f} MiB, {size / 2**20 / grew:.1f}x "
          f"that growth" + (f" (bound {args.bound_mib:.0f} MiB: the checkpoint is "
                            f"{size / 2**20 / args.bound_mib:.1f}x it)" if args.bound_mib else ""))

    del streamed
    cm = spokeshave.load(out, backend=args.backend)
    from spokeshave.checkpoints import load_model

    eager = load_model(ckpt).model
    x = torch.randint(0, args.vocab, (2, 24), generator=g)
    with torch.no_grad():
        a, e = cm(x), eager(x)
    cos = torch.nn.functional.cosine_similarity(a.flatten(), e.flatten(), 0).item()
    print(f"loaded {out}: logits cosine vs eager {cos:.5f} at 2x24 "
          f"({'ok' if cos >= 0.99 else 'MISSED'} bar 0.99)")
    if cos < 0.99:
        return 1
    if args.bound_mib is not None and grew > args.bound_mib:
        print(f"FAIL: the compile grew the peak RSS by {grew:.0f} MiB, over the "
              f"{args.bound_mib:.0f} MiB bound", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
