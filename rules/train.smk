# On-policy training (OPD or GRPO) of one experiment, with checkpoints and metrics.jsonl.


rule train:
    """Runs opd/stages/train.py:train."""
    input:
        unpack(get_train_inputs),
    output:
        checkpoints=directory(f"{R}/train/{{exp}}/checkpoints"),
        metrics=f"{R}/train/{{exp}}/metrics.jsonl",
        config=f"{R}/train/{{exp}}/config.json",
    params:
        train=get_experiment_params,
        backend=get_backend("train"),
        seed=config["seed"],
        logging=get_section("logging"),
    threads: get_resource("train", "threads")
    resources:
        mem_mb=get_resource("train", "mem_mb"),
        runtime=get_resource("train", "runtime"),
        gpu=get_gpus("train"),
    log:
        f"{R}/logs/train/{{exp}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{exp}}.tsv"
    conda:
        get_env("train")
    script:
        "../scripts/stage.py"
