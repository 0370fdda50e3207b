"""Rule grade: grade evaluation generations with the paper's protocol (optional model verifier)."""
from opd.backends.choice import stack_for
from opd.runlog import stage_logging
from opd.stages.evaluate import grade

generation = snakemake.params.generation or None
with stage_logging(snakemake.log[0]):
    grade(snakemake.input.generations, snakemake.params.grading, snakemake.output.summary,
          snakemake.output.verdicts, snakemake.wildcards.model, snakemake.wildcards.bench,
          verifier_dir=snakemake.input.get("verifier"), generation=generation,
          stack=stack_for(snakemake.config, generation["backend"]) if generation else None)
