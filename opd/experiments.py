"""What the workflow config says about one experiment: its resolved training config and what
follows from it (checkpoint steps, its training set, the step a model from it exports).

``experiment_config`` merges ``train_defaults`` with one experiment's overrides; the merged dict
is what the training rule receives as a parameter, so changing one experiment reruns only that
experiment and what depends on it. ``train_config`` parses it into a ``TrainConfig`` once per
distinct dict (the DAG asks for checkpoint steps many times). Imports no torch: building the DAG
stays fast. The checks of these values are one layer up (``opd.config.check_config``).

    cfg = experiment_config(config, "opd")        # a dict
    checkpoint_steps(config, "opd")               # -> [30, 60]
    step_of(config, "grpo_student")               # -> 60
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache

from opd.model_refs import thinking_of
from opd.train.config import TrainConfig


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
        merged["enable_thinking"] = thinking_of(config, exp["student"])
    if merged.get("teacher_prompt") == "own" and exp.get("teacher"):
        merged["teacher_enable_thinking"] = thinking_of(config, exp["teacher"])
    return merged


@lru_cache(maxsize=256)
def _parse(resolved: str) -> TrainConfig:
    return TrainConfig.from_dict(json.loads(resolved))


def train_config(config: dict, name: str) -> TrainConfig:
    """``TrainConfig`` of experiment ``name``, parsed once per distinct resolved dict (shared
    between callers: read it, do not change it). ``ValueError`` names the invalid field."""
    return _parse(json.dumps(experiment_config(config, name), sort_keys=True))


def checkpoint_steps(config: dict, name: str) -> list[int]:
    """Training steps of experiment ``name`` that leave a checkpoint."""
    return train_config(config, name).checkpoint_steps()


def step_of(config: dict, name: str) -> int:
    """The checkpoint step model ``name`` (``models.<name>: {from_experiment, step}``) exports
    (``final``: the source experiment's last)."""
    spec = config["models"][name]
    steps = checkpoint_steps(config, spec["from_experiment"])
    step = spec.get("step") or "final"
    return steps[-1] if step == "final" else int(step)


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
