# Models that are other experiments' results (models.<name>: {from_experiment, step}): the
# checkpoint is exported as a model folder, so the source experiment trains first.


rule model_from_experiment:
    """Runs opd/stages/models.py:model_from_experiment."""
    input:
        checkpoints=get_source_checkpoints,
    output:
        model=directory(f"{R}/models/{{from_model}}"),
    params:
        step=get_source_step,
    wildcard_constraints:
        from_model="|".join(FROM_EXPERIMENT_MODELS) or "^$",
    threads: get_resource("model_from_experiment", "threads")
    resources:
        mem_mb=get_resource("model_from_experiment", "mem_mb"),
        runtime=get_resource("model_from_experiment", "runtime"),
    log:
        f"{R}/logs/model_from_experiment/{{from_model}}.log",
    benchmark:
        f"{R}/benchmarks/model_from_experiment/{{from_model}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"
