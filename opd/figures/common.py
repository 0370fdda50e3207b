"""Shared pieces of the figures: the matplotlib backend, atomic saving, smoothing, placeholders."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from opd.io import atomic_path  # noqa: E402


def moving_average(values, window: int) -> list[float]:
    """Trailing mean over up to ``window`` points (the first points average what exists)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def save(fig, out_path, rect=None) -> None:
    """Tight layout (within ``rect``, to leave room for a figure legend), then write the PNG
    atomically and close the figure."""
    fig.tight_layout(rect=rect)
    with atomic_path(out_path, Path(out_path).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def placeholder(out_path, title: str, note: str) -> None:
    """A small PNG that says why a figure has nothing to show (the output set stays fixed)."""
    fig, ax = plt.subplots(figsize=(7, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.45, note, ha="center", va="center", wrap=True, fontsize=10)
    save(fig, out_path)


def color(i: int) -> str:
    return f"C{i % 10}"
