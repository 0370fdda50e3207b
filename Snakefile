# On-policy distillation study: one DAG from data to figures. Wiring only; logic lives in opd/.
from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded default, unless config files are given on the command line: each
# `--configfile` then replaces it (list config/config.yaml first to override a few of its keys).
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "config/schema.yaml")

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from opd.backends import check_backends
from opd.config import check_config, check_model_paths

check_config(config)
check_model_paths(config)
check_backends(config, DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method)


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
