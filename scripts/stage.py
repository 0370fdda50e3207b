"""The script of every rule: calls opd.stages.<module>.<rule>(...) with the job's named inputs,
outputs and params as keywords (see opd/stages/__init__.py)."""
from opd.stages import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
