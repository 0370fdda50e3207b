"""Stages: the figures and summary table of a finished study, and one experiment's table (rules/figures.smk)."""
from __future__ import annotations

from opd import figures as F
from opd.io import atomic_path


def write_table(grades: list[str], models: dict, table: str, experiments: dict | None = None):
    """The summary table of the graded models in ``grades`` (``models``: model key -> (kind,
    experiment, step); ``experiments`` for ``gap_recovered``), written atomically to ``table``;
    returns it as a DataFrame."""
    frame = F.summary_table(grades, {k: tuple(v) for k, v in models.items()}, experiments)
    with atomic_path(table, ".csv") as tmp:
        frame.to_csv(tmp, index=False)
    print(frame.to_string(index=False))
    return frame


def figures(*, grades: list[str], metrics: list[str], experiments: dict, resolved: dict, benchmark: str,
            models: dict, accuracy: str, dynamics: str, overlap: str, entropy: str, reward_classes: str,
            position: str, extremes: str, ablation: str, table: str, probes: list[str] = (),
            probe_tokens: list[str] = ()) -> None:
    """``summary.csv``, accuracy against step, the training dynamics and the mechanism figures
    (``metrics``: the experiments' ``metrics.jsonl`` in sorted experiment order; ``probes``: the
    probe summaries, whose per-token tables ``probe_tokens`` lie beside them)."""
    models = {k: tuple(v) for k, v in models.items()}
    frame = write_table(grades, models, table, experiments)
    metrics_paths = dict(zip(sorted(experiments), metrics))
    F.plot_accuracy(frame, experiments, benchmark, accuracy)
    F.plot_dynamics(metrics_paths, dynamics)
    opd = {n: e for n, e in experiments.items() if e.get("method") == "opd"}
    training = {n: rows for n, rows in F.load_training(metrics_paths).items() if n in opd}
    summaries = F.load_probes(list(probes))
    steps = F.probe_steps(summaries, models, opd, F.probe_benchmark(summaries, benchmark))
    F.plot_vs_step(F.OVERLAP_PANELS, training, steps, overlap, "Top-k overlap and shared probability mass")
    F.plot_vs_step(F.ENTROPY_PANELS, training, steps, entropy, "Student and teacher entropy")
    F.plot_vs_step(F.REWARD_PANELS, training, steps, reward_classes,
                   "Per-token reward log q - log p by token class of the top-k sets")
    pairs = F.first_and_last(steps)
    F.plot_by_position(pairs, position)
    F.plot_extremes(pairs, extremes)
    groups = F.ablation_groups(experiments, resolved)
    final_overlap = {}
    for name in {n for g in groups for n in g}:
        if steps.get(name) and steps[name][-1][0] > 0:
            final_overlap[name] = steps[name][-1][1]["metrics"].get("opd/overlap_ratio", float("nan"))
        else:
            last = [r for r in training.get(name, []) if "opd/overlap_ratio" in r]
            final_overlap[name] = last[-1]["opd/overlap_ratio"] if last else float("nan")
    final_acc = {n: F.final_accuracy(frame, n, benchmark) for g in groups for n in g}
    F.plot_ablation(groups, resolved, final_acc, final_overlap, ablation)


def experiment_table(*, grades: list[str], models: dict, table: str, experiments: dict | None = None) -> None:
    """One experiment's graded models (``tables/experiments/<exp>.csv``)."""
    write_table(grades, models, table, experiments)
