"""The DAG-time check of the workflow config: what a JSON Schema cannot express.

The top layer of the config code: it imports the typed configs and views it checks
(``opd.experiments``, ``opd.model_refs``, ``opd.checks``, the rule table ``opd.stages.RULES``),
and nothing below imports it. The Snakefile reads the files (``opd.config_files``: syntax,
alternatives, numbers written as text, non-finite numbers), validates them against
``config/schema.yaml`` and then calls ``check_config`` and ``check_inputs``, so every mistake
below stops the run before any job starts, with an error (``opd.errors.ConfigError``) that names
the key and the fix. Also here: each rule's resources (``resource``). Imports no torch:
building the DAG stays fast.

    check_config(config)     # cross-references: experiments, models, claims, world, resources
    check_inputs(config)     # the files the config points at (opd.checks)
"""
from __future__ import annotations

import importlib

from opd.errors import ConfigError
from opd.experiments import checkpoint_steps, train_config
from opd.model_refs import experiment_deps
from opd.resources import RESOURCE_DEFAULTS, RULE_RESOURCE_DEFAULTS, resource  # noqa: F401 (public here too)

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
    """Raise ``ConfigError`` naming the key for cross-references the schema cannot check:
    extensions, resources, experiments (models, teacher, cold start, prompts, training config),
    the grading verifier, the figures' benchmark, models from experiments, claims and the world."""
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
            train_config(config, name)
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
    check_model_refs(config)
    check_claims(config)
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
            if size:
                from opd.world.spec import ModelSpec

                try:
                    ModelSpec.from_dict(size)
                except ValueError as err:
                    raise ConfigError(f"models.{name}.world.size: {err}") from err


def check_model_refs(config: dict) -> None:
    """Raise ``ConfigError`` for an unknown source experiment, a step it does not save, or a cycle."""
    for name, spec in config["models"].items():
        if "from_experiment" not in spec:
            if spec.get("step") is not None:
                raise ConfigError(f"models.{name}.step: only a model with `from_experiment` has a "
                                  "step; remove it (or set it to null)")
            continue
        exp = spec["from_experiment"]
        if exp not in config["experiments"]:
            raise ConfigError(f"models.{name}.from_experiment: unknown experiment {exp!r}; "
                              f"experiments: {sorted(config['experiments'])}")
        steps = checkpoint_steps(config, exp)
        step = spec.get("step") or "final"
        if step != "final" and step not in steps:
            raise ConfigError(f"models.{name}.step: experiment {exp!r} saves checkpoints at steps "
                              f"{steps}, not {step}; use one of them or `final`")
    for start in config["experiments"]:
        path, todo = [start], [(start, [start])]
        while todo:
            exp, path = todo.pop()
            for dep in experiment_deps(config, exp):
                if dep in path:
                    cycle = " -> ".join(path[path.index(dep):] + [dep])
                    raise ConfigError(f"experiments: a cycle of models from experiments ({cycle}); "
                                      "an experiment cannot train on its own result")
                todo.append((dep, path + [dep]))


def check_claims(config: dict) -> None:
    """Every experiment under ``claims:`` (``experiment``, and C6's ``random``) is an OPD
    experiment of this config: each claim measures an OPD run against its teacher
    (``opd.claims``); an unknown name would leave the claim silently ``not run``."""
    experiments = config["experiments"]
    opd = sorted(e for e, spec in experiments.items() if spec["method"] == "opd")
    for claim, spec in (config.get("claims") or {}).items():
        for field, exp in (spec or {}).items():
            key = f"claims.{claim}.{field}"
            if exp not in experiments:
                raise ConfigError(f"{key}: unknown experiment {exp!r}; name one under `experiments:` "
                                  f"(OPD experiments: {opd}), or leave the claim out (reported as not run)")
            if experiments[exp]["method"] != "opd":
                raise ConfigError(f"{key}: experiment {exp!r} has method {experiments[exp]['method']!r}, "
                                  f"but the claims measure OPD runs against their teacher; name one of {opd}")


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
