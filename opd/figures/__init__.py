"""Figures and tables of a finished study, from grades, training metrics and probes.

- ``tables``: ``summary_table`` (one row per grade, with ``gap_recovered``), ``experiment_curve``;
- ``training``: ``plot_accuracy`` (accuracy against step), ``plot_dynamics`` (training curves);
- ``mechanism``: the paper's mechanism figures (overlap / mass, entropies, reward by token
  class against step; by-position curves; extreme rewards) from ``metrics.jsonl`` and probes;
- ``ablation``: final accuracy and overlap of experiments that differ only in their objective.

    table = summary_table(grade_paths, model_kinds, experiments)
    plot_accuracy(table, experiments, "tiny_eval", "accuracy_vs_step.png")
"""
from .ablation import ablation_groups, final_accuracy, plot_ablation
from .common import moving_average, placeholder
from .mechanism import (ENTROPY_PANELS, OVERLAP_PANELS, REWARD_PANELS, first_and_last, load_probes,
                        load_training, plot_by_position, plot_extremes, plot_vs_step, probe_benchmark,
                        probe_steps)
from .tables import TABLE_COLUMNS, experiment_curve, gap_recovered, start_model, summary_table
from .training import plot_accuracy, plot_dynamics

__all__ = [
    "ENTROPY_PANELS", "OVERLAP_PANELS", "REWARD_PANELS", "TABLE_COLUMNS", "ablation_groups",
    "experiment_curve", "final_accuracy", "first_and_last", "gap_recovered", "load_probes",
    "load_training", "moving_average", "placeholder", "plot_ablation", "plot_accuracy",
    "plot_by_position", "plot_dynamics", "plot_extremes", "plot_vs_step", "probe_benchmark",
    "probe_steps", "start_model", "summary_table",
]
