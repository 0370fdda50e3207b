"""Rule figures: accuracy-vs-step and training-dynamics figures, summary table."""
from opd.runlog import stage_logging
from opd.stages.figures import figures

with stage_logging(snakemake.log[0]):
    figures(list(snakemake.input.grades), dict(zip(sorted(snakemake.params.experiments), snakemake.input.metrics)),
            snakemake.params.experiments, snakemake.params.benchmark, snakemake.params.models,
            snakemake.output.accuracy, snakemake.output.dynamics, snakemake.output.table)
