"""Rule train: on-policy OPD or GRPO training of one experiment."""
from opd.runlog import stage_logging
from opd.stages.train import train

with stage_logging(snakemake.log[0]):
    train(snakemake.input.student, snakemake.input.get("teacher"), snakemake.input.prompts,
          snakemake.params.train, snakemake.params.seed, snakemake.output.checkpoints,
          snakemake.output.metrics, snakemake.output.config, threads=snakemake.threads)
