"""The quality report of a compressed model: what each layer became and what it cost.

Compression passes append one entry per layer to `PassContext.report` (scheme, bits per
weight, sparsity, the layer's relative output error on the calibration tokens
`tr(dW H dW^T) / tr(W H W^T)`, or why it was skipped). `QualityReport` adds the end-to-end
error of the compiled model against the eager model on the calibration batches, prints a
table, and saves a per-layer error plot (PNG). It is what a user reads to trust a
compressed model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def _float_leaves(x: Any) -> list[torch.Tensor]:
    return [t.detach().double().flatten() for t in torch.utils._pytree.tree_leaves(x)
            if isinstance(t, torch.Tensor) and t.is_floating_point()]


def output_error(reference: Any, compiled: Any) -> tuple[float, float]:
    """(relative MSE, cosine) between two model outputs, over all float leaves."""
    a = torch.cat(_float_leaves(reference)) if _float_leaves(reference) else torch.zeros(1)
    b = torch.cat(_float_leaves(compiled)) if _float_leaves(compiled) else torch.zeros(1)
    rel = float(((a - b) ** 2).sum() / (a ** 2).sum().clamp_min(1e-300))
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return rel, cos


@dataclass
class QualityReport:
    """Per-layer entries plus end-to-end error (None when there was no calibration data)."""

    layers: list[dict] = field(default_factory=list)
    end_to_end: dict | None = None

    @staticmethod
    def measure(entries: list[dict], batches: list | None,
                reference: Callable[..., Any], compiled: Callable[..., Any]) -> "QualityReport":
        e2e = None
        if batches:
            rels, coss = [], []
            with torch.no_grad():
                for args, kwargs in batches:
                    rel, cos = output_error(reference(*args, **kwargs), compiled(*args, **kwargs))
                    rels.append(rel)
                    coss.append(cos)
            e2e = {"batches": len(batches), "rel_mse": sum(rels) / len(rels),
                   "max_rel_mse": max(rels), "min_cosine": min(coss)}
        return QualityReport(list(entries), e2e)

    def rows(self) -> list[dict]:
        return [e for e in self.layers if "layer" in e]

    def __str__(self) -> str:
        head = f"{'layer':<48} {'pass':<16} {'scheme':<8} {'bits/w':>6} {'sparsity':>8} {'rel err':>10}  status"
        lines = [head, "-" * len(head)]
        for e in self.rows():
            bits = e.get("bits_per_weight")
            err = e.get("rel_err", e.get("weight_rel_err"))
            status = e.get("status", "")
            if e.get("reason"):
                status += f" ({e['reason']})"
            sparsity = e.get("sparsity")
            cells = ("" if bits is None else f"{bits:.2f}", "" if sparsity is None else f"{sparsity:.2f}",
                     "" if err is None else f"{err:.3e}")
            lines.append(f"{e['layer']:<48.48} {e.get('pass', ''):<16.16} {str(e.get('scheme', '')):<8.8} "
                         f"{cells[0]:>6} {cells[1]:>8} {cells[2]:>10}  {status}")
        if self.end_to_end:
            d = self.end_to_end
            lines.append(f"end to end over {d['batches']} calibration batches: relative MSE "
                         f"{d['rel_mse']:.3e} (worst batch {d['max_rel_mse']:.3e}), min cosine "
                         f"{d['min_cosine']:.6f}")
        else:
            lines.append("end to end: not measured (compile with calibration=[batches])")
        return "\n".join(lines)

    def save_plot(self, path: str) -> str:
        """A bar chart of each layer's relative error (log scale), skipped layers marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(rows) + 2), 4))
        errs, colors, labels = [], [], []
        palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        passes = sorted({e.get("pass", "") for e in rows})
        for e in rows:
            err = e.get("rel_err", e.get("weight_rel_err"))
            skipped = e.get("status") == "skipped" or err is None
            errs.append(float("nan") if skipped else max(err, 1e-12))
            colors.append("lightgray" if skipped else palette[passes.index(e.get("pass", "")) % len(palette)])
            labels.append(e["layer"])
        x = list(range(len(rows)))
        ax.bar(x, [float("nan") if math.isnan(v) else v for v in errs], color=colors)
        for i, v in enumerate(errs):
            if math.isnan(v):  # drawn in axes coordinates: a log axis has no zero to stand on
                ax.text(i, 0.02, "skipped", transform=ax.get_xaxis_transform(), rotation=90,
                        fontsize=7, ha="center", va="bottom", color="gray")
        ax.set_yscale("log")
        ax.set_ylabel("relative output error (calibration)")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=90, fontsize=5 if len(rows) > 30 else 8)
        title = "per-layer error"
        if self.end_to_end:
            title += f" — end to end rel. MSE {self.end_to_end['rel_mse']:.2e}"
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
