# Figures and tables from the graded evaluations, training metrics and probes.


rule figures:
    """Runs opd/stages/figures.py:figures."""
    input:
        grades=get_all_grades,
        metrics=expand(f"{R}/train/{{exp}}/metrics.jsonl", exp=sorted(EXPERIMENTS)),
        probes=get_probes("json"),
        probe_tokens=get_probes("parquet"),
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
        overlap=report(
            f"{R}/figures/overlap_vs_step.png",
            caption="../report/overlap_vs_step.rst",
            category="Mechanism",
        ),
        entropy=report(
            f"{R}/figures/entropy_vs_step.png",
            caption="../report/entropy_vs_step.rst",
            category="Mechanism",
        ),
        reward_classes=report(
            f"{R}/figures/reward_by_class.png",
            caption="../report/reward_by_class.rst",
            category="Mechanism",
        ),
        position=report(
            f"{R}/figures/by_position.png",
            caption="../report/by_position.rst",
            category="Mechanism",
        ),
        extremes=report(
            f"{R}/figures/extreme_reward.png",
            caption="../report/extreme_reward.rst",
            category="Mechanism",
        ),
        ablation=report(
            f"{R}/figures/objective_ablation.png",
            caption="../report/objective_ablation.rst",
            category="Mechanism",
        ),
        table=report(
            f"{R}/tables/summary.csv",
            caption="../report/summary_table.rst",
            category="Tables",
        ),
    params:
        experiments=get_section("experiments"),
        resolved=get_resolved_experiments,
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
    """Runs opd/stages/figures.py:experiment_table."""
    input:
        grades=get_experiment_grades,
    output:
        table=f"{R}/tables/experiments/{{exp}}.csv",
    params:
        models=get_model_kinds,
        experiments=get_section("experiments"),
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
