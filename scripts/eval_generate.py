"""Rule eval_generate: n samples per benchmark problem from one model (hf or vllm backend)."""
import os

from opd.backends.choice import stack_for
from opd.runlog import stage_logging
from opd.stages.evaluate import eval_generate

generation = snakemake.params.generation
with stage_logging(snakemake.log[0]):
    model_dir = os.path.join(snakemake.input.model, snakemake.params.subdir)
    eval_generate(model_dir, snakemake.input.benchmark, snakemake.params.eval,
                  snakemake.params.seed, snakemake.output[0], threads=snakemake.threads,
                  generation=generation, stack=stack_for(snakemake.config, generation["backend"]))
