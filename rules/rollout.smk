# Teacher rollouts on the training prompts (or rollout.source), rejection-sampled: the cold-start SFT dataset.


rule teacher_rollout:
    """Runs opd/stages/rollout.py:teacher_rollout."""
    input:
        teacher=get_rollout_teacher,
        prompts=get_rollout_prompts,
    output:
        rollouts=f"{R}/rollout/{{teacher}}/rollouts.parquet",
        stats=f"{R}/rollout/{{teacher}}/stats.json",
    params:
        rollout=get_rollout_params,
        seed=config["seed"],
        backend=get_backend("generation"),
    threads: get_resource("teacher_rollout", "threads")
    resources:
        mem_mb=get_resource("teacher_rollout", "mem_mb"),
        runtime=get_resource("teacher_rollout", "runtime"),
        gpu=get_gpus("teacher_rollout"),
    log:
        f"{R}/logs/teacher_rollout/{{teacher}}.log",
    benchmark:
        f"{R}/benchmarks/teacher_rollout/{{teacher}}.tsv"
    conda:
        get_env("generation")
    script:
        "../scripts/stage.py"
