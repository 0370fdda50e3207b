"""What one job of a rule asks the scheduler for: threads, memory, run time. Imports nothing of
the project (the kernel pins read the thread count here before anything else loads)."""
from __future__ import annotations

#: What one job asks the scheduler for when ``resources.<rule>`` leaves a key out.
RESOURCE_DEFAULTS = {"threads": 1, "mem_mb": 4000, "runtime": 60}
#: Rules whose default thread count differs (the embedding stages use two cores).
RULE_RESOURCE_DEFAULTS = {rule: {"threads": 2} for rule in (
    "dedup_train", "dedup_prompt_set", "dedup_rollout_prompts", "dedup_reference",
    "dedup_reference_set", "select_prompts", "select_prompt_set")}


def resource(config: dict, rule: str, key: str):
    """``threads``, ``mem_mb`` or ``runtime`` (minutes) of one job of ``rule``: config
    ``resources.<rule>.<key>``, else ``RULE_RESOURCE_DEFAULTS``, else ``RESOURCE_DEFAULTS``."""
    default = RULE_RESOURCE_DEFAULTS.get(rule, {}).get(key, RESOURCE_DEFAULTS[key])
    return config.get("resources", {}).get(rule, {}).get(key, default)
