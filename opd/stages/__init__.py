"""Stage entry points: one function per workflow rule, named after it, called by keyword.

Every rule's ``script:`` is ``scripts/stage.py``, which calls ``run(snakemake)``: it looks up
the rule's function in ``RULES``, and calls it with the rule's named inputs, outputs and params
(and the wildcards the function names) as keywords, so a rule's keys and its function's
parameters are the same names. ``run`` also does, once for every rule: the CPU kernel pins and
the thread count (``opd.kernels.pin_job``, before torch loads), the log file, and the tool
stack of the rule's ``backend`` param (passed as ``stack``).

    rules/train.smk (rule train) -> opd/stages/train.py:train(student=..., prompts=..., ...)

Each rule's docstring names its function (``Runs opd/stages/train.py:train.``;
``snakemake --list-rules`` prints them all), so a reader finds the code without running anything;
``tests/test_architecture.py`` checks that every docstring names the function ``RULES`` gives.

Outside Snakemake, call the functions directly, e.g. ``opd.stages.world.world_problems(...)``.
"""
from __future__ import annotations

import importlib
import inspect

from opd import kernels

#: rule name -> the module under opd.stages that defines its function (of the same name).
RULES = {
    "world_problems": "world", "world_tokenizer": "world", "world_model": "world",
    "world_fingerprint": "fingerprint",
    "prepare_benchmark": "data", "dedup_train": "data", "select_prompts": "data",
    "dedup_prompt_set": "data", "dedup_rollout_prompts": "data", "dedup_reference": "data",
    "dedup_reference_set": "data", "select_prompt_set": "data",
    "model_from_experiment": "models",
    "teacher_rollout": "rollout", "sft_cold_start": "sft", "train": "train",
    "eval_generate": "evaluate", "grade": "evaluate", "probe": "probe",
    "figures": "figures", "experiment_table": "figures", "claims": "claims",
}


def stage_function(rule: str):
    """The function that runs ``rule``."""
    if rule not in RULES:
        raise KeyError(f"no stage function for rule {rule!r}; add it to opd.stages.RULES")
    return getattr(importlib.import_module(f"opd.stages.{RULES[rule]}"), rule)


def _named(items) -> dict:
    """A Snakemake Namedlist's named entries as a plain dict (lists stay lists)."""
    return {name: list(value) if isinstance(value, list) else value for name, value in items.items()}


def run(smk) -> None:
    """Run ``smk.rule``'s stage function with the job's inputs, outputs and params by keyword.

    First it removes the temporaries a killed earlier run of this job left beside its outputs
    (``opd.io.remove_stale_temporaries``; no other job writes these outputs).
    """
    kernels.pin_job(smk)  # first: the CPU kernel pins and thread counts, before torch loads
    from opd import backends
    from opd.io import remove_stale_temporaries
    from opd.runlog import stage_logging

    with stage_logging(smk.log[0] if smk.log else None):
        for out in smk.output:
            for stale in remove_stale_temporaries(out):
                print(f"removed {stale}, left by a killed run of this job")
        fn = stage_function(smk.rule)
        kwargs = {**_named(smk.input), **_named(smk.output), **_named(smk.params)}
        accepted = inspect.signature(fn).parameters
        for k, v in smk.wildcards.items():
            if k in accepted:
                kwargs.setdefault(k, v)  # a named input/output/param of the same name wins
        if "stack" in accepted:
            stage = backends.stage_of_rule(smk.rule)
            backend = kwargs.get("backend") or None
            kwargs["stack"] = backends.stack_for(smk.config, stage, backend) if backend else None
        fn(**kwargs)
