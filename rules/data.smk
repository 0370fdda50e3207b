# Datasets: benchmarks normalised to the project's row format; training prompts deduplicated.


rule prepare_benchmark:
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


rule select_prompts:
    input:
        train=f"{R}/data/train.parquet",
        reference=get_selection_reference,
    output:
        selected=f"{R}/data/selected.parquet",
        report=f"{R}/data/selection_report.json",
    params:
        selection=get_section("data", "selection"),
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
