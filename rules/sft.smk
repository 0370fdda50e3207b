# Off-policy SFT cold start of an experiment's student on its teacher's rollouts.


rule sft_cold_start:
    input:
        student=get_sft_student,
        rollouts=get_sft_rollouts,
    output:
        model=directory(f"{R}/sft/{{exp}}/model"),
        metrics=f"{R}/sft/{{exp}}/metrics.jsonl",
    params:
        sft=get_section("sft"),
        seed=config["seed"],
    threads: 1
    log:
        f"{R}/logs/sft/{{exp}}.log",
    benchmark:
        f"{R}/benchmarks/sft/{{exp}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/sft_cold_start.py"
