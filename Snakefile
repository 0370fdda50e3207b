# On-policy distillation study: one DAG from data to figures. Wiring only; logic lives in opd/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "config/schema.yaml")

from opd.config import check_config, check_model_paths

check_config(config)
check_model_paths(config)


include: "rules/common.smk"
include: "rules/world.smk"
include: "rules/data.smk"
include: "rules/rollout.smk"
include: "rules/sft.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/figures.smk"


rule all:
    input:
        get_final_outputs(),
    default_target: True
