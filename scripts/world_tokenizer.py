"""Rule world_tokenizer: train the tiny world's BPE tokenizer."""
from opd.runlog import stage_logging
from opd.stages.world import make_tokenizer

with stage_logging(snakemake.log[0]):
    make_tokenizer(snakemake.input[0], snakemake.params.vocab_size, snakemake.output[0])
