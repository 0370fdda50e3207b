"""Accuracy against step, and the training curves of ``metrics.jsonl``.

- ``plot_accuracy``: eval avg@n against training step per experiment, the initial student(s) and
  teacher(s) as horizontal references (the paper's Figure-1-style comparison of OPD and GRPO).
- ``plot_dynamics``: rollout accuracy and the headline mechanism metrics (top-k overlap ratio,
  shared probability mass) during training.
"""
from __future__ import annotations

import pandas as pd

from opd.io import read_jsonl

from .common import color, moving_average, plt, save
from .tables import experiment_curve


def plot_accuracy(table: pd.DataFrame, experiments: dict, benchmark: str, out_path) -> None:
    """Eval accuracy against training step, with base models as horizontal references."""
    t = table[table["benchmark"] == benchmark]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, exp) in enumerate(experiments.items()):
        c = experiment_curve(table, name, exp, benchmark)
        ax.plot(c["step"], c["mean_score"], marker="o", color=color(i),
                label=f"{name} ({exp['method']})")
    refs = {}
    for exp in experiments.values():
        refs.setdefault(exp["student"], "initial student")
        if exp.get("teacher"):
            refs[exp["teacher"]] = "teacher"
    styles = {"initial student": ("tab:gray", ":"), "teacher": ("black", "--")}
    for model, role in refs.items():
        row = t[t["model"] == model]
        if len(row):
            c, ls = styles[role]
            ax.axhline(row["mean_score"].iloc[0], color=c, ls=ls, label=f"{role}: {model}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"avg@n on {benchmark}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Evaluation accuracy during on-policy training")
    save(fig, out_path)


DYNAMICS = (("rollout/accuracy", "rollout accuracy"), ("opd/overlap_ratio", "top-k overlap ratio"),
            ("opd/student_mass_shared", "student mass on shared top-k"),
            ("opd/teacher_mass_shared", "teacher mass on shared top-k"))


def plot_dynamics(metrics_paths: dict[str, str], out_path, smooth: int = 5) -> None:
    """Training curves per experiment from ``metrics.jsonl``: raw (faint) and a moving average."""
    fig, axes = plt.subplots(1, len(DYNAMICS), figsize=(4 * len(DYNAMICS), 3.5))
    for i, (name, path) in enumerate(metrics_paths.items()):
        rows = read_jsonl(path)
        for ax, (key, title) in zip(axes, DYNAMICS):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                steps, values = zip(*pts)
                ax.plot(steps, values, color=color(i), alpha=0.25, lw=0.8)
                ax.plot(steps, moving_average(values, smooth), color=color(i), label=name)
    for ax, (_, title) in zip(axes, DYNAMICS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=color(i), label=name) for i, name in enumerate(metrics_paths)]
    axes[0].legend(handles=handles, fontsize=8)
    save(fig, out_path)
