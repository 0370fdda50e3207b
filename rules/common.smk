# Path helpers and input functions (get_*). Every path under results/ follows from config names.
from opd import backends
from opd.config import checkpoint_steps, experiment_config, resource

R = "results"
EXPERIMENTS = list(config["experiments"])
BENCHMARKS = list(config["data"]["benchmarks"])
WORLD_MODELS = [m for m, spec in config["models"].items() if "world" in spec]


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    bench="|".join(BENCHMARKS),
    world_model="|".join(WORLD_MODELS) or "^$",
    model="[A-Za-z0-9_-]+(\\.(sft|step\\d+))?",
    split="pretrain|train|eval|heldout",
    teacher="|".join(config["models"]),


def canonical(obj):
    """``obj`` with every dict's keys sorted, so reordering YAML keys does not trigger reruns."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def get_backend(stage):
    """Input function: the backend (and its options) a job of ``stage`` hashes as a parameter."""

    def backend_of(wildcards):
        return canonical(backends.backend_params(config, stage, wildcards.get("exp")))

    return backend_of


def get_env(stage):
    """Input function: the conda env of the tool stack that runs a job of ``stage``."""
    return lambda wildcards: backends.env_file(config, stage, wildcards.get("exp"))


def get_resource(rule, key):
    """``threads``, ``mem_mb`` or ``runtime`` (minutes) of one job of ``rule`` (``opd.config.resource``)."""
    return resource(config, rule, key)


def get_gpus(rule):
    """Input function: GPUs one job of ``rule`` needs, from its backend (0 on the CPU)."""
    return lambda wildcards: backends.gpus(config, rule, wildcards.get("exp"))


def get_verifier_backend(wildcards):
    """The generation backend of the grading verifier; ``{}`` (no dependency) without one."""
    if not config.get("grading", {}).get("verifier"):
        return {}
    return get_backend("generation")(wildcards)


def get_verifier_env(wildcards):
    if not config.get("grading", {}).get("verifier"):
        return "../envs/core.yaml"
    return get_env("generation")(wildcards)


def with_thinking(section, thinking):
    """Config ``section`` with the chat-template ``enable_thinking`` of the model it runs, unless
    the section sets one itself or the model leaves it unset (then the key stays out)."""
    cfg = get_section(section)
    if cfg.get("enable_thinking") is None and thinking is not None:
        cfg["enable_thinking"] = thinking
    return cfg


def get_rollout_params(wildcards):
    return with_thinking("rollout", config["models"][wildcards.teacher].get("enable_thinking"))


def get_eval_params(wildcards):
    kind, name, _ = split_model_key(wildcards.model)
    if kind == "base":
        return with_thinking("eval", config["models"][name].get("enable_thinking"))
    return with_thinking("eval", experiment_config(config, name).get("enable_thinking"))


def get_sft_params(wildcards):
    return with_thinking("sft", experiment_config(config, wildcards.exp).get("enable_thinking"))


def get_base_model(name):
    """Directory of a named model: built by the tiny world, or the user's local path."""
    spec = config["models"][name]
    return spec["path"] if "path" in spec else f"{R}/world/models/{name}"


def get_world_model_spec(wildcards):
    return canonical(config["models"][wildcards.world_model]["world"])


def get_benchmark_spec(wildcards):
    return canonical(config["data"]["benchmarks"][wildcards.bench])


def get_rollout_teacher(wildcards):
    return get_base_model(wildcards.teacher)


def get_model_kinds(wildcards):
    return {k: split_model_key(k) for k in model_keys()}


def get_section(*keys):
    """A config section (``get_section("data", "dedup")``), key-sorted; ``{}`` if absent."""
    node = config
    for k in keys:
        node = node.get(k, {}) if isinstance(node, dict) else {}
    return canonical(node)


def get_dataset_source(spec):
    """Input file of a dataset spec: a world split or the user's parquet."""
    src = spec["source"]
    if src.startswith("world:"):
        return f"{R}/world/problems/{src.split(':', 1)[1]}.parquet"
    return src


def get_benchmark_source(wildcards):
    return get_dataset_source(config["data"]["benchmarks"][wildcards.bench])


def get_train_source(wildcards):
    return get_dataset_source(config["data"]["train"])


def get_selection_reference(wildcards):
    return get_dataset_source(config["data"]["selection"]["reference"])


def get_train_prompts(wildcards):
    """Deduplicated training prompts, or the teacher-aligned selection of them."""
    exp = config["experiments"][wildcards.exp]
    return f"{R}/data/selected.parquet" if exp.get("prompts") == "selected" else f"{R}/data/train.parquet"


def get_experiment_params(wildcards):
    """The resolved training config; a change reruns this experiment only."""
    return canonical(experiment_config(config, wildcards.exp))


def get_teacher_name(wildcards):
    return config["experiments"][wildcards.exp].get("teacher") or ""


def get_start_model(wildcards):
    """The student an experiment trains: cold-started, or the named base model."""
    exp = config["experiments"][wildcards.exp]
    if exp.get("cold_start"):
        return f"{R}/sft/{wildcards.exp}/model"
    return get_base_model(exp["student"])


def get_train_inputs(wildcards):
    exp = config["experiments"][wildcards.exp]
    inputs = {"student": get_start_model(wildcards), "prompts": get_train_prompts(wildcards)}
    if exp["method"] == "opd":
        inputs["teacher"] = get_base_model(exp["teacher"])
    if "val" in backends.chosen(config, "train", wildcards.exp).inputs:
        inputs["val"] = f"{R}/data/benchmarks/{config['figures']['benchmark']}.parquet"
    return inputs


def get_sft_teacher(wildcards):
    return get_base_model(config["experiments"][wildcards.exp]["teacher"])


def get_sft_rollouts(wildcards):
    return f"{R}/rollout/{config['experiments'][wildcards.exp]['teacher']}/rollouts.parquet"


def get_sft_student(wildcards):
    return get_base_model(config["experiments"][wildcards.exp]["student"])


def get_grade_inputs(wildcards):
    """The generations, and the verifier model when ``grading.verifier`` names one."""
    inputs = {"generations": f"{R}/eval/{wildcards.model}/{wildcards.bench}.parquet"}
    verifier = config.get("grading", {}).get("verifier")
    if verifier:
        inputs["verifier"] = get_base_model(verifier)
    return inputs


def split_model_key(key):
    """``name`` | ``exp.sft`` | ``exp.stepN`` -> (kind, name, step)."""
    if "." not in key:
        return "base", key, None
    exp, tag = key.split(".", 1)
    return ("sft", exp, None) if tag == "sft" else ("step", exp, int(tag[4:]))


def get_model_input(wildcards):
    """Directory the evaluation of model key ``wildcards.model`` reads."""
    kind, name, _ = split_model_key(wildcards.model)
    if kind == "base":
        return get_base_model(name)
    if kind == "sft":
        return f"{R}/sft/{name}/model"
    return f"{R}/train/{name}/checkpoints"


def get_model_subdir(wildcards):
    kind, _, step = split_model_key(wildcards.model)
    return f"step_{step:04d}" if kind == "step" else ""


def experiment_model_keys(name):
    """The models one experiment evaluates: student, teacher, cold start, its checkpoints."""
    exp = config["experiments"][name]
    keys = [m for m in (exp["student"], exp.get("teacher")) if m]
    if exp.get("cold_start"):
        keys.append(f"{name}.sft")
    return keys + [f"{name}.step{s:04d}" for s in checkpoint_steps(config, name)]


def model_keys():
    """Every model evaluated: base students and teachers, cold starts, all checkpoints."""
    keys = []
    for name in config["experiments"]:
        keys += [k for k in experiment_model_keys(name) if k not in keys]
    return keys


def get_experiment_grades(wildcards):
    return [f"{R}/grades/{m}/{b}.json" for m in experiment_model_keys(wildcards.exp) for b in BENCHMARKS]


def get_all_grades(wildcards=None):
    return [f"{R}/grades/{m}/{b}.json" for m in model_keys() for b in BENCHMARKS]


def get_final_outputs():
    return [
        f"{R}/figures/accuracy_vs_step.png",
        f"{R}/figures/training_dynamics.png",
        f"{R}/tables/summary.csv",
    ]
