"""Rule sft_cold_start: off-policy SFT of the student on teacher rollouts."""
from opd.runlog import stage_logging
from opd.stages.sft import sft_cold_start

with stage_logging(snakemake.log[0]):
    sft_cold_start(snakemake.input.student, snakemake.input.rollouts, snakemake.params.sft,
                   snakemake.params.seed, snakemake.output.model, snakemake.output.metrics,
                   threads=snakemake.threads)
