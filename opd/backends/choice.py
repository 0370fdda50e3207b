"""Which tool runs each stage (config ``backends:``) and where each tool's stack lives (``stacks:``).

Three stages have a backend; the first choice is the CPU default:

=============  =========================================  ==============================
stage          rules                                      choices
=============  =========================================  ==============================
generation     teacher_rollout, eval_generate, grade*     ``hf`` | ``vllm``
sft            sft_cold_start                             ``native`` | ``llamafactory``
train          train                                      ``native`` | ``verl``
=============  =========================================  ==============================

(* grade only when ``grading.verifier`` names a judge model.)  ``backends.sft`` and
``backends.train`` can be overridden per experiment (``experiments.<name>.backends``).

``backend_params`` is what a rule hashes as a parameter: the backend's name plus its options,
so switching a backend (or one of its options) reruns exactly the jobs that use it, while moving
a stack (``stacks:``) reruns nothing.  Each non-default backend runs in its own tool stack: a
conda env (``envs/<tool>.yaml``, with ``snakemake --sdm conda``) or, without conda, the
interpreter or CLI that ``stacks.<tool>`` names (built by ``make env-<tool>``).

    backend(config, "train", "opd")            # -> "native"
    backend_params(config, "generation")       # -> {"backend": "hf"}
    check_backends(config, using_conda=False)  # raises ConfigError before any job runs
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

CHOICES = {"generation": ("hf", "vllm"), "sft": ("native", "llamafactory"), "train": ("native", "verl")}
PER_EXPERIMENT = ("sft", "train")
#: The tool stack (and env file / make target) of each non-default backend.
STACKS = {"vllm": "vllm", "llamafactory": "llamafactory", "verl": "verl"}
DEFAULT_STACK_PATHS = {"vllm": ".venv-vllm/bin/python",
                       "llamafactory": ".venv-llamafactory/bin/llamafactory-cli",
                       "verl": ".venv-verl/bin/python"}
#: What the stack provides, to find it in the current env under ``--sdm conda``.
_PROVIDES = {"vllm": ("module", "vllm"), "llamafactory": ("cli", "llamafactory-cli"),
             "verl": ("module", "verl")}


class StackMissing(FileNotFoundError):
    """A backend's tool stack is not installed where the config says."""


def backend(config: dict, stage: str, exp: str | None = None) -> str:
    """The backend of ``stage`` (for experiment ``exp`` where it can be overridden)."""
    chosen = config.get("backends", {}).get(stage, CHOICES[stage][0])
    if exp is not None and stage in PER_EXPERIMENT:
        chosen = config["experiments"][exp].get("backends", {}).get(stage, chosen)
    return chosen


def backend_options(config: dict, name: str) -> dict:
    """The options of backend ``name`` (``backends.<name>``; ``{}`` for the CPU defaults)."""
    return dict(config.get("backends", {}).get(name) or {})


def backend_params(config: dict, stage: str, exp: str | None = None) -> dict:
    """``{"backend": name, "options": {...}}``: what a rule hashes for its backend."""
    name = backend(config, stage, exp)
    return {"backend": name, "options": backend_options(config, name)}


def env_file(config: dict, stage: str, exp: str | None = None) -> str:
    """The conda env file (relative to ``rules/``) of the stack that runs ``stage``."""
    name = backend(config, stage, exp)
    return f"../envs/{STACKS.get(name, 'core')}.yaml"


def stack_path(config: dict, name: str) -> str:
    """Configured interpreter or CLI of the stack of backend ``name``."""
    stack = STACKS[name]
    return config.get("stacks", {}).get(stack) or DEFAULT_STACK_PATHS[stack]


def missing_stack_message(name: str, path: str) -> str:
    stack = STACKS[name]
    return (f"stacks.{stack}: backend {name!r} needs the {stack} stack, but {path!r} does not "
            f"exist; build it with `make env-{stack}`, point stacks.{stack} at your install, or run "
            f"Snakemake with `--sdm conda` (envs/{stack}.yaml)")


def resolve_stack(path: str, name: str) -> str:
    """The interpreter or CLI to run backend ``name`` with, at job time.

    The configured ``path`` if it exists; otherwise the current environment's own tool (the
    rule's conda env under ``--sdm conda``); otherwise ``StackMissing`` naming the fix.
    """
    if Path(path).exists():
        return str(path)
    kind, what = _PROVIDES[STACKS[name]]
    if kind == "module" and importlib.util.find_spec(what) is not None:
        return sys.executable
    if kind == "cli" and shutil.which(what):
        return shutil.which(what)
    raise StackMissing(missing_stack_message(name, path))


def used_backends(config: dict) -> set[str]:
    """Every backend some job of this config runs with."""
    used = {backend(config, "generation")}
    for exp in config["experiments"]:
        used.add(backend(config, "train", exp))
        if config["experiments"][exp].get("cold_start"):
            used.add(backend(config, "sft", exp))
    return used


def check_backends(config: dict, using_conda: bool) -> None:
    """Raise ``ConfigError`` for a backend choice that cannot run, before any job starts.

    Checks that each experiment's objective is one the chosen trainer runs exactly (verl refuses
    the top-k strategies its teacher cannot score, naming the alternative), that the SFT config
    maps onto LLaMA-Factory, and, without conda, that each used stack is installed.
    """
    from opd.config import ConfigError, experiment_config

    for exp in config["experiments"]:
        if backend(config, "train", exp) == "verl":
            from opd.backends.verl import check_supported
            try:
                check_supported(experiment_config(config, exp), backend_options(config, "verl"))
            except ValueError as err:
                raise ConfigError(f"experiments.{exp}.backends.train: verl: {err}") from err
        if config["experiments"][exp].get("cold_start") and backend(config, "sft", exp) == "llamafactory":
            from opd.backends.llamafactory import check_sft_config
            try:
                check_sft_config(config["sft"], backend_options(config, "llamafactory"))
            except ValueError as err:
                raise ConfigError(f"sft: the llamafactory backend (experiment {exp}): {err}") from err
    if using_conda:
        return
    for name in sorted(used_backends(config) & set(STACKS)):
        path = stack_path(config, name)
        if not Path(path).exists():
            raise ConfigError(missing_stack_message(name, path))


def gpus(config: dict, rule: str, exp: str | None = None) -> int:
    """GPUs one job of ``rule`` needs: what its backend runs on (0 for the CPU defaults).

    vLLM: its tensor-parallel size; LLaMA-Factory: ``backends.llamafactory.gpus`` (0 with
    ``use_cpu``); verl: the actor's GPUs per node plus, for OPD, the teacher's.
    """
    stage = {"teacher_rollout": "generation", "eval_generate": "generation", "grade": "generation",
             "sft_cold_start": "sft", "train": "train"}.get(rule)
    if stage is None or (rule == "grade" and not config.get("grading", {}).get("verifier")):
        return 0
    name = backend(config, stage, exp)
    opts = backend_options(config, name)
    if name == "vllm":
        return int(opts.get("tensor_parallel_size", 1))
    if name == "llamafactory":
        return 0 if opts.get("use_cpu") else int(opts.get("gpus", 1))
    if name == "verl":
        n = int(opts.get("n_gpus_per_node", 8))
        if config["experiments"][exp]["method"] == "opd":
            n += int(opts.get("teacher_n_gpus_per_node", 1))
        return n
    return 0


def stack_for(config: dict, name: str) -> str | None:
    """At job time: the interpreter or CLI that runs backend ``name`` (None for CPU defaults)."""
    return resolve_stack(stack_path(config, name), name) if name in STACKS else None
