"""Checks and derived views of the workflow config that a JSON Schema cannot express.

The Snakefile validates the config against ``config/schema.yaml`` and then calls
``check_config``, so every mistake below stops the run before any job starts, with an error
that names the key and the fix. ``experiment_config`` merges ``train_defaults`` with one
experiment's overrides; the merged dict is what the training rule receives as a parameter, so
changing one experiment reruns only that experiment and what depends on it. Imports no torch:
building the DAG stays fast.

    check_config(config)
    cfg = experiment_config(config, "opd")
"""
from __future__ import annotations

import copy
import importlib

from opd.train.config import TrainConfig

#: What one job asks the scheduler for when ``resources.<rule>`` leaves a key out.
RESOURCE_DEFAULTS = {"threads": 1, "mem_mb": 4000, "runtime": 60}
#: Rules whose default thread count differs (the embedding stages use two cores).
RULE_RESOURCE_DEFAULTS = {rule: {"threads": 2} for rule in (
    "dedup_train", "dedup_prompt_set", "dedup_rollout_prompts", "dedup_reference",
    "dedup_reference_set", "select_prompts", "select_prompt_set")}


class ConfigError(ValueError):
    """An invalid config value; the message starts with the key."""


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, recursing into nested dicts."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def experiment_config(config: dict, name: str) -> dict:
    """The resolved training config of experiment ``name`` (defaults plus its overrides)."""
    exp = config["experiments"][name]
    merged = deep_merge(config.get("train_defaults", {}), exp.get("train", {}))
    merged["method"] = exp["method"]
    if merged.get("enable_thinking") is None:
        from opd.model_refs import thinking_of

        merged["enable_thinking"] = thinking_of(config, exp["student"])
    if merged.get("teacher_prompt") == "own" and exp.get("teacher"):
        from opd.model_refs import thinking_of

        merged["teacher_enable_thinking"] = thinking_of(config, exp["teacher"])
    return merged


def prompt_set(config: dict, name: str) -> str | None:
    """The training set of experiment ``name``: None for the default (``data.train``), else,
    when its ``data`` names another source or prompt style, the name of the first experiment (in
    the config's order) with the same ``data``, so experiments that train on one source share
    one deduplicated set and one selection (``results/data/sets/<name>/``)."""
    def key(exp: str):
        data = config["experiments"][exp].get("data")
        return None if not data else (data["source"], data.get("prompt_style", "keep"))

    own = key(name)
    default = config["data"]["train"]
    if own is None or own == (default["source"], default.get("prompt_style", "keep")):
        return None
    return next(e for e in config["experiments"] if key(e) == own)


def uses_world(config: dict) -> bool:
    """Whether any dataset or model comes from the tiny world."""
    sources = [config["data"]["train"]["source"]] + [
        b["source"] for b in config["data"]["benchmarks"].values()] + [
        e["data"]["source"] for e in config["experiments"].values() if e.get("data")]
    if "selection" in config["data"]:
        sources.append(config["data"]["selection"]["reference"]["source"])
    if (config.get("rollout") or {}).get("source"):
        sources.append(config["rollout"]["source"]["source"])
    return any(s.startswith("world:") for s in sources) or any(
        "world" in m for m in config["models"].values())


def resource(config: dict, rule: str, key: str):
    """``threads``, ``mem_mb`` or ``runtime`` (minutes) of one job of ``rule``: config
    ``resources.<rule>.<key>``, else ``RULE_RESOURCE_DEFAULTS``, else ``RESOURCE_DEFAULTS``."""
    default = RULE_RESOURCE_DEFAULTS.get(rule, {}).get(key, RESOURCE_DEFAULTS[key])
    return config.get("resources", {}).get(rule, {}).get(key, default)


def import_extensions(config: dict) -> None:
    """Import the modules named in ``extensions:``, so the estimators and policy losses they
    register (``opd.objectives`` registries) are known to the config check and the trainer."""
    for i, name in enumerate(config.get("extensions") or []):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"extensions[{i}]: cannot import {name!r} ({err}); name a module on "
                              "the Python path (e.g. a file next to the Snakefile)") from err


def check_config(config: dict) -> None:
    """Raise ``ConfigError`` naming the key for cross-references the schema cannot check."""
    from opd.stages import RULES

    import_extensions(config)
    for rule in config.get("resources") or {}:
        if rule not in RULES:
            raise ConfigError(f"resources.{rule}: no such rule; rules: {', '.join(sorted(RULES))}")
    models = config["models"]
    if uses_world(config) and "world" not in config:
        raise ConfigError("world: a dataset or model uses the tiny world (`world:` source or a "
                          "model with `world:`), so the config needs a `world:` section")
    for name, exp in config["experiments"].items():
        key = f"experiments.{name}"
        if exp["student"] not in models:
            raise ConfigError(f"{key}.student: unknown model {exp['student']!r}; "
                              f"define it under `models:` (known: {sorted(models)})")
        teacher = exp.get("teacher")
        if teacher is not None and teacher not in models:
            raise ConfigError(f"{key}.teacher: unknown model {teacher!r}; "
                              f"define it under `models:` (known: {sorted(models)})")
        if exp["method"] == "opd" and teacher is None:
            raise ConfigError(f"{key}.teacher: method 'opd' needs a teacher model")
        if exp.get("cold_start") and teacher is None:
            raise ConfigError(f"{key}.cold_start: a cold start rolls out the teacher, so set "
                              f"{key}.teacher")
        prompts = exp.get("prompts", "all")
        if prompts in ("selected", "random") and "selection" not in config["data"]:
            raise ConfigError(f"{key}.prompts: {prompts!r} needs a data.selection section (the "
                              "random control draws as many prompts as the selection keeps)")
        try:
            TrainConfig.from_dict(experiment_config(config, name))
        except ValueError as err:
            raise ConfigError(f"{key}.train: {err}") from err
    verifier = config.get("grading", {}).get("verifier")
    if verifier and verifier not in models:
        raise ConfigError(f"grading.verifier: unknown model {verifier!r}; define it under `models:` "
                          f"(known: {sorted(models)})")
    bench = config["figures"]["benchmark"]
    if bench not in config["data"]["benchmarks"]:
        raise ConfigError(f"figures.benchmark: {bench!r} is not one of data.benchmarks "
                          f"({sorted(config['data']['benchmarks'])})")
    from opd.model_refs import check_model_refs

    check_model_refs(config)
    world = config.get("world")
    if world:
        p = world["problems"]
        if p["min_ops"] > p["max_ops"]:
            raise ConfigError("world.problems.min_ops: must not exceed world.problems.max_ops")
        from opd.world.problems import FAMILIES
        from opd.world.styles import STYLES

        named = [(f"world.problems.families.{split}", f) for split, f in (p.get("families") or {}).items()]
        named += [(f"models.{n}.world.families", m["world"]["families"]) for n, m in models.items()
                  if m.get("world", {}).get("families")]
        for key, families in named:
            for family in families:
                if family not in FAMILIES:
                    raise ConfigError(f"{key}: unknown problem family {family!r}; known: {', '.join(FAMILIES)}")
        for name, m in models.items():
            style = m.get("world", {}).get("style", "terse")
            if style not in STYLES:
                raise ConfigError(f"models.{name}.world.style: unknown solution style {style!r}; "
                                  f"known: {', '.join(STYLES)}")
            size = m.get("world", {}).get("size")
            if size and size["hidden_size"] % size["num_heads"]:
                raise ConfigError(f"models.{name}.world.size.hidden_size: must be divisible by "
                                  f"num_heads ({size['num_heads']})")
            if size and size["num_heads"] % size["num_kv_heads"]:
                raise ConfigError(f"models.{name}.world.size.num_kv_heads: must divide num_heads")


def check_model_paths(config: dict) -> None:
    """The models a config points at, before any job runs (``opd.checks.check_models``): each
    ``path:`` folder has config.json and weights, every OPD pair shares one tokenizer and one
    LM-head size, and every OPD ``top_k`` fits the vocabulary."""
    from opd.checks import check_models

    check_models(config)


def check_inputs(config: dict) -> None:
    """Everything a config points at (``opd.checks``): models, then user parquet files and
    encoder folders, from cheap reads (file metadata, one or two columns, json files)."""
    from opd.checks import check_data, check_models

    check_models(config)
    check_data(config)


def checkpoint_steps(config: dict, name: str) -> list[int]:
    """Training steps of experiment ``name`` that leave a checkpoint."""
    return TrainConfig.from_dict(experiment_config(config, name)).checkpoint_steps()
