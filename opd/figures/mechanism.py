"""The paper's mechanism figures, from training metrics (``metrics.jsonl``) and probes.

Training curves are the trainer's ``opd/*`` metrics on its own rollouts at every step (raw,
faint, and a moving average); probe points are the same metrics of each checkpoint on its
evaluation generations (``results/probe/<exp>/<model>/<bench>.json``), step 0 being the model
the experiment starts from (its student, or its cold start).  Definitions of every metric:
``opd.objectives.mechanism``.

- ``plot_vs_step``: any metrics against step (overlap and shared mass; entropies and their gap;
  reward by token class);
- ``plot_by_position``: overlap, shared mass, reward and teacher entropy against the absolute
  response position, at step 0 and at the last checkpoint (from the per-token probe tables);
- ``plot_extremes``: the distribution of the maximum per-token reward within the student's
  top-k and of the student's probability at that token, step 0 against the last checkpoint.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from opd.io import read_jsonl

from .common import color, moving_average, placeholder, plt, save
from .tables import start_model

OVERLAP_PANELS = [("top-k overlap ratio", [("opd/overlap_ratio", "-")]),
                  ("mass on the shared top-k (student -, teacher --)",
                   [("opd/student_mass_shared", "-"), ("opd/teacher_mass_shared", "--")])]
ENTROPY_PANELS = [("student entropy (nats)", [("opd/student_entropy", "-")]),
                  ("teacher entropy (nats)", [("opd/teacher_entropy", "-")]),
                  ("entropy gap, teacher - student", [("opd/entropy_gap", "-")])]
REWARD_PANELS = [("reward on shared tokens", [("opd/reward_shared", "-")]),
                 ("reward on student-only tokens", [("opd/reward_student_only", "-")]),
                 ("reward on teacher-only tokens", [("opd/reward_teacher_only", "-")])]
POSITION_STATS = [("overlap_ratio", "top-k overlap ratio"), ("student_mass_shared", "student mass on shared"),
                  ("reward", "objective reward per token"), ("teacher_entropy", "teacher entropy")]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def load_training(metrics_paths: dict[str, str]) -> dict[str, list[dict]]:
    """Experiment -> its ``metrics.jsonl`` rows."""
    return {name: read_jsonl(path) for name, path in metrics_paths.items()}


def probe_benchmark(summaries: list[dict], preferred: str) -> str | None:
    """``preferred`` if it was probed, else the first probed benchmark (None without probes)."""
    benches = [s["benchmark"] for s in summaries]
    return preferred if preferred in benches else (benches[0] if benches else None)


def load_probes(paths: list[str]) -> list[dict]:
    """The probe summaries, each with its ``path``."""
    return [dict(json.loads(Path(p).read_text()), path=str(p)) for p in paths]


def probe_steps(summaries: list[dict], models: dict, experiments: dict, benchmark: str | None
                ) -> dict[str, list[tuple[int, dict]]]:
    """Experiment -> [(step, probe summary)] on ``benchmark``: step 0 = the starting model,
    then every checkpoint (other probed models, e.g. a cold start's base student, are left out)."""
    out: dict[str, list[tuple[int, dict]]] = {}
    for s in summaries:
        exp = experiments.get(s["experiment"])
        if exp is None or s["benchmark"] != benchmark:
            continue
        kind, _, step = models[s["model"]]
        if s["model"] == start_model(s["experiment"], exp):
            out.setdefault(s["experiment"], []).append((0, s))
        elif kind == "step":
            out.setdefault(s["experiment"], []).append((int(step), s))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def _legend(fig, names: list[str], styles: list[tuple[str, str]]) -> None:
    handles = [plt.Line2D([], [], color=color(i), label=n) for i, n in enumerate(names)]
    handles += [plt.Line2D([], [], color="gray", ls=ls, marker=m, mfc="white", label=lab)
                for lab, ls, m in styles]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))


def plot_vs_step(panels, training: dict[str, list[dict]], probes: dict[str, list[tuple[int, dict]]],
                 out_path, title: str, smooth: int = 5) -> bool:
    """Metrics against step, one panel per ``(title, [(key, linestyle), ...])``; experiments by
    colour; training as lines, probes as open circles.  Returns False (and draws a placeholder)
    when no experiment has any of the keys."""
    keys = {k for _, ks in panels for k, _ in ks}
    names = sorted(n for n in set(training) | set(probes)
                   if any(k in r for r in training.get(n, []) for k in keys)
                   or any(k in s["metrics"] for _, s in probes.get(n, []) for k in keys))
    if not names:
        placeholder(out_path, title, "no OPD experiment logged these metrics (they need a teacher)")
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.0), squeeze=False)
    for ax, (panel_title, panel_keys) in zip(axes[0], panels):
        for i, name in enumerate(names):
            for key, ls in panel_keys:
                pts = [(r["step"], r[key]) for r in training.get(name, []) if _finite(r.get(key))]
                if pts:
                    steps, vals = zip(*pts)
                    ax.plot(steps, vals, color=color(i), alpha=0.2, lw=0.8, ls=ls)
                    ax.plot(steps, moving_average(list(vals), smooth), color=color(i), ls=ls)
                pp = [(st, s["metrics"][key]) for st, s in probes.get(name, []) if _finite(s["metrics"].get(key))]
                if pp:
                    steps, vals = zip(*pp)
                    ax.plot(steps, vals, color=color(i), ls="none", marker="o", mfc="white", ms=6)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    _legend(fig, names, [("training rollouts (moving average)", "-", ""), ("probe: eval generations", "none", "o")])
    save(fig, out_path, rect=(0, 0.08, 1, 1))
    return True


def first_and_last(probes: dict[str, list[tuple[int, dict]]]) -> dict[str, tuple[dict, dict]]:
    """Experiment -> (step-0 summary, last checkpoint's summary), where both were probed."""
    return {name: (pts[0][1], pts[-1][1]) for name, pts in probes.items()
            if len(pts) >= 2 and pts[0][0] == 0}


def read_tokens(summary: dict) -> pd.DataFrame:
    """The per-token probe table beside a summary (same path, ``.parquet``)."""
    return pd.read_parquet(Path(summary["path"]).with_suffix(".parquet"))


def position_profile(frame: pd.DataFrame, column: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``column`` in bins of ``width`` response positions: (bin centres, means)."""
    g = frame.groupby(frame["position"] // width)[column].mean()
    return (g.index.to_numpy() + 0.5) * width, g.to_numpy()


def plot_by_position(pairs: dict[str, tuple[dict, dict]], out_path, n_bins: int = 32) -> bool:
    """Overlap, shared mass, reward and teacher entropy against response position, at step 0
    (dashed) and at the last checkpoint (solid), per experiment."""
    title = "Mechanism by response position (probes: step 0 -- , last checkpoint —)"
    if not pairs:
        placeholder(out_path, title, "no probes to draw from (probe.enabled: false, or no OPD experiment)")
        return False
    frames = {n: (read_tokens(a), read_tokens(b)) for n, (a, b) in pairs.items()}
    longest = max(int(f["position"].max()) + 1 for ab in frames.values() for f in ab if len(f))
    width = max(1, math.ceil(longest / n_bins))
    fig, axes = plt.subplots(1, len(POSITION_STATS), figsize=(4.2 * len(POSITION_STATS), 3.8))
    names = sorted(frames)
    for ax, (col, label) in zip(axes, POSITION_STATS):
        for i, name in enumerate(names):
            for frame, ls in zip(frames[name], ("--", "-")):
                if col in frame.columns and len(frame):
                    x, y = position_profile(frame, col, width)
                    ax.plot(x, y, color=color(i), ls=ls)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(f"response position (tokens, bins of {width})")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    _legend(fig, names, [("step 0", "--", ""), ("last checkpoint", "-", "")])
    save(fig, out_path, rect=(0, 0.08, 1, 1))
    return True


def plot_extremes(pairs: dict[str, tuple[dict, dict]], out_path, bins: int = 40) -> bool:
    """Histograms of ``reward_topk_max`` (max_{c in Ks} log q_c - log p_c per token) and of the
    student's probability at that token, step 0 (dashed) against the last checkpoint (solid)."""
    title = "Extreme rewards within the student's top-k (probes)"
    if not pairs:
        placeholder(out_path, title, "no probes to draw from (probe.enabled: false, or no OPD experiment)")
        return False
    frames = {n: (read_tokens(a), read_tokens(b)) for n, (a, b) in pairs.items()}
    names = sorted(frames)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
    for ax, col, label in ((axes[0], "reward_topk_max", "max reward in the student's top-k, log q - log p"),
                           (axes[1], "student_p_at_reward_max", "student probability at that token")):
        vals = np.concatenate([f[col].to_numpy() for ab in frames.values() for f in ab if col in f.columns])
        if not len(vals):
            continue
        edges = np.linspace(float(np.min(vals)), float(np.max(vals)) + 1e-9, bins + 1)
        for i, name in enumerate(names):
            for frame, ls in zip(frames[name], ("--", "-")):
                if col in frame.columns and len(frame):
                    ax.hist(frame[col].to_numpy(), bins=edges, density=True, histtype="step",
                            color=color(i), ls=ls, lw=1.4)
                    ax.axvline(float(frame[col].mean()), color=color(i), ls=ls, lw=0.8, alpha=0.6)
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylabel("density over response tokens")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    _legend(fig, names, [("step 0", "--", ""), ("last checkpoint", "-", "")])
    save(fig, out_path, rect=(0, 0.08, 1, 1))
    return True
