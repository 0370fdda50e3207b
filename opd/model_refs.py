"""Models that are other experiments' results (``models.<name>: {from_experiment, step}``).

A model can be the checkpoint of another experiment (the paper's first law compares a teacher
that is itself a GRPO run). The DAG carries the edge: the source experiment trains first, and a
change to it reruns what depends on it. Here, plain lookups along such chains (no project
imports: the resolved experiment configs build on them). The step a model exports is
``opd.experiments.step_of``; the checks (the experiment exists, the step is one it saves, no
experiment depends on itself) are ``opd.config.check_model_refs``.

    root_model(config, "teacher_grpo")    # -> "student": the model whose tokenizer it has
    thinking_of(config, "teacher_grpo")   # -> the chat-template switch it was trained with
    experiment_deps(config, "opd_grpo")   # -> ["grpo"]: experiments whose models it uses
"""
from __future__ import annotations


def is_from_experiment(config: dict, name: str) -> bool:
    return "from_experiment" in config["models"][name]


def root_model(config: dict, name: str) -> str:
    """The model a ``from_experiment`` chain starts from (its tokenizer is the chain's)."""
    seen = []
    while is_from_experiment(config, name) and name not in seen:
        seen.append(name)
        name = config["experiments"][config["models"][name]["from_experiment"]]["student"]
    return name


def thinking_of(config: dict, name: str):
    """``enable_thinking`` of model ``name``: its own, else (a model from an experiment) the one
    its source experiment trained with (``train.enable_thinking``, else its student's)."""
    seen = []
    while name not in seen:
        seen.append(name)
        spec = config["models"][name]
        if spec.get("enable_thinking") is not None or "from_experiment" not in spec:
            return spec.get("enable_thinking")
        exp = config["experiments"].get(spec["from_experiment"])
        if exp is None:
            return None                          # check_model_refs names the unknown experiment
        own = (exp.get("train") or {}).get("enable_thinking")
        if own is None:
            own = (config.get("train_defaults") or {}).get("enable_thinking")
        if own is not None:
            return own
        name = exp["student"]
        if name not in config["models"]:
            return None
    return None


def experiment_deps(config: dict, exp: str) -> list[str]:
    """Experiments whose results ``exp`` uses as its student or teacher."""
    spec = config["experiments"][exp]
    return [config["models"][m]["from_experiment"] for m in (spec.get("student"), spec.get("teacher"))
            if m in config["models"] and is_from_experiment(config, m)]
