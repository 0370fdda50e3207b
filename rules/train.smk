# On-policy training (OPD or GRPO) of one experiment, with checkpoints and metrics.jsonl.


rule train:
    input:
        unpack(get_train_inputs),
    output:
        checkpoints=directory(f"{R}/train/{{exp}}/checkpoints"),
        metrics=f"{R}/train/{{exp}}/metrics.jsonl",
        config=f"{R}/train/{{exp}}/config.json",
    params:
        train=get_experiment_params,
        seed=config["seed"],
    threads: 1
    log:
        f"{R}/logs/train/{{exp}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{exp}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/train.py"
