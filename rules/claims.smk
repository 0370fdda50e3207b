# The paper's claims as a table and a figure, from the grades and training metrics.


rule claims:
    """Runs opd/stages/claims.py:claims."""
    input:
        grades=get_claims_grades,
        metrics=expand(f"{R}/train/{{exp}}/metrics.jsonl", exp=sorted(EXPERIMENTS)),
    output:
        table=report(
            f"{R}/tables/claims.csv",
            caption="../report/claims_table.rst",
            category="Claims",
        ),
        figure=report(
            f"{R}/figures/claims.png",
            caption="../report/claims.rst",
            category="Claims",
        ),
    params:
        claims_spec=get_section("claims"),
        experiments=get_section("experiments"),
    threads: get_resource("claims", "threads")
    resources:
        mem_mb=get_resource("claims", "mem_mb"),
        runtime=get_resource("claims", "runtime"),
    log:
        f"{R}/logs/claims.log",
    benchmark:
        f"{R}/benchmarks/claims.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/stage.py"
