"""The quality report of a compressed model: what each layer became and what it cost.

Compression passes append one typed `LayerEntry` per layer to `PassContext.report` (scheme,
bits per weight, sparsity, the layer's relative output error on the calibration tokens
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

# Statuses a pass gives a layer; "skipped" entries carry the reason.
SKIPPED = "skipped"


@dataclass
class LayerEntry:
    """What one pass did to one layer. `rel_err` is the output error over the calibration
    tokens (present when the input covariance was collected); `weight_rel_err` the relative
    Frobenius error of the weight. `details` holds what only that pass reports (a smoothing
    alpha, the channels moved first, a rank)."""

    pass_name: str
    layer: str
    status: str
    scheme: str = ""
    method: str = ""
    op: str = ""
    reason: str = ""
    in_features: int | None = None
    out_features: int | None = None
    bits_per_weight: float | None = None
    bytes: int | None = None
    sparsity: float | None = None
    weight_rel_err: float | None = None
    rel_err: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.status == SKIPPED

    @property
    def error(self) -> float | None:
        """The error to show: the output error when measured, else the weight error."""
        return self.rel_err if self.rel_err is not None else self.weight_rel_err


@dataclass(frozen=True)
class EndToEnd:
    """The compiled model against the eager one on the calibration batches."""

    batches: int
    rel_mse: float
    max_rel_mse: float
    min_cosine: float


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

    layers: list[LayerEntry] = field(default_factory=list)
    end_to_end: EndToEnd | None = None
    activations: str = ""   # the float element types the model runs in ("bf16"; "" unknown)

    @staticmethod
    def measure(entries: list[LayerEntry], batches: list | None,
                reference: Callable[..., Any], compiled: Callable[..., Any],
                activations: str = "") -> "QualityReport":
        e2e = None
        if batches:
            rels, coss = [], []
            with torch.no_grad():
                for args, kwargs in batches:
                    rel, cos = output_error(reference(*args, **kwargs), compiled(*args, **kwargs))
                    rels.append(rel)
                    coss.append(cos)
            e2e = EndToEnd(len(batches), sum(rels) / len(rels), max(rels), min(coss))
        return QualityReport(list(entries), e2e, activations)

    def by_layer(self, pass_name: str | None = None) -> dict[str, LayerEntry]:
        """The last entry per layer (of one pass, if given)."""
        return {e.layer: e for e in self.layers if pass_name is None or e.pass_name == pass_name}

    def skipped(self) -> list[LayerEntry]:
        return [e for e in self.layers if e.skipped]

    def __str__(self) -> str:
        head = f"{'layer':<48} {'pass':<16} {'scheme':<8} {'bits/w':>6} {'sparsity':>8} {'rel err':>10}  status"
        lines = [head, "-" * len(head)]
        for e in self.layers:
            status = e.status + (f" ({e.reason})" if e.reason else "")
            cells = ("" if e.bits_per_weight is None else f"{e.bits_per_weight:.2f}",
                     "" if e.sparsity is None else f"{e.sparsity:.2f}",
                     "" if e.error is None else f"{e.error:.3e}")
            lines.append(f"{e.layer:<48.48} {e.pass_name:<16.16} {e.scheme:<8.8} "
                         f"{cells[0]:>6} {cells[1]:>8} {cells[2]:>10}  {status}")
        if self.activations:
            lines.append(f"activations: {self.activations}")
        if self.end_to_end:
            d = self.end_to_end
            lines.append(f"end to end over {d.batches} calibration batches: relative MSE "
                         f"{d.rel_mse:.3e} (worst batch {d.max_rel_mse:.3e}), min cosine "
                         f"{d.min_cosine:.6f}")
        else:
            lines.append("end to end: not measured (compile with calibration=[batches])")
        return "\n".join(lines)

    def save_plot(self, path: str) -> str:
        """A bar chart of each layer's relative error (log scale), skipped layers marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.layers
        fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(rows) + 2), 4))
        errs, colors = [], []
        palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        passes = sorted({e.pass_name for e in rows})
        for e in rows:
            skipped = e.skipped or e.error is None
            errs.append(float("nan") if skipped else max(e.error, 1e-12))
            colors.append("lightgray" if skipped else palette[passes.index(e.pass_name) % len(palette)])
        x = list(range(len(rows)))
        ax.bar(x, errs, color=colors)
        for i, v in enumerate(errs):
            if math.isnan(v):  # drawn in axes coordinates: a log axis has no zero to stand on
                ax.text(i, 0.02, "skipped", transform=ax.get_xaxis_transform(), rotation=90,
                        fontsize=7, ha="center", va="bottom", color="gray")
        ax.set_yscale("log")
        ax.set_ylabel("relative output error (calibration)")
        ax.set_xticks(x)
        ax.set_xticklabels([e.layer for e in rows], rotation=90, fontsize=5 if len(rows) > 30 else 8)
        title = "per-layer error"
        if self.end_to_end:
            title += f" — end to end rel. MSE {self.end_to_end.rel_mse:.2e}"
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
