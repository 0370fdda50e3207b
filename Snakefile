# On-policy distillation study: one DAG from data to figures. Wiring only; logic lives in opd/.
from snakemake.utils import min_version, validate

min_version("9.0")


from snakemake.logging import logger
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from opd.backends import check_backends
from opd.checks import config_warnings, training_warnings
from opd.config import check_config, check_inputs
from opd.config_files import load_config_file, prepare_config

# The embedded default, unless config files are given on the command line: each
# `--configfile` then replaces it (list config/config.yaml first to override a few of its keys).
# Each file is parsed here first, so a YAML syntax error names its file, line and column.
CONFIG_FILES = workflow.config_settings.configfiles or [f"{workflow.basedir}/config/config.yaml"]
CONFIG_SOURCES = [(str(f), load_config_file(f)) for f in CONFIG_FILES]
if not workflow.config_settings.configfiles:

    configfile: CONFIG_FILES[0]


# null counts as absent, and the last file's choice among alternatives (sft epochs | steps) wins
prepare_config(config, f"{workflow.basedir}/config/schema.yaml",
               CONFIG_SOURCES + [("--config", dict(workflow.config_settings.config))])
validate(config, "config/schema.yaml")
check_config(config)
check_inputs(config)
check_backends(config, DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method)
for warning in config_warnings(config) + training_warnings(config):
    logger.warning(f"Warning: {warning}")


include: "rules/common.smk"
include: "rules/world.smk"
include: "rules/fingerprint.smk"
include: "rules/data.smk"
include: "rules/rollout.smk"
include: "rules/sft.smk"
include: "rules/train.smk"
include: "rules/models.smk"
include: "rules/eval.smk"
include: "rules/probe.smk"
include: "rules/figures.smk"
include: "rules/claims.smk"


rule all:
    input:
        get_final_outputs(),
    default_target: True
