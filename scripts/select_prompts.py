"""Rule select_prompts: teacher-aligned selection of the training prompts."""
from opd.runlog import stage_logging
from opd.stages.data import select_prompts

with stage_logging(snakemake.log[0]):
    select_prompts(snakemake.input.train, snakemake.input.reference, snakemake.params.selection,
                   snakemake.output.selected, snakemake.output.report)
