# Datasets: benchmarks normalised to the project's row format; training prompts deduplicated
# against the benchmarks; the selection reference deduplicated against the training set; the
# teacher-aligned selection and its control, as many training prompts drawn at random
# (random_prompts.parquet, `prompts: random`). The default training set (data.train) lives in
# results/data/, an experiment's own set (experiments.<exp>.data) in results/data/sets/<exp>/,
# the cold-start prompts (rollout.source) in results/data/rollout_prompts.parquet. The *_set rules run the
# same stage functions as their default-set rules (aliases in opd/stages/data.py).


rule prepare_benchmark:
    """Runs opd/stages/data.py:prepare_benchmark."""
    input:
        source=get_benchmark_source,
    output:
        benchmark=f"{R}/data/benchmarks/{{bench}}.parquet",
    params:
        spec=get_benchmark_spec,
    threads: get_resource("prepare_benchmark", "threads")
    resources:
        mem_mb=get_resource("prepare_benchmark", "mem_mb"),
        runtime=get_resource("prepare_benchmark", "runtime"),
    log:
        f"{R}/logs/prepare_benchmark/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/prepare_benchmark/{{bench}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule dedup_train:
    """Runs opd/stages/data.py:dedup_train."""
    input:
        source=get_train_source,
        reference=expand(f"{R}/data/benchmarks/{{bench}}.parquet", bench=BENCHMARKS),
    output:
        train=f"{R}/data/train.parquet",
        report=f"{R}/data/dedup_report.json",
    params:
        spec=get_section("data", "train"),
        dedup=get_section("data", "dedup"),
    threads: get_resource("dedup_train", "threads")
    resources:
        mem_mb=get_resource("dedup_train", "mem_mb"),
        runtime=get_resource("dedup_train", "runtime"),
    log:
        f"{R}/logs/dedup_train.log",
    benchmark:
        f"{R}/benchmarks/dedup_train.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule dedup_prompt_set:
    """Runs opd/stages/data.py:dedup_train."""
    input:
        source=get_prompt_set_source,
        reference=expand(f"{R}/data/benchmarks/{{bench}}.parquet", bench=BENCHMARKS),
    output:
        train=f"{R}/data/sets/{{prompt_set}}/train.parquet",
        report=f"{R}/data/sets/{{prompt_set}}/dedup_report.json",
    params:
        spec=get_prompt_set_spec,
        dedup=get_section("data", "dedup"),
    wildcard_constraints:
        prompt_set="|".join(PROMPT_SETS) or "^$",
    threads: get_resource("dedup_prompt_set", "threads")
    resources:
        mem_mb=get_resource("dedup_prompt_set", "mem_mb"),
        runtime=get_resource("dedup_prompt_set", "runtime"),
    log:
        f"{R}/logs/dedup_prompt_set/{{prompt_set}}.log",
    benchmark:
        f"{R}/benchmarks/dedup_prompt_set/{{prompt_set}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule dedup_rollout_prompts:
    """Runs opd/stages/data.py:dedup_train."""
    input:
        source=get_rollout_source,
        reference=expand(f"{R}/data/benchmarks/{{bench}}.parquet", bench=BENCHMARKS),
    output:
        train=f"{R}/data/rollout_prompts.parquet",
        report=f"{R}/data/rollout_dedup_report.json",
    params:
        spec=get_section("rollout", "source"),
        dedup=get_section("data", "dedup"),
    threads: get_resource("dedup_rollout_prompts", "threads")
    resources:
        mem_mb=get_resource("dedup_rollout_prompts", "mem_mb"),
        runtime=get_resource("dedup_rollout_prompts", "runtime"),
    log:
        f"{R}/logs/dedup_rollout_prompts.log",
    benchmark:
        f"{R}/benchmarks/dedup_rollout_prompts.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule dedup_reference:
    """Runs opd/stages/data.py:dedup_reference."""
    input:
        source=get_selection_reference,
        train=f"{R}/data/train.parquet",
    output:
        reference=f"{R}/data/reference.parquet",
        report=f"{R}/data/reference_dedup_report.json",
    params:
        spec=get_section("data", "selection", "reference"),
        dedup=get_section("data", "selection", "dedup"),
    threads: get_resource("dedup_reference", "threads")
    resources:
        mem_mb=get_resource("dedup_reference", "mem_mb"),
        runtime=get_resource("dedup_reference", "runtime"),
    log:
        f"{R}/logs/dedup_reference.log",
    benchmark:
        f"{R}/benchmarks/dedup_reference.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule dedup_reference_set:
    """Runs opd/stages/data.py:dedup_reference."""
    input:
        source=get_selection_reference,
        train=f"{R}/data/sets/{{prompt_set}}/train.parquet",
    output:
        reference=f"{R}/data/sets/{{prompt_set}}/reference.parquet",
        report=f"{R}/data/sets/{{prompt_set}}/reference_dedup_report.json",
    params:
        spec=get_section("data", "selection", "reference"),
        dedup=get_section("data", "selection", "dedup"),
    wildcard_constraints:
        prompt_set="|".join(PROMPT_SETS) or "^$",
    threads: get_resource("dedup_reference_set", "threads")
    resources:
        mem_mb=get_resource("dedup_reference_set", "mem_mb"),
        runtime=get_resource("dedup_reference_set", "runtime"),
    log:
        f"{R}/logs/dedup_reference_set/{{prompt_set}}.log",
    benchmark:
        f"{R}/benchmarks/dedup_reference_set/{{prompt_set}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule select_prompts:
    """Runs opd/stages/data.py:select_prompts."""
    input:
        train=f"{R}/data/train.parquet",
        reference=f"{R}/data/reference.parquet",
    output:
        selected=f"{R}/data/selected.parquet",
        random=f"{R}/data/random_prompts.parquet",
        report=f"{R}/data/selection_report.json",
    params:
        selection=get_selection_params,
        seed=config["seed"],
    threads: get_resource("select_prompts", "threads")
    resources:
        mem_mb=get_resource("select_prompts", "mem_mb"),
        runtime=get_resource("select_prompts", "runtime"),
    log:
        f"{R}/logs/select_prompts.log",
    benchmark:
        f"{R}/benchmarks/select_prompts.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule select_prompt_set:
    """Runs opd/stages/data.py:select_prompts."""
    input:
        train=f"{R}/data/sets/{{prompt_set}}/train.parquet",
        reference=f"{R}/data/sets/{{prompt_set}}/reference.parquet",
    output:
        selected=f"{R}/data/sets/{{prompt_set}}/selected.parquet",
        random=f"{R}/data/sets/{{prompt_set}}/random_prompts.parquet",
        report=f"{R}/data/sets/{{prompt_set}}/selection_report.json",
    params:
        selection=get_selection_params,
        seed=config["seed"],
    wildcard_constraints:
        prompt_set="|".join(PROMPT_SETS) or "^$",
    threads: get_resource("select_prompt_set", "threads")
    resources:
        mem_mb=get_resource("select_prompt_set", "mem_mb"),
        runtime=get_resource("select_prompt_set", "runtime"),
    log:
        f"{R}/logs/select_prompt_set/{{prompt_set}}.log",
    benchmark:
        f"{R}/benchmarks/select_prompt_set/{{prompt_set}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"
