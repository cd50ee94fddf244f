"""Report plots as PNG bytes (matplotlib, Agg backend): the A_a heat map over defenses × attacks and the sweep's
accuracy-against-parameter curves."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from sec4sr_core.base.errors import Sec4srError

        raise Sec4srError("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def heatmap(values: Sequence[Sequence[float | None]], rows: Sequence[str], cols: Sequence[str], title: str) -> bytes:
    """A heat map of accuracies in [0, 1] (None = not run), annotated in percent; rows × cols."""
    import numpy as np

    plt = _pyplot()
    data = np.array([[math.nan if v is None else 100 * float(v) for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(1, len(cols)), 0.9 + 0.45 * max(1, len(rows))))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=list(cols), rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            ax.text(j, i, "-" if math.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="accuracy (%)", fraction=0.046, pad=0.04)
    return _png(fig)


def sweep_plot(xs: Sequence[float], series: dict[str, Sequence[float | None]], xlabel: str, title: str,
               bands: dict[str, Sequence[object]] | None = None,
               reference: dict[str, tuple[float | None, object]] | None = None) -> bytes:
    """Accuracy (%) against a swept parameter, one line per series (benign dashed), each with its 95 % interval as
    a shaded band (``bands``: name -> one (lo, hi) or None per x, in [0, 1]) and the undefended values of
    ``reference`` (name -> (value, ci)) as dotted horizontal lines. The x axis is logarithmic when every value is
    positive and they span a factor of at least 8 (ε, SNR, steps, queries and EOT sweeps usually do)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    bands = bands or {}
    for name, ys in series.items():
        pts = [(x, 100 * y) for x, y in zip(xs, ys) if y is not None]
        if not pts:
            continue
        (ln,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name,
                        linestyle="--" if name == "benign" else "-")
        band = [(x, 100 * ci[0], 100 * ci[1]) for x, y, ci in zip(xs, ys, bands.get(name) or [None] * len(xs))
                if y is not None and ci]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                            color=ln.get_color(), alpha=0.15, linewidth=0)
    for name, (v, _ci) in (reference or {}).items():
        if v is not None:
            ax.axhline(100 * v, color="0.45", linestyle=":", linewidth=1)
            ax.annotate(f"undefended {name}" if not name.startswith("benign (") else name, (1.0, 100 * v),
                        xycoords=("axes fraction", "data"), fontsize=6, color="0.35", ha="right", va="bottom")
    positive = [x for x in xs if x > 0]
    if positive and len(positive) == len(xs) and max(xs) / min(xs) >= 8:
        ax.set_xscale("log")
        ax.set_xticks(list(xs), labels=[f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)
