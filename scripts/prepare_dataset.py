"""Rule prepare_benchmark: normalise a benchmark into the project's row format."""
from opd.runlog import stage_logging
from opd.stages.data import prepare_dataset

with stage_logging(snakemake.log[0]):
    prepare_dataset(snakemake.input[0], snakemake.params.spec, snakemake.wildcards.bench,
                    snakemake.output[0])
