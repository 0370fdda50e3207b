"""Stages: the figures and summary table of a finished study, and one experiment's table (rules/figures.smk)."""
from __future__ import annotations

from opd.figures import plot_accuracy, plot_dynamics, summary_table
from opd.io import atomic_path


def write_table(grades: list[str], models: dict, table: str):
    """The summary table of the graded models in ``grades`` (``models``: model key -> (kind,
    experiment, step)), written atomically to ``table``; returns it as a DataFrame."""
    frame = summary_table(grades, {k: tuple(v) for k, v in models.items()})
    with atomic_path(table, ".csv") as tmp:
        frame.to_csv(tmp, index=False)
    print(frame.to_string(index=False))
    return frame


def figures(*, grades: list[str], metrics: list[str], experiments: dict, benchmark: str,
            models: dict, accuracy: str, dynamics: str, table: str) -> None:
    """``summary.csv``, accuracy against step, and the training dynamics (``metrics`` are the
    experiments' ``metrics.jsonl`` in sorted experiment order)."""
    frame = write_table(grades, models, table)
    plot_accuracy(frame, experiments, benchmark, accuracy)
    plot_dynamics(dict(zip(sorted(experiments), metrics)), dynamics)


def experiment_table(*, grades: list[str], models: dict, table: str) -> None:
    """One experiment's graded models (``tables/experiments/<exp>.csv``)."""
    write_table(grades, models, table)
