"""Stage: the claims table and figure (rules/claims.smk); the logic is ``opd.claims``."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from opd.claims import COLUMNS, evaluate_claims
from opd.figures.claims import plot_claims
from opd.io import atomic_path, read_jsonl


def claims(*, grades: list[str], metrics: list[str], claims_spec: dict, experiments: dict,
           table: str, figure: str) -> None:
    """``claims.csv`` (one row per claim) and ``claims.png`` from the grades on the claims
    benchmark (``grades``, one JSON per model) and every experiment's ``metrics.jsonl``
    (``metrics``, in sorted experiment order)."""
    summaries = {json.loads(Path(p).read_text())["model"]: json.loads(Path(p).read_text()) for p in grades}
    runs = {exp: read_jsonl(p) for exp, p in zip(sorted(experiments), metrics)}
    rows = evaluate_claims(claims_spec, experiments, summaries, runs)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    with atomic_path(table, ".csv") as tmp:
        frame.to_csv(tmp, index=False)
    plot_claims(rows, figure)
    print(frame[["claim", "value", "se", "threshold", "holds"]].to_string(index=False))
