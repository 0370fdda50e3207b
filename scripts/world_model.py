"""Rule world_model: pretrain one tiny model from scratch."""
from opd.runlog import stage_logging
from opd.stages.world import pretrain_model

with stage_logging(snakemake.log[0]):
    pretrain_model(snakemake.input.corpus, snakemake.input.tokenizer, snakemake.params.spec,
                   snakemake.params.seed, snakemake.output.model, snakemake.output.metrics,
                   threads=snakemake.threads)
