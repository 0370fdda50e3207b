# The tiny world: synthetic problems, a locally trained tokenizer, tiny models from scratch.


rule world_problems:
    """Runs opd/stages/world.py:world_problems."""
    output:
        pretrain=f"{R}/world/problems/pretrain.parquet",
        train=f"{R}/world/problems/train.parquet",
        eval=f"{R}/world/problems/eval.parquet",
        heldout=f"{R}/world/problems/heldout.parquet",
        pool=f"{R}/world/problems/pool.parquet",
    params:
        problems=get_section("world", "problems"),
        seed=config["seed"],
    threads: get_resource("world_problems", "threads")
    resources:
        mem_mb=get_resource("world_problems", "mem_mb"),
        runtime=get_resource("world_problems", "runtime"),
    log:
        f"{R}/logs/world_problems.log",
    benchmark:
        f"{R}/benchmarks/world_problems.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule world_tokenizer:
    """Runs opd/stages/world.py:world_tokenizer."""
    input:
        corpus=f"{R}/world/problems/pretrain.parquet",
    output:
        tokenizer=directory(f"{R}/world/tokenizer"),
    params:
        vocab_size=config.get("world", {}).get("tokenizer", {}).get("vocab_size"),
        added_tokens=[list(t) for t in ADDED_TOKENS],   # opd/world/tokens.py: one change rebuilds the world
    threads: get_resource("world_tokenizer", "threads")
    resources:
        mem_mb=get_resource("world_tokenizer", "mem_mb"),
        runtime=get_resource("world_tokenizer", "runtime"),
    log:
        f"{R}/logs/world_tokenizer.log",
    benchmark:
        f"{R}/benchmarks/world_tokenizer.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule world_model:
    """Runs opd/stages/world.py:world_model."""
    input:
        corpus=f"{R}/world/problems/pretrain.parquet",
        tokenizer=f"{R}/world/tokenizer",
    output:
        model=directory(f"{R}/world/models/{{world_model}}"),
        metrics=f"{R}/world/pretrain/{{world_model}}/metrics.jsonl",
    params:
        spec=get_world_model_spec,
        thinking=get_world_model_thinking,
        seed=config["seed"],
        kernels=config["kernels"],
    threads: get_resource("world_model", "threads")
    resources:
        mem_mb=get_resource("world_model", "mem_mb"),
        runtime=get_resource("world_model", "runtime"),
    log:
        f"{R}/logs/world_model/{{world_model}}.log",
    benchmark:
        f"{R}/benchmarks/world_model/{{world_model}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"
