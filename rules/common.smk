# Path helpers and input functions (get_*). Every path under results/ follows from config names.
from opd import backends
from opd.config import resource, uses_world
from opd.experiments import checkpoint_steps, experiment_config, prompt_set, step_of
from opd.model_refs import thinking_of
from opd.world.tokens import ADDED_TOKENS

R = "results"
EXPERIMENTS = list(config["experiments"])
BENCHMARKS = list(config["data"]["benchmarks"])
WORLD_MODELS = [m for m, spec in config["models"].items() if "world" in spec]
#: Models that are another experiment's checkpoint (results/models/<name>, rules/models.smk).
FROM_EXPERIMENT_MODELS = [m for m, spec in config["models"].items() if "from_experiment" in spec]
#: Experiments with a training set of their own (results/data/sets/<exp>/, rules/data.smk).
PROMPT_SETS = sorted({prompt_set(config, e) for e in EXPERIMENTS} - {None})
#: The mechanism figures of the figures rule (results/figures/<name>.png, report/<name>.rst).
MECHANISM_FIGURES = ["overlap_vs_step", "entropy_vs_step", "reward_by_class", "by_position",
                     "extreme_reward", "objective_ablation"]


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    bench="|".join(BENCHMARKS),
    world_model="|".join(WORLD_MODELS) or "^$",
    model="[A-Za-z0-9_-]+(\\.(sft|step\\d+))?",
    split="pretrain|train|eval|heldout|pool",
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
    return with_thinking("rollout", thinking_of(config, wildcards.teacher))


def get_eval_params(wildcards):
    kind, name, _ = split_model_key(wildcards.model)
    if kind == "base":
        return with_thinking("eval", thinking_of(config, name))
    return with_thinking("eval", experiment_config(config, name).get("enable_thinking"))


def get_sft_params(wildcards):
    return with_thinking("sft", experiment_config(config, wildcards.exp).get("enable_thinking"))


def get_base_model(name):
    """Directory of a named model: built by the tiny world, the user's local path, or another
    experiment's checkpoint exported by rule model_from_experiment."""
    spec = config["models"][name]
    if "from_experiment" in spec:
        return f"{R}/models/{name}"
    return spec["path"] if "path" in spec else f"{R}/world/models/{name}"


def get_source_checkpoints(wildcards):
    """The checkpoints folder of the experiment a ``from_experiment`` model comes from."""
    return f"{R}/train/{config['models'][wildcards.from_model]['from_experiment']}/checkpoints"


def get_source_step(wildcards):
    return step_of(config, wildcards.from_model)


def get_world_model_spec(wildcards):
    return canonical(config["models"][wildcards.world_model]["world"])


def get_fingerprint_settings():
    """What the world depends on besides code and host: seed, kernel mode, world config, the
    world models' specs and the thread counts of the world rules (results/fingerprint.json)."""
    return canonical({
        "seed": config["seed"],
        "kernels": config["kernels"],
        "world": config.get("world"),
        "models": {m: config["models"][m]["world"] for m in WORLD_MODELS},
        "threads": {r: get_resource(r, "threads") for r in ("world_problems", "world_tokenizer", "world_model")},
    })


def get_world_model_thinking(wildcards):
    """The chat-template switch the world model is pretrained (and later used) with."""
    return thinking_of(config, wildcards.world_model)


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


def get_prompt_set_spec(wildcards):
    """The dataset spec of an experiment's own training set."""
    return canonical(config["experiments"][wildcards.prompt_set]["data"])


def get_prompt_set_source(wildcards):
    return get_dataset_source(config["experiments"][wildcards.prompt_set]["data"])


def get_rollout_source(wildcards):
    return get_dataset_source(config["rollout"]["source"])


def get_selection_reference(wildcards):
    return get_dataset_source(config["data"]["selection"]["reference"])


def get_selection_params(wildcards=None):
    """``data.selection`` without its ``dedup`` block (the dedup rule's parameter)."""
    return {k: v for k, v in get_section("data", "selection").items() if k != "dedup"}


def data_dir(name):
    """Folder of a training set: results/data (``data.train``) or results/data/sets/<name>."""
    return f"{R}/data" if name is None else f"{R}/data/sets/{name}"


def get_train_prompts(wildcards):
    """The experiment's deduplicated training prompts (``prompts: all``), the teacher-aligned
    selection of them (``selected``), or as many of them drawn at random (``random``)."""
    files = {"all": "train.parquet", "selected": "selected.parquet", "random": "random_prompts.parquet"}
    prompts = config["experiments"][wildcards.exp].get("prompts", "all")
    return f"{data_dir(prompt_set(config, wildcards.exp))}/{files[prompts]}"


def get_rollout_prompts(wildcards):
    """The cold-start prompts: ``rollout.source`` deduplicated, else the training prompts."""
    if (config.get("rollout") or {}).get("source"):
        return f"{R}/data/rollout_prompts.parquet"
    return f"{R}/data/train.parquet"


def get_experiment_params(wildcards):
    """The resolved training config; a change reruns this experiment only."""
    return canonical(experiment_config(config, wildcards.exp))


def get_resolved_experiments(wildcards=None):
    """Every experiment's resolved training config (the figures compare their objectives)."""
    return canonical({name: experiment_config(config, name) for name in EXPERIMENTS})


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


def probe_experiments():
    """The OPD experiments whose models are probed: ``probe.experiments``, else every one (none
    with ``probe.enabled: false``)."""
    if not config.get("probe", {}).get("enabled", True):
        return []
    chosen = config.get("probe", {}).get("experiments")
    opd = [e for e in EXPERIMENTS if config["experiments"][e]["method"] == "opd"]
    if chosen is not None:
        wrong = sorted(set(chosen) - set(opd))
        if wrong:
            raise ValueError(f"probe.experiments: {wrong} are not OPD experiments of this config "
                             f"({opd}); list OPD experiments, or null for all")
        return [e for e in opd if e in chosen]
    return opd


def probe_benchmarks():
    """``probe.benchmarks``, or the figures' benchmark."""
    benches = config.get("probe", {}).get("benchmarks") or [config["figures"]["benchmark"]]
    unknown = sorted(set(benches) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"probe.benchmarks: {unknown} are not in data.benchmarks ({sorted(BENCHMARKS)})")
    return benches


def probe_model_keys(name):
    """The models of experiment ``name`` a probe scores: all it evaluates but the teacher."""
    teacher = config["experiments"][name].get("teacher")
    return [k for k in experiment_model_keys(name) if k != teacher]


def get_probes(ext):
    """Input function: every probe's ``ext`` file (``json`` summary or ``parquet`` tokens)."""

    def probes(wildcards=None):
        return [f"{R}/probe/{e}/{m}/{b}.{ext}" for e in probe_experiments()
                for m in probe_model_keys(e) for b in probe_benchmarks()]

    return probes


def get_probe_teacher(wildcards):
    return get_base_model(config["experiments"][wildcards.exp]["teacher"])


def get_probe_objective(wildcards):
    """The experiment's resolved objective: its top-k, temperatures and metric settings."""
    return canonical(experiment_config(config, wildcards.exp).get("objective", {}))


def get_probe_settings(wildcards):
    """What a probe's result depends on: ``max_tokens`` and ``batch_size``."""
    section = config.get("probe", {})
    return {"max_tokens": section.get("max_tokens"), "batch_size": section.get("batch_size", 64)}


def get_probe_thinking(wildcards):
    """The chat-template switch the model's evaluation generations used."""
    return get_eval_params(wildcards).get("enable_thinking")


def get_probe_gpus(wildcards):
    """GPUs of one probe job: ``resources.probe.gpu`` (0 unless set; the paper config sets 1)."""
    return config.get("resources", {}).get("probe", {}).get("gpu", 0)


def get_final_outputs():
    return [
        f"{R}/figures/accuracy_vs_step.png",
        f"{R}/figures/training_dynamics.png",
        f"{R}/tables/summary.csv",
    ] + [f"{R}/figures/{name}.png" for name in MECHANISM_FIGURES] + [
        f"{R}/tables/claims.csv",
        f"{R}/figures/claims.png",
    ] + ([f"{R}/fingerprint.json"] if uses_world(config) else [])


def get_claims_grades(wildcards=None):
    """The grades on ``figures.benchmark`` of every evaluated model (the claims' accuracies)."""
    return [f"{R}/grades/{m}/{config['figures']['benchmark']}.json" for m in model_keys()]
