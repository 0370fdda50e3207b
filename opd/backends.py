"""The backend registry: which tool runs a stage, its tool stack, its GPUs, its check, its entry.

Every stage with a backend (``generation``, ``sft``, ``train``) has a CPU default and tools that
run on GPUs. Each backend is one ``Backend`` entry at the bottom of this file, and nothing else
in the project compares backend names: the schema's choices, the rules' conda envs and GPU
requests, the DAG-time checks and the stages' dispatch all read this table. Entries name their
code by import path and load it only when a job runs, so building the DAG imports no torch.

    backend(config, "train", "opd")            # -> "native" (config ``backends.train``)
    params = backend_params(config, "sft", "opd_coldstart")   # -> {"backend": "native", "options": {}}
    entry(params, "sft")                       # -> the function/class that runs the stage
    check_backends(config, using_conda=False)  # ConfigError before any job runs

Adding a backend (say SGLang for generation) is one module, one ``register(Backend(...))`` line
below and one ``envs/<stack>.yaml`` (README, "Layout").
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from opd.errors import ConfigError, StackMissing


@dataclass(frozen=True)
class Stack:
    """A tool stack: its own environment, built by ``make env-<name>`` into ``.venv-<name>``.

    ``executable`` is what runs inside it (``bin/python`` or a CLI); ``provides`` says how to
    find the tool in the current env under ``--sdm conda`` (``("module", "vllm")`` or
    ``("cli", "llamafactory-cli")``).
    """

    name: str
    executable: str
    provides: tuple[str, str]

    @property
    def default_path(self) -> str:
        return f".venv-{self.name}/{self.executable}"

    @property
    def env_file(self) -> str:
        return f"envs/{self.name}.yaml"

    @property
    def make_target(self) -> str:
        return f"env-{self.name}"


def _no_gpus(options: dict, method: str | None) -> int:
    return 0


@dataclass(frozen=True)
class Backend:
    """One way to run a stage.

    ``run``: ``"module:attr"`` of its entry (loaded lazily); ``stack``: its tool stack (None: the
    core env); ``gpus(options, method)``: GPUs one job needs; ``check``: ``"module:attr"`` of a
    DAG-time check ``check(config, exp) -> None`` that raises ``ValueError``; ``inputs``: extra
    named rule inputs it needs (``{"val": "benchmark"}``: the figures benchmark).
    """

    stage: str
    name: str
    run: str
    stack: Stack | None = None
    gpus: Callable[[dict, str | None], int] = _no_gpus
    check: str | None = None
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageInfo:
    """A stage that has backends: the rules it runs, and whether experiments can override it."""

    rules: tuple[str, ...]
    per_experiment: bool
    default: str
    backends: dict = field(default_factory=dict)


STAGES: dict[str, StageInfo] = {
    "generation": StageInfo(("teacher_rollout", "eval_generate", "grade"), False, "hf"),
    "sft": StageInfo(("sft_cold_start",), True, "native"),
    "train": StageInfo(("train",), True, "native"),
}


def register(b: Backend) -> Backend:
    """Add ``b`` to its stage; a duplicate name raises ``ValueError`` listing the registered ones."""
    if b.stage not in STAGES:
        raise ValueError(f"unknown stage {b.stage!r}; stages with backends: {sorted(STAGES)}")
    known = STAGES[b.stage].backends
    if b.name in known:
        raise ValueError(f"{b.stage} backend {b.name!r} is already registered (registered: {sorted(known)})")
    known[b.name] = b
    return b


def names(stage: str) -> list[str]:
    """Registered backend names of ``stage``, the CPU default first."""
    info = STAGES[stage]
    return [info.default] + sorted(n for n in info.backends if n != info.default)


def stacks() -> dict[str, Stack]:
    """Every tool stack some backend runs in, by name."""
    return {b.stack.name: b.stack for s in STAGES.values() for b in s.backends.values() if b.stack}


def get(stage: str, name: str) -> Backend:
    try:
        return STAGES[stage].backends[name]
    except KeyError:
        raise ValueError(f"unknown {stage} backend {name!r}; valid: {', '.join(names(stage))}") from None


def load(path: str):
    """The object ``"module:attr"`` names, imported now."""
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------ config lookups


def stage_of_rule(rule: str) -> str | None:
    return next((s for s, info in STAGES.items() if rule in info.rules), None)


def backend(config: dict, stage: str, exp: str | None = None) -> str:
    """The backend of ``stage`` (for experiment ``exp`` where it can be overridden)."""
    chosen = config.get("backends", {}).get(stage, STAGES[stage].default)
    if exp is not None and STAGES[stage].per_experiment:
        chosen = config["experiments"][exp].get("backends", {}).get(stage, chosen)
    return chosen


def backend_options(config: dict, name: str) -> dict:
    """The options of backend ``name`` (``backends.<name>``; ``{}`` for the CPU defaults)."""
    return dict(config.get("backends", {}).get(name) or {})


def backend_params(config: dict, stage: str, exp: str | None = None) -> dict:
    """``{"backend": name, "options": {...}}``: what a rule hashes for its backend, so switching a
    backend (or one of its options) reruns exactly the jobs that use it."""
    name = backend(config, stage, exp)
    return {"backend": name, "options": backend_options(config, name)}


def chosen(config: dict, stage: str, exp: str | None = None) -> Backend:
    return get(stage, backend(config, stage, exp))


def entry(params: dict, stage: str):
    """The run entry of the backend in a rule's ``params`` (``backend_params``), imported now."""
    return load(get(stage, params["backend"]).run)


def env_file(config: dict, stage: str, exp: str | None = None) -> str:
    """The conda env file (relative to ``rules/``) of the stack that runs ``stage``."""
    stack = chosen(config, stage, exp).stack
    return f"../envs/{stack.name if stack else 'core'}.yaml"


def gpus(config: dict, rule: str, exp: str | None = None) -> int:
    """GPUs one job of ``rule`` needs: what its backend runs on (0 for the CPU defaults).

    ``grade`` runs generation only when ``grading.verifier`` names a judge model.
    """
    stage = stage_of_rule(rule)
    if stage is None or (rule == "grade" and not config.get("grading", {}).get("verifier")):
        return 0
    b = chosen(config, stage, exp)
    method = config["experiments"][exp]["method"] if exp else None
    return b.gpus(backend_options(config, b.name), method)


def stack_path(config: dict, stack: Stack) -> str:
    """Configured interpreter or CLI of ``stack`` (``stacks.<name>``), else its default."""
    return config.get("stacks", {}).get(stack.name) or stack.default_path


def missing_stack_message(stack: Stack, name: str, path: str) -> str:
    return (f"stacks.{stack.name}: backend {name!r} needs the {stack.name} stack, but {path!r} does "
            f"not exist; build it with `make {stack.make_target}`, point stacks.{stack.name} at "
            f"your install, or run Snakemake with `--sdm conda` ({stack.env_file})")


def resolve_stack(path: str, name: str) -> str:
    """The interpreter or CLI to run backend ``name`` with, at job time.

    The configured ``path`` if it exists; otherwise the current environment's own tool (the
    rule's conda env under ``--sdm conda``); otherwise ``StackMissing`` naming the fix.
    """
    stack = next(b.stack for s in STAGES.values() for b in s.backends.values() if b.name == name)
    if Path(path).exists():
        return str(path)
    kind, what = stack.provides
    if kind == "module" and importlib.util.find_spec(what) is not None:
        return sys.executable
    if kind == "cli" and shutil.which(what):
        return shutil.which(what)
    raise StackMissing(missing_stack_message(stack, name, path))


def stack_for(config: dict, stage: str, params: dict) -> str | None:
    """At job time: the interpreter or CLI that runs the backend in ``params`` (None: core env)."""
    b = get(stage, params["backend"])
    return resolve_stack(stack_path(config, b.stack), b.name) if b.stack else None


def used(config: dict) -> list[tuple[str | None, Backend]]:
    """``(experiment, backend)`` for every backend some job of this config runs with."""
    out = [(None, chosen(config, "generation"))]
    for exp, spec in config["experiments"].items():
        out.append((exp, chosen(config, "train", exp)))
        if spec.get("cold_start"):
            out.append((exp, chosen(config, "sft", exp)))
    return out


def check_backends(config: dict, using_conda: bool) -> None:
    """Raise ``ConfigError`` for a backend choice that cannot run, before any job starts: each
    backend's own check (verl refuses objectives it cannot run, naming the alternative;
    LLaMA-Factory refuses SFT settings it cannot map) and, without conda, each used stack."""
    for stage in STAGES:
        for key, value in [("backends", config.get("backends", {}))] + [
                (f"experiments.{e}.backends", s.get("backends", {})) for e, s in config["experiments"].items()]:
            if stage in value and value[stage] not in STAGES[stage].backends:
                raise ConfigError(f"{key}.{stage}: unknown backend {value[stage]!r}; "
                                  f"valid: {', '.join(names(stage))}")
    for name in config.get("stacks") or {}:
        if name not in stacks():
            raise ConfigError(f"stacks.{name}: no backend runs in a stack of that name; "
                              f"stacks: {', '.join(sorted(stacks()))}")
    for exp, b in used(config):
        if b.check:
            try:
                load(b.check)(config, exp)
            except ValueError as err:
                where = f"experiments.{exp}.backends.{b.stage}" if exp else f"backends.{b.stage}"
                raise ConfigError(f"{where}: {b.name}: {err}") from err
    if using_conda:
        return
    for _, b in used(config):
        if b.stack and not Path(stack_path(config, b.stack)).exists():
            raise ConfigError(missing_stack_message(b.stack, b.name, stack_path(config, b.stack)))


# ------------------------------------------------------------------------ the registry

VLLM = Stack("vllm", "bin/python", ("module", "vllm"))
LLAMAFACTORY = Stack("llamafactory", "bin/llamafactory-cli", ("cli", "llamafactory-cli"))
VERL = Stack("verl", "bin/python", ("module", "verl"))
TRL = Stack("trl", "bin/python", ("module", "trl"))

register(Backend("generation", "hf", run="opd.generation.hf:HFGenerator"))
register(Backend("generation", "vllm", run="opd.generation.vllm.generator:VLLMGenerator", stack=VLLM,
                 gpus=lambda o, m: int(o.get("tensor_parallel_size", 1))))
register(Backend("sft", "native", run="opd.sft.native:cold_start"))
register(Backend("sft", "llamafactory", run="opd.sft.llamafactory:cold_start", stack=LLAMAFACTORY,
                 gpus=lambda o, m: 0 if o.get("use_cpu") else int(o.get("gpus", 1)),
                 check="opd.sft.llamafactory:check_config"))
register(Backend("train", "native", run="opd.train.native:run_train"))
register(Backend("train", "verl", run="opd.train.verl.run:run_train", stack=VERL,
                 gpus=lambda o, m: int(o.get("n_gpus_per_node", 8))
                 + (int(o.get("teacher_n_gpus_per_node", 1)) if m == "opd" else 0),
                 check="opd.train.verl.command:check_config", inputs=("val",)))
register(Backend("train", "trl", run="opd.train.trl.run:run_train", stack=TRL,
                 gpus=lambda o, m: int(o.get("gpus", 0)), check="opd.train.trl.plan:check_config"))
