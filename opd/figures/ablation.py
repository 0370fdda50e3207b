"""The objective ablation: experiments that differ only in their objective's strategy, weight
mode or ``top_k``, compared by final accuracy and final top-k overlap.

Two OPD experiments belong to one ablation group when their config entries (student, teacher,
cold start, prompts, backends) and resolved training configs are equal once the objective's
``strategy``, ``weight_mode`` and ``top_k`` are removed, and those three differ.  Final accuracy
is the avg@n of the last checkpoint on the figures' benchmark; final overlap is the last
checkpoint's probe (``opd/overlap_ratio`` on its evaluation generations), or, without probes,
the last training step's.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from opd.objectives.config import OPDConfig

from .common import color, placeholder, plt, save

OBJECTIVE_KEYS = ("strategy", "weight_mode", "top_k")
TITLE = "Objective ablation: final accuracy and final top-k overlap per variant"


def _fingerprint(spec: dict, resolved: dict) -> str:
    objective = {k: v for k, v in (resolved.get("objective") or {}).items() if k not in OBJECTIVE_KEYS}
    rest = {k: v for k, v in resolved.items() if k != "objective"}
    entry = {k: v for k, v in spec.items() if k != "train"}
    return json.dumps([entry, rest, objective], sort_keys=True, default=str)


def variant(resolved: dict) -> tuple:
    """(strategy, weight_mode, top_k) of a resolved config (``OPDConfig``'s defaults if unset)."""
    o = OPDConfig.from_dict(resolved.get("objective"))
    return tuple(getattr(o, k) for k in OBJECTIVE_KEYS)


def ablation_groups(experiments: dict, resolved: dict) -> list[list[str]]:
    """Groups (sorted, each of 2+ experiments) of OPD runs that differ only in their objective."""
    by_key: dict[str, list[str]] = {}
    for name in sorted(experiments):
        if experiments[name].get("method") != "opd":
            continue
        by_key.setdefault(_fingerprint(experiments[name], resolved[name]), []).append(name)
    return [g for g in by_key.values()
            if len(g) >= 2 and len({variant(resolved[n]) for n in g}) > 1]


def final_accuracy(table: pd.DataFrame, name: str, benchmark: str) -> float:
    """avg@n of the experiment's last checkpoint on ``benchmark`` (NaN if not graded)."""
    t = table[(table["experiment"] == name) & (table["kind"] == "step") & (table["benchmark"] == benchmark)]
    return float(t.sort_values("step")["mean_score"].iloc[-1]) if len(t) else math.nan


def plot_ablation(groups: list[list[str]], resolved: dict, accuracy: dict[str, float],
                  overlap: dict[str, float], out_path) -> bool:
    """Bars of final accuracy and final overlap per variant, groups side by side; a placeholder
    PNG with a note when no experiments differ only in their objective."""
    if not groups:
        placeholder(out_path, TITLE, "No experiments differ only in their objective (strategy, weight_mode, "
                                     "top_k).\nAdd, e.g., a copy of an OPD experiment with "
                                     "train: {objective: {strategy: union}} to draw this figure.")
        return False
    names = [n for g in groups for n in g]
    labels = [f"{n}\n{s}, {w}, k={k}" for n in names for s, w, k in [variant(resolved[n])]]
    x = list(range(len(names)))
    group_of = {n: gi for gi, g in enumerate(groups) for n in g}
    colors = [color(group_of[n]) for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.6 * len(names) * 2), 4.2))
    for ax, values, label in ((axes[0], accuracy, "final avg@n"), (axes[1], overlap, "final top-k overlap ratio")):
        heights = [values.get(n, math.nan) for n in names]
        ax.bar(x, [0 if math.isnan(h) else h for h in heights], color=colors, alpha=0.8)
        for xi, h in zip(x, heights):
            ax.text(xi, 0 if math.isnan(h) else h, "n/a" if math.isnan(h) else f"{h:.3f}",
                    ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(TITLE, fontsize=11)
    save(fig, out_path)
    return True
