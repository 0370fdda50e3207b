# Teacher rollouts on the training prompts, rejection-sampled: the cold-start SFT dataset.


rule teacher_rollout:
    input:
        teacher=get_rollout_teacher,
        prompts=f"{R}/data/train.parquet",
    output:
        rollouts=f"{R}/rollout/{{teacher}}/rollouts.parquet",
        stats=f"{R}/rollout/{{teacher}}/stats.json",
    params:
        rollout=get_section("rollout"),
        seed=config["seed"],
    threads: 1
    log:
        f"{R}/logs/teacher_rollout/{{teacher}}.log",
    benchmark:
        f"{R}/benchmarks/teacher_rollout/{{teacher}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/teacher_rollout.py"
