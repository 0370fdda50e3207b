# Off-policy SFT cold start of an experiment's student on its teacher's rollouts.


rule sft_cold_start:
    """Runs opd/stages/sft.py:sft_cold_start."""
    input:
        student=get_sft_student,
        rollouts=get_sft_rollouts,
    output:
        model=directory(f"{R}/sft/{{exp}}/model"),
        metrics=f"{R}/sft/{{exp}}/metrics.jsonl",
    params:
        sft=get_sft_params,
        backend=get_backend("sft"),
        seed=config["seed"],
    threads: get_resource("sft_cold_start", "threads")
    resources:
        mem_mb=get_resource("sft_cold_start", "mem_mb"),
        runtime=get_resource("sft_cold_start", "runtime"),
        gpu=get_gpus("sft_cold_start"),
    log:
        f"{R}/logs/sft/{{exp}}.log",
    benchmark:
        f"{R}/benchmarks/sft/{{exp}}.tsv"
    conda:
        get_env("sft")
    script:
        "../scripts/stage.py"
