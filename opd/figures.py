"""Figures and tables of a finished study, from graded evaluations and training metrics.

- ``summary_table``: one row per (model, benchmark) grade, with the experiment and step.
- ``plot_accuracy``: eval avg@n against training step per experiment, the initial student(s) and
  teacher(s) as horizontal references (the paper's Figure-1-style comparison of OPD and GRPO).
- ``plot_dynamics``: training curves from ``metrics.jsonl`` (rollout accuracy and the OPD
  mechanism metrics: top-k overlap ratio and the shared probability mass).

    table = summary_table(grade_paths, model_kinds)
    plot_accuracy(table, experiments, "tiny_eval", "accuracy_vs_step.png")
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from opd.io import atomic_path, read_jsonl  # noqa: E402

TABLE_COLUMNS = ["model", "kind", "experiment", "step", "benchmark", "mean_score", "best_score",
                 "solve_none", "solve_all", "avg_output_length", "format_error_rollouts",
                 "distinct_4gram"]


def summary_table(grade_paths: list[str], model_kinds: dict[str, tuple]) -> pd.DataFrame:
    """Collect grade JSONs; ``model_kinds[key] = (kind, name, step)`` as in the workflow."""
    rows = []
    for path in grade_paths:
        g = json.loads(Path(path).read_text())
        kind, name, step = model_kinds[g["model"]]
        rows.append({**{k: g.get(k) for k in TABLE_COLUMNS}, "kind": kind,
                     "experiment": name if kind != "base" else "",
                     "step": step if step is not None else 0})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS).sort_values(["benchmark", "kind", "model", "step"])


def experiment_curve(table: pd.DataFrame, name: str, exp: dict, benchmark: str) -> pd.DataFrame:
    """(step, mean_score) of an experiment, starting at step 0 with its starting model."""
    t = table[table["benchmark"] == benchmark]
    start_key = f"{name}.sft" if exp.get("cold_start") else exp["student"]
    start = t[t["model"] == start_key]
    steps = t[(t["kind"] == "step") & (t["experiment"] == name)]
    curve = pd.concat([start.assign(step=0), steps])[["step", "mean_score"]]
    return curve.sort_values("step")


def plot_accuracy(table: pd.DataFrame, experiments: dict, benchmark: str, out_path) -> None:
    """Eval accuracy against training step, with base models as horizontal references."""
    t = table[table["benchmark"] == benchmark]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, exp) in enumerate(experiments.items()):
        c = experiment_curve(table, name, exp, benchmark)
        ax.plot(c["step"], c["mean_score"], marker="o", color=f"C{i}",
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
            color, ls = styles[role]
            ax.axhline(row["mean_score"].iloc[0], color=color, ls=ls, label=f"{role}: {model}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"avg@n on {benchmark}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Evaluation accuracy during on-policy training")
    _save(fig, out_path)


DYNAMICS = (("rollout/accuracy", "rollout accuracy"), ("opd/overlap_ratio", "top-k overlap ratio"),
            ("opd/student_mass_shared", "student mass on shared top-k"),
            ("opd/teacher_mass_shared", "teacher mass on shared top-k"))


def moving_average(values, window: int) -> list[float]:
    """Trailing mean over up to ``window`` points (the first points average what exists)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_dynamics(metrics_paths: dict[str, str], out_path, smooth: int = 5) -> None:
    """Training curves per experiment from ``metrics.jsonl``: raw (faint) and a moving average."""
    fig, axes = plt.subplots(1, len(DYNAMICS), figsize=(4 * len(DYNAMICS), 3.5))
    for i, (name, path) in enumerate(metrics_paths.items()):
        rows = read_jsonl(path)
        for ax, (key, title) in zip(axes, DYNAMICS):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                steps, values = zip(*pts)
                ax.plot(steps, values, color=f"C{i}", alpha=0.25, lw=0.8)
                ax.plot(steps, moving_average(values, smooth), color=f"C{i}", label=name)
    for ax, (_, title) in zip(axes, DYNAMICS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=f"C{i}", label=name) for i, name in enumerate(metrics_paths)]
    axes[0].legend(handles=handles, fontsize=8)
    _save(fig, out_path)


def _save(fig, out_path) -> None:
    fig.tight_layout()
    with atomic_path(out_path, Path(out_path).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
