"""Models that are other experiments' results (``models.<name>: {from_experiment, step}``).

A model can be the checkpoint of another experiment (the paper's first law compares a teacher
that is itself a GRPO run). The DAG carries the edge: the source experiment trains first, and a
change to it reruns what depends on it. Here, torch-free, the DAG-time checks: the experiment
exists, the step is one it saves (``final`` = its last), and no experiment depends on itself.

    step_of(config, "teacher_grpo")       # -> 60
    root_model(config, "teacher_grpo")    # -> "student": the model whose tokenizer it has
    check_model_refs(config)              # ConfigError naming an unknown step or a cycle
"""
from __future__ import annotations


def is_from_experiment(config: dict, name: str) -> bool:
    return "from_experiment" in config["models"][name]


def step_of(config: dict, name: str) -> int:
    """The checkpoint step model ``name`` exports (``final``: the experiment's last)."""
    from opd.config import checkpoint_steps

    spec = config["models"][name]
    steps = checkpoint_steps(config, spec["from_experiment"])
    step = spec.get("step") or "final"
    return steps[-1] if step == "final" else int(step)


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


def check_model_refs(config: dict) -> None:
    """Raise ``ConfigError`` for an unknown source experiment, a step it does not save, or a cycle."""
    from opd.config import ConfigError, checkpoint_steps

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
