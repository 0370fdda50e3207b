"""Rule sft_cold_start: off-policy SFT of the student on teacher rollouts (native or LLaMA-Factory)."""
from opd.backends.choice import stack_for
from opd.runlog import stage_logging
from opd.stages.sft import sft_cold_start

backend = snakemake.params.backend
with stage_logging(snakemake.log[0]):
    sft_cold_start(snakemake.input.student, snakemake.input.rollouts, snakemake.params.sft,
                   snakemake.params.seed, snakemake.output.model, snakemake.output.metrics,
                   threads=snakemake.threads, backend=backend,
                   stack=stack_for(snakemake.config, backend["backend"]))
