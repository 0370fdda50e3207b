"""Rule grade: grade evaluation generations with the paper's protocol."""
from opd.runlog import stage_logging
from opd.stages.evaluate import grade

with stage_logging(snakemake.log[0]):
    grade(snakemake.input.generations, snakemake.params.grading, snakemake.output.summary,
          snakemake.output.verdicts, snakemake.wildcards.model, snakemake.wildcards.bench,
          verifier_dir=snakemake.input.get("verifier"))
