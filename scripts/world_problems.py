"""Rule world_problems: write the tiny world's problem splits."""
from opd.runlog import stage_logging
from opd.stages.world import SPLITS, make_problems

with stage_logging(snakemake.log[0]):
    make_problems(snakemake.params.problems, snakemake.params.seed,
                  dict(zip(SPLITS, snakemake.output)))
