"""The claims figure: one panel per claim, its value with a 2-SE bar against its threshold."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt

from .common import save


def plot_claims(rows: list[dict], out_path) -> None:
    """``rows``: ``opd.claims.evaluate_claims`` output. Green: holds; red: does not; grey: not run."""
    fig, axes = plt.subplots(1, len(rows), figsize=(2.3 * len(rows), 3.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        v, se = r["value"], r["se"]
        color = {True: "tab:green", False: "tab:red"}.get(r["holds"], "0.7")
        if isinstance(v, float) and math.isfinite(v):
            ax.bar([0], [v], yerr=[2 * se if math.isfinite(se) else 0], color=color, capsize=4)
            if isinstance(r["threshold"], (int, float)):
                ax.axhline(r["threshold"], color="k", ls="--", lw=1)
            ax.axhline(0, color="k", lw=0.5)
        else:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="0.4")
        verdict = {True: "holds", False: "does not hold"}.get(r["holds"], "not run")
        ax.set_title(f"{r['claim']}: {verdict}", fontsize=9, color=color if r["holds"] != "" else "0.4")
        ax.set_xticks([])
        ax.set_xlabel(r["metric"], fontsize=7, wrap=True)
    fig.suptitle("The paper's claims in this world (bar: value, whisker: 2 SE, dashed: threshold)", fontsize=9)
    save(fig, out_path, rect=(0, 0, 1, 0.93))
