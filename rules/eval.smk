# Evaluation: n samples per problem for one model on one benchmark, then grading.


rule eval_generate:
    input:
        model=get_model_input,
        benchmark=f"{R}/data/benchmarks/{{bench}}.parquet",
    output:
        f"{R}/eval/{{model}}/{{bench}}.parquet",
    params:
        subdir=get_model_subdir,
        eval=get_section("eval"),
        seed=config["seed"],
    threads: 1
    log:
        f"{R}/logs/eval/{{model}}/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/eval/{{model}}/{{bench}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/eval_generate.py"


rule grade:
    input:
        unpack(get_grade_inputs),
    output:
        summary=f"{R}/grades/{{model}}/{{bench}}.json",
        verdicts=f"{R}/grades/{{model}}/{{bench}}.verdicts.parquet",
    params:
        grading=get_section("grading"),
    threads: 1
    log:
        f"{R}/logs/grade/{{model}}/{{bench}}.log",
    benchmark:
        f"{R}/benchmarks/grade/{{model}}/{{bench}}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/grade.py"
