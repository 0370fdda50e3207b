# The fingerprint of the tiny world (opd/fingerprint.py): compare yours with
# `make fingerprint-check` (docs/reproducibility.md).


rule world_fingerprint:
    """Runs opd/stages/fingerprint.py:world_fingerprint."""
    input:
        problems=rules.world_problems.output,
        tokenizer=rules.world_tokenizer.output.tokenizer,
        models=expand(rules.world_model.output.model, world_model=WORLD_MODELS),
    output:
        fingerprint=f"{R}/fingerprint.json",
    params:
        settings=get_fingerprint_settings(),
    threads: get_resource("world_fingerprint", "threads")
    resources:
        mem_mb=get_resource("world_fingerprint", "mem_mb"),
        runtime=get_resource("world_fingerprint", "runtime"),
    log:
        f"{R}/logs/world_fingerprint.log",
    benchmark:
        f"{R}/benchmarks/world_fingerprint.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"
