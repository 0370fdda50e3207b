# Evaluation: n samples per problem for one model on one benchmark, then grading.


rule eval_generate:
    """Runs opd/stages/evaluate.py:eval_generate."""
    input:
        model=get_model_input,
        benchmark=f"{R}/data/benchmarks/{{bench}}.parquet",
    output:
        generations=f"{R}/eval/{{model}}/{{bench}}.parquet",
    params:
        subdir=get_model_subdir,
        eval=get_eval_params,
        seed=config["seed"],
        backend=get_backend("generation"),
    threads: get_resource("eval_generate", "threads")
    resources:
        mem_mb=get_resource("eval_generate", "mem_mb"),
        runtime=get_resource("eval_generate", "runtime"),
        gpu=get_gpus("eval_generate"),
    log:
        f"{R}/logs/eval/{{model}}/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/eval/{{model}}/{{bench}}.tsv"
    conda:
        get_env("generation")
    script:
        "../scripts/stage.py"


rule grade:
    """Runs opd/stages/evaluate.py:grade."""
    input:
        unpack(get_grade_inputs),
    output:
        summary=f"{R}/grades/{{model}}/{{bench}}.json",
        verdicts=f"{R}/grades/{{model}}/{{bench}}.verdicts.parquet",
    params:
        grading=get_section("grading"),
        backend=get_verifier_backend,
    threads: get_resource("grade", "threads")
    resources:
        mem_mb=get_resource("grade", "mem_mb"),
        runtime=get_resource("grade", "runtime"),
        gpu=get_gpus("grade"),
    log:
        f"{R}/logs/grade/{{model}}/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/grade/{{model}}/{{bench}}.tsv"
    conda:
        get_verifier_env
    script:
        "../scripts/stage.py"
