"""`torch.compile` the bundled all-MiniLM-L6-v2 with `backend="spokeshave"` and a w8a8
pipeline, and check it against eager PyTorch.

    python examples/torch_compile_minilm.py [--pipeline PIPELINE] [--calibration N]

No import of spokeshave is needed for the compile itself: `torch.compile` finds the backend
through its entry point. The first `--calibration` calls (batches of other sentences, of
other sizes) run the captured graph as it is and are recorded; the model is then compiled
through the pipeline (default: SmoothQuant-style smoothing, then int8 weights and int8
per-token activations with GPTQ) on the best backend for this machine. Eight sentences are
then encoded at two batch sizes; the script prints the sentence embeddings' min cosine
against eager (bar: 0.99) and the speed-up at batch 8, and exits 1 if the bar is missed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")]

import torch  # noqa: E402

import spokeshave_models as models  # noqa: E402  (loaders shared with the tests)
from _minilm import CALIBRATION, mean_pool  # noqa: E402

PIPELINE = "smooth{alpha=0.75},quantize{scheme=w8a8 method=gptq},canonicalize,cse,dce,fuse"
MIN_COSINE = 0.99


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default=PIPELINE)
    ap.add_argument("--calibration", type=int, default=4, help="calls recorded for calibration")
    args = ap.parse_args(argv)
    model, tok = models.load_minilm()
    if tok is None:
        print("error: the MiniLM tokenizer does not load offline", file=sys.stderr)
        return 1

    def encode(sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        e = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
        return e["input_ids"], e["attention_mask"]

    compiled = torch.compile(model, backend="spokeshave", dynamic=True,
                             options={"pipeline": args.pipeline, "calibration": args.calibration})
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(args.calibration):  # 8 sentences per call, lengths vary
            compiled(*encode(CALIBRATION[8 * i:8 * i + 8]))
        ok = True
        for sentences in (models.SENTENCES[:3], models.SENTENCES):
            ids, mask = encode(sentences)
            got, want = compiled(ids, mask), model(ids, mask)
            cos = torch.nn.functional.cosine_similarity(
                mean_pool(got.last_hidden_state, mask).double(),
                mean_pool(want.last_hidden_state, mask).double(), dim=-1).min().item()
            ok &= cos >= MIN_COSINE
            print(f"batch {ids.shape[0]} x {ids.shape[1]}: min cosine {cos:.6f} "
                  f"({'ok' if cos >= MIN_COSINE else 'below'} bar {MIN_COSINE})")
        print(f"calibration + compile + first calls: {time.perf_counter() - t0:.1f} s")
        ids, mask = encode(models.SENTENCES)
        times = {"eager": [], "spokeshave": []}
        for _ in range(5):
            for name, f in (("eager", model), ("spokeshave", compiled)):
                t = time.perf_counter()
                f(ids, mask)
                times[name].append(time.perf_counter() - t)
    eager, ours = (sorted(times[k])[2] for k in ("eager", "spokeshave"))
    print(f"batch 8: eager {eager * 1e3:.1f} ms, torch.compile(backend=\"spokeshave\") "
          f"{ours * 1e3:.1f} ms: {eager / ours:.2f}x")
    from spokeshave import dynamo

    print(dynamo.report())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
