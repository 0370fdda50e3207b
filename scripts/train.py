"""Rule train: on-policy OPD or GRPO training of one experiment (native trainer or verl)."""
from opd.backends.choice import stack_for
from opd.runlog import stage_logging

backend = snakemake.params.backend
with stage_logging(snakemake.log[0]):
    if backend["backend"] == "verl":
        from opd.stages.train import train_verl

        train_verl(stack_for(snakemake.config, "verl"), snakemake.wildcards.exp,
                   snakemake.input.student, snakemake.input.get("teacher"), snakemake.input.prompts,
                   snakemake.input.val, snakemake.params.train, snakemake.params.seed,
                   backend["options"], snakemake.output.checkpoints, snakemake.output.metrics,
                   snakemake.output.config)
    else:
        from opd.stages.train import train

        train(snakemake.input.student, snakemake.input.get("teacher"), snakemake.input.prompts,
              snakemake.params.train, snakemake.params.seed, snakemake.output.checkpoints,
              snakemake.output.metrics, snakemake.output.config, threads=snakemake.threads)
