r"""The summary table of a study: one row per (model, benchmark) grade, with ``gap_recovered``.

For a cold start or checkpoint of an OPD experiment (one with a teacher), on each benchmark:

    gap_recovered = (acc - acc_initial_student) / (acc_teacher - acc_initial_student)

with acc the avg@n (``mean_score``) of that model, ``acc_initial_student`` that of the
experiment's ``student`` (before any cold start) and ``acc_teacher`` that of its teacher: 0 =
no better than the initial student, 1 = the teacher's accuracy.  Empty for base models, GRPO
runs, and where the teacher is no better than the initial student (the ratio is undefined).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

TABLE_COLUMNS = ["model", "kind", "experiment", "step", "benchmark", "mean_score", "mean_score_se",
                 "best_score", "solve_none", "solve_all", "avg_output_length", "format_error_rollouts",
                 "distinct_4gram", "gap_recovered"]


def gap_recovered(acc: float, acc_student: float, acc_teacher: float) -> float:
    """(acc - acc_student) / (acc_teacher - acc_student); NaN when the teacher is not better."""
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (acc, acc_student, acc_teacher)):
        return math.nan
    if acc_teacher <= acc_student:
        return math.nan
    return (acc - acc_student) / (acc_teacher - acc_student)


def summary_table(grade_paths: list[str], model_kinds: dict[str, tuple],
                  experiments: dict | None = None) -> pd.DataFrame:
    """Collect grade JSONs; ``model_kinds[key] = (kind, name, step)`` as in the workflow;
    ``experiments`` (config ``experiments``) gives each OPD experiment's student and teacher
    for ``gap_recovered``."""
    rows = []
    for path in grade_paths:
        g = json.loads(Path(path).read_text())
        kind, name, step = model_kinds[g["model"]]
        rows.append({**{k: g.get(k) for k in TABLE_COLUMNS}, "kind": kind,
                     "experiment": name if kind != "base" else "",
                     "step": step if step is not None else 0})
    frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    acc = {(r.model, r.benchmark): r.mean_score for r in frame.itertuples()}
    gaps = []
    for r in frame.itertuples():
        exp = (experiments or {}).get(r.experiment) if r.kind != "base" else None
        if not exp or not exp.get("teacher"):
            gaps.append(math.nan)
            continue
        gaps.append(gap_recovered(r.mean_score, acc.get((exp["student"], r.benchmark)),
                                  acc.get((exp["teacher"], r.benchmark))))
    frame["gap_recovered"] = pd.Series(gaps, index=frame.index, dtype="float64")
    return frame.sort_values(["benchmark", "kind", "model", "step"])


def experiment_curve(table: pd.DataFrame, name: str, exp: dict, benchmark: str) -> pd.DataFrame:
    """(step, mean_score) of an experiment, starting at step 0 with its starting model."""
    t = table[table["benchmark"] == benchmark]
    start = t[t["model"] == start_model(name, exp)]
    steps = t[(t["kind"] == "step") & (t["experiment"] == name)]
    curve = pd.concat([start.assign(step=0), steps])[["step", "mean_score"]]
    return curve.sort_values("step")


def start_model(name: str, exp: dict) -> str:
    """The model key an experiment's training starts from: its cold start or its student."""
    return f"{name}.sft" if exp.get("cold_start") else exp["student"]
