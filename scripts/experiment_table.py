"""Rule experiment_table: the graded models of one experiment (one row per model and benchmark)."""
from opd.runlog import stage_logging
from opd.stages.figures import write_table

with stage_logging(snakemake.log[0]):
    write_table(list(snakemake.input.grades), snakemake.params.models, snakemake.output[0])
