# The probe: mechanism statistics of each model of an OPD experiment (initial student, cold
# start, every checkpoint) on its evaluation generations, scored with the experiment's teacher.


rule probe:
    """Runs opd/stages/probe.py:probe."""
    input:
        checkpoint=get_model_input,
        teacher=get_probe_teacher,
        generations=f"{R}/eval/{{model}}/{{bench}}.parquet",
        benchmark=f"{R}/data/benchmarks/{{bench}}.parquet",
    output:
        summary=f"{R}/probe/{{exp}}/{{model}}/{{bench}}.json",
        tokens=f"{R}/probe/{{exp}}/{{model}}/{{bench}}.parquet",
    params:
        subdir=get_model_subdir,
        objective=get_probe_objective,
        probe=get_probe_settings,
        thinking=get_probe_thinking,
        seed=config["seed"],
    threads: get_resource("probe", "threads")
    resources:
        mem_mb=get_resource("probe", "mem_mb"),
        runtime=get_resource("probe", "runtime"),
        gpu=get_probe_gpus,
    log:
        f"{R}/logs/probe/{{exp}}/{{model}}/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/probe/{{exp}}/{{model}}/{{bench}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"
