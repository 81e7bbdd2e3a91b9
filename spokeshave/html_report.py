"""`spokeshave compile --report report.html`: one self-contained HTML file (plots inlined as
PNG data) with the compile summary, the per-layer error plot and table, and the latency
against eager at each measured shape."""
from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from typing import Any

from .compiler.errors import SpokeshaveError
from .compiler.report import EndToEnd, LayerEntry, QualityReport


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode()


def _latency_png(latency: list[tuple[str, float, float]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(latency) + 2), 3.5))
    x = range(len(latency))
    ax.bar([i - 0.2 for i in x], [e * 1e3 for _, e, _ in latency], 0.4, label="eager")
    ax.bar([i + 0.2 for i in x], [o * 1e3 for _, _, o in latency], 0.4, label="spokeshave")
    for i, (_, e, o) in enumerate(latency):
        ax.text(i + 0.2, o * 1e3, f"{e / o:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels([s for s, _, _ in latency])
    ax.set_ylabel("ms per call (median)")
    ax.set_ylim(0, 1.25 * max(max(e, o) for _, e, o in latency) * 1e3)
    ax.set_title("latency against eager")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _error_png(layers: list[LayerEntry], e2e: EndToEnd | None) -> str:
    with tempfile.TemporaryDirectory() as d:
        path = QualityReport(list(layers), e2e).save_plot(os.path.join(d, "err.png"))
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()


def _table(layers: list[LayerEntry]) -> str:
    head = ("layer", "pass", "scheme", "bits/w", "sparsity", "rel err", "status")
    rows = []
    for e in layers:
        cells = (e.layer, e.pass_name, e.scheme,
                 "" if e.bits_per_weight is None else f"{e.bits_per_weight:.2f}",
                 "" if e.sparsity is None else f"{e.sparsity:.2f}",
                 "" if e.error is None else f"{e.error:.3e}",
                 e.status + (f" ({e.reason})" if e.reason else ""))
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>")


def write_report(path: str, title: str, summary: list[str], layers: list[LayerEntry],
                 end_to_end: EndToEnd | None = None,
                 latency: list[tuple[str, float, float]] | None = None) -> str:
    """Write the report to `path`; `latency`: (shape, eager seconds, compiled seconds)."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             "<pre>" + html.escape("\n".join(summary).strip("\n")) + "</pre>"]
    if latency:
        parts.append(f'<h2>Latency</h2><img alt="latency" src="data:image/png;base64,'
                     f'{_latency_png(latency)}">')
    if layers:
        parts.append(f'<h2>Per-layer error</h2><img alt="per-layer error" '
                     f'src="data:image/png;base64,{_error_png(layers, end_to_end)}">')
        parts.append("<h2>Layers</h2>" + _table(layers))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}img{max-width:100%}")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise SpokeshaveError(f"{path}: cannot write the report ({e.strerror})") from None
    return path
