"""Stage: figures and the summary table of a finished study."""
from __future__ import annotations

from opd.data import atomic_path
from opd.figures import plot_accuracy, plot_dynamics, summary_table


def write_table(grade_paths: list[str], model_kinds: dict, table_csv: str):
    """The summary table of the graded models in ``grade_paths``, written atomically (the whole
    study's ``summary.csv``, or one experiment's ``tables/experiments/<exp>.csv``)."""
    table = summary_table(grade_paths, {k: tuple(v) for k, v in model_kinds.items()})
    with atomic_path(table_csv, ".csv") as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    return table


def figures(grade_paths: list[str], metrics_paths: dict[str, str], experiments: dict,
            benchmark: str, model_kinds: dict, accuracy_png: str, dynamics_png: str,
            table_csv: str) -> None:
    table = write_table(grade_paths, model_kinds, table_csv)
    plot_accuracy(table, experiments, benchmark, accuracy_png)
    plot_dynamics(metrics_paths, dynamics_png)
