"""Rule teacher_rollout: rejection-sampled teacher rollouts (resumable; hf or vllm backend)."""
from opd.backends.choice import stack_for
from opd.runlog import stage_logging
from opd.stages.rollout import teacher_rollout

generation = snakemake.params.generation
with stage_logging(snakemake.log[0]):
    teacher_rollout(snakemake.input.teacher, snakemake.input.prompts, snakemake.params.rollout,
                    snakemake.params.seed, snakemake.output.rollouts, snakemake.output.stats,
                    threads=snakemake.threads, generation=generation,
                    stack=stack_for(snakemake.config, generation["backend"]))
