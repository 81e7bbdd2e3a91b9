"""2:4 sparsity on the bundled all-MiniLM-L6-v2: embedding quality per pruning method.

    python benchmarks/sparsity_minilm.py [--no-sweep] [--threads N]

Metric, evaluation and calibration sets: `benchmarks/_minilm.py` (min over 32 sentences of
the cosine between compiled and fp32 mean-pooled embeddings). Rows:

- `sparsify{method=magnitude|wanda|sparsegpt}` on every linear (37: 36 in the encoder and
  the pooler, which the mean-pooled embedding does not read), and variants (more damping,
  `sequential=true`, a whitened rank-16 `lorc` correction of the pruning error);
- the per-layer sensitivity (min cosine with only that layer pruned, by sparsegpt);
- `skip=` the k most sensitive layers, for growing k, with wanda and sparsegpt, and the
  fraction of the encoder's linear weights still pruned; the best row is then compiled
  for real with that `skip=` glob to confirm it.

By default the pass takes its statistics
from the unpruned model, so the weights it gives a layer do not depend on which other
layers are pruned: the sensitivity and skip sweeps reuse the layers of the full runs (dense
weights for the skipped layers) and only the chosen row is recompiled.
"""
from __future__ import annotations

import argparse
import time

import torch

import _minilm
from _minilm import CALIBRATION, SENTENCES, SHORT_CALIBRATION, last_hidden
from spokeshave import CompiledModel
from spokeshave.compiler.numerics.sparse import decompress_24


class Bench(_minilm.Bench):
    """Adds the linears' sizes and scoring of the eager model with some layers replaced."""

    def __init__(self):
        super().__init__()
        func = self.imported.module.entry
        self.layer_numel = {}
        for op in func.body.ops:
            if op.name == "aten.linear":
                self.layer_numel[func.param_name(op.operands[1])[: -len(".weight")]] = \
                    op.operands[1].type.numel()

    def min_cosine(self, pipeline: str) -> tuple[torch.Tensor, CompiledModel]:
        """Per-sentence cosines, sorted ascending (the first is the metric), and the model."""
        cm, _ = self.compile(pipeline)
        return self.cosines(cm).sort().values, cm

    def min_cosine_mixed(self, pruned: dict[str, torch.Tensor], use: set[str]) -> float:
        """Eager model with the layers in `use` replaced by their pruned dense weights."""
        state = {f"{layer}.weight": pruned[layer] for layer in use}
        originals = {n: p.detach().clone() for n, p in self.model.named_parameters() if n in state}
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for n, w in state.items():
                params[n].copy_(w)
            try:
                return float(self.cosines_of(last_hidden(self.model(*self.inputs))).min())
            finally:
                for n, w in originals.items():
                    params[n].copy_(w)


def dense_layers(cm: CompiledModel) -> dict[str, torch.Tensor]:
    """Each sparsified layer's weight, decompressed (exactly what the kernel multiplies by)."""
    out = {}
    for name in cm.weights:
        if name.endswith(".sparse_values"):
            layer = name[: -len(".sparse_values")]
            out[layer] = decompress_24(cm.weights[name], cm.weights[f"{layer}.sparse_meta"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-sweep", action="store_true", help="only the method rows")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default; 1 is faster on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    b = Bench()
    encoder = [n for n in b.layer_numel if n.startswith("encoder.")]
    total = sum(b.layer_numel[n] for n in encoder)
    print(f"all-MiniLM-L6-v2: {len(b.layer_numel)} linears ({len(encoder)} in the encoder, "
          f"{total / 1e6:.2f}M weights); {len(SENTENCES)} eval sentences, "
          f"{len(CALIBRATION) + len(SHORT_CALIBRATION)} "
          f"calibration sentences in {len(b.calibration)} batches; export {b.export_s:.1f}s")
    print(f"metric: min over {len(SENTENCES)} sentences of cos(mean-pooled compiled, fp32)\n")
    print(f"{'pipeline':58s} {'min cos':>8s} {'2nd':>8s} {'mean':>8s} {'compile':>8s}")

    def row(p: str, label: str | None = None) -> tuple[float, CompiledModel]:
        t0 = time.perf_counter()
        cos, cm = b.min_cosine(p)
        print(f"{label or p:58s} {float(cos[0]):8.4f} {float(cos[1]):8.4f} {float(cos.mean()):8.4f} "
              f"{time.perf_counter() - t0:7.1f}s", flush=True)
        return float(cos[0]), cm

    pruned = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned[method] = dense_layers(row(f"sparsify{{pattern=2:4 method={method}}}")[1])
    row("sparsify{pattern=2:4 method=sparsegpt percdamp=0.1}")
    row("sparsify{pattern=2:4 method=wanda sequential=true}")
    row("sparsify{pattern=2:4 method=sparsegpt sequential=true}")
    row("sparsify{pattern=2:4 method=sparsegpt},lorc{rank=16 whiten=true}")
    if args.no_sweep:
        return

    # With one-shot statistics (the default, sequential=false) a layer's pruned weights do
    # not depend on the other layers: any skip set is the full run minus those layers.

    print("\nper-layer sensitivity (only this layer pruned, sparsegpt): 1 - min cos")
    sens = {n: 1.0 - b.min_cosine_mixed(pruned["sparsegpt"], {n}) for n in encoder}
    ranked = sorted(encoder, key=sens.get, reverse=True)
    for layer in ranked[:10]:
        print(f"  {layer:48s} {sens[layer]:.5f}")

    print("\nskip= the k most sensitive layers (ranked above)")
    print(f"{'k':>3s} {'encoder weights pruned':>23s} {'magnitude':>10s} {'wanda':>8s} "
          f"{'sparsegpt':>10s}")
    rows = []
    for k in (0, 1, 2, 3, 4, 6, 8, 12):
        use = set(pruned["sparsegpt"]) - set(ranked[:k])
        frac = 1.0 - sum(b.layer_numel[n] for n in ranked[:k]) / total
        r = {m: b.min_cosine_mixed(pruned[m], use) for m in ("magnitude", "wanda", "sparsegpt")}
        rows.append((k, frac, r))
        print(f"{k:3d} {100 * frac:22.1f}% {r['magnitude']:10.4f} {r['wanda']:8.4f} "
              f"{r['sparsegpt']:10.4f}", flush=True)
    for target in (0.9, 0.95):
        fit = [(k, f) for k, f, r in rows if r["sparsegpt"] >= target]
        if fit:
            print(f"  sparsegpt reaches {target} skipping {fit[0][0]} layers "
                  f"({100 * fit[0][1]:.1f}% of encoder weights pruned)")
    # confirm the row that keeps the most weights pruned while reaching 0.9 (else the best)
    good = [k for k, _, r in rows if r["sparsegpt"] >= 0.9]
    k = good[0] if good else max(rows, key=lambda r: r[2]["sparsegpt"])[0]
    skip = "|".join(ranked[:k])
    print(f"\nconfirmed by real compiles, skip=\"{skip}\":")
    for opts in ("", " percdamp=0.1"):
        row(f'sparsify{{method=sparsegpt{opts} skip="{skip}"}}', f"sparsegpt{opts}, skip {k}")


if __name__ == "__main__":
    main()
