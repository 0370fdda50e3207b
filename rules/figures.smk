# Figures and tables from the graded evaluations and training metrics.


rule figures:
    input:
        grades=get_all_grades,
        metrics=expand(f"{R}/train/{{exp}}/metrics.jsonl", exp=sorted(EXPERIMENTS)),
    output:
        accuracy=report(
            f"{R}/figures/accuracy_vs_step.png",
            caption="../report/accuracy_vs_step.rst",
            category="Figures",
        ),
        dynamics=report(
            f"{R}/figures/training_dynamics.png",
            caption="../report/training_dynamics.rst",
            category="Figures",
        ),
        table=f"{R}/tables/summary.csv",
    params:
        experiments=get_section("experiments"),
        benchmark=config["figures"]["benchmark"],
        models=get_model_kinds,
    threads: get_resource("figures", "threads")
    resources:
        mem_mb=get_resource("figures", "mem_mb"),
        runtime=get_resource("figures", "runtime"),
    log:
        f"{R}/logs/figures.log",
    benchmark:
        f"{R}/benchmarks/figures.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"


rule experiment_table:
    input:
        grades=get_experiment_grades,
    output:
        table=f"{R}/tables/experiments/{{exp}}.csv",
    params:
        models=get_model_kinds,
    threads: get_resource("figures", "threads")
    resources:
        mem_mb=get_resource("figures", "mem_mb"),
        runtime=get_resource("figures", "runtime"),
    log:
        f"{R}/logs/experiment_table/{{exp}}.log",
    benchmark:
        f"{R}/benchmarks/experiment_table/{{exp}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"
