"""Rule dedup_train: deduplicate the training prompts against the benchmarks."""
from opd.runlog import stage_logging
from opd.stages.data import dedup_train

with stage_logging(snakemake.log[0]):
    dedup_train(snakemake.input.train, snakemake.params.spec, list(snakemake.input.reference),
                snakemake.params.dedup, snakemake.output.train, snakemake.output.report)
