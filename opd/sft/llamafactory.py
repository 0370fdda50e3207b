r"""The ``llamafactory`` SFT backend: our SFT rows and config -> ``llamafactory-cli train``.

Core code (no llamafactory import): it writes LLaMA-Factory's dataset and YAML, runs its CLI in
the ``.venv-llamafactory`` stack (``make env-llamafactory``) and turns its log and output into
our ``metrics.jsonl`` and a Hugging Face checkpoint with the student's tokenizer. What maps to
what, the prompt templates, and where it differs from the native loop: ``docs/llamafactory.md``.

    history = run_sft(".venv-llamafactory/bin/llamafactory-cli", rows, config["sft"],
                      {"use_cpu": True, "bf16": False}, student_dir=..., work_dir=...,
                      model_dir=..., metrics_path=..., seed=0)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from opd.checkpoint import TOKENIZER_FILES, atomic_dir

STUDENT_TEMPLATE = "student"     # render prompts with the student's chat template; LF's `empty`
DEFAULT_OPTIONS = {"template": STUDENT_TEMPLATE, "use_cpu": False, "bf16": True, "gpus": 1, "extra": {}}
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
SFT_KEYS = {"lr", "steps", "epochs", "batch_size", "max_len", "warmup_ratio", "weight_decay",
            "grad_clip", "seed"}              # the SFTConfig fields train_yaml maps
HARMLESS_SFT_KEYS = {"log_every"}           # native progress-bar cadence; LF logs every step
IGNORED_CFG_KEYS = {"backend"}              # the stage's backend switch itself
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}
INSTALL_HINT = ("build it with `make env-llamafactory` (.venv-llamafactory), or run Snakemake with "
                "`--sdm conda`, which creates envs/llamafactory.yaml")


def normalize_options(options: Mapping | None) -> dict:
    """``backends.llamafactory`` with defaults filled in; unknown keys raise ``ValueError``."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown llamafactory option(s) {unknown}; valid: {sorted(DEFAULT_OPTIONS)}")
    out = {**DEFAULT_OPTIONS, **options}
    out["extra"] = dict(out["extra"] or {})
    if not isinstance(out["template"], str) or not out["template"]:
        raise ValueError(f"llamafactory template must be a non-empty string, got {out['template']!r}")
    if int(out["gpus"]) < 1 and not out["use_cpu"]:
        raise ValueError("llamafactory gpus must be >= 1 unless use_cpu is true")
    return out


def _as_records(rows) -> list[dict]:
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    return [dict(r) for r in rows]


def render_rows(tokenizer, rows, enable_thinking: bool | None = None) -> list[dict]:
    """Prompts rendered by ``tokenizer``'s chat template (as at evaluation), responses + EOS text."""
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    out = []
    for r in _as_records(rows):
        text = tokenizer.apply_chat_template([dict(m) for m in r["prompt"]], tokenize=False,
                                             add_generation_prompt=True, **kwargs)
        out.append({"prompt": text, "response": str(r["response"]) + tokenizer.eos_token})
    return out


def _conversation(prompt, response: str) -> dict:
    """One sharegpt record: ``conversations`` (from/value) and ``system``."""
    if isinstance(prompt, str):                      # already rendered: one human turn
        return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": response}],
                "system": ""}
    messages = [dict(m) for m in prompt]
    system = ""
    if messages and messages[0].get("role") == "system":
        system = str(messages.pop(0)["content"])
    turns = []
    for i, m in enumerate(messages):
        want = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != want:
            raise ValueError(f"prompt message {i} has role {m.get('role')!r}, expected {want!r}: "
                             "a prompt alternates user/assistant turns (after an optional system "
                             "message) and ends with a user turn")
        turns.append({"from": SHAREGPT_ROLES[want], "value": str(m["content"])})
    if not turns or len(turns) % 2 != 1:
        raise ValueError("a prompt must end with a user turn")
    return {"conversations": turns + [{"from": "gpt", "value": str(response)}], "system": system}


def dataset_info(name: str = "opd_rollouts") -> dict:
    """LLaMA-Factory's ``dataset_info.json`` entry for the file ``write_dataset`` writes."""
    return {name: {"file_name": f"{name}.jsonl", "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "system": "system"},
                   "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                            "assistant_tag": "gpt", "system_tag": "system"}}}


def write_dataset(rows, data_dir, name: str = "opd_rollouts") -> None:
    """Write ``rows`` as a sharegpt JSON-lines file plus ``dataset_info.json`` in ``data_dir``.

    Each row has ``prompt`` (chat messages, or a string already rendered by ``render_rows``) and
    ``response``. Both files are written atomically, ``dataset_info.json`` last.
    """
    from opd.io import atomic_path, write_json

    records = [_conversation(r["prompt"], r["response"]) for r in _as_records(rows)]
    if not records:
        raise ValueError("no SFT rows to write")
    data_dir = Path(data_dir)
    with atomic_path(data_dir / f"{name}.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_json(dataset_info(name), data_dir / "dataset_info.json")


def _sft_config(cfg: Mapping, seed: int):
    from opd.sft.config import SFTConfig

    keys = {k: v for k, v in cfg.items() if k not in IGNORED_CFG_KEYS}
    native = {f.name for f in fields(SFTConfig)}
    unmapped = sorted(set(keys) & native - SFT_KEYS - HARMLESS_SFT_KEYS)
    unknown = sorted(set(keys) - native)
    if unmapped or unknown:
        raise ValueError(f"sft key(s) {unmapped + unknown} have no LLaMA-Factory equivalent here; "
                         f"mapped: {sorted(SFT_KEYS)}")
    return SFTConfig.from_dict(keys | {"seed": seed})


def check_sft_config(cfg: Mapping, options: Mapping | None) -> None:
    """Raise ``ValueError`` (naming the key) unless ``cfg``/``options`` map onto LLaMA-Factory."""
    normalize_options(options)
    _sft_config(cfg, 0)


def check_config(config: dict, exp: str) -> None:
    """The registry's DAG-time check: the workflow's ``sft`` section and ``backends.llamafactory``."""
    check_sft_config(config["sft"], config.get("backends", {}).get("llamafactory"))


def train_yaml(cfg: Mapping, model_dir, data_dir, output_dir, seed: int, options: Mapping | None = None,
               *, dataset: str = "opd_rollouts", n_examples: int | None = None) -> dict:
    """LLaMA-Factory's training config (the YAML ``llamafactory-cli train`` reads) from our ``sft``.

    ``n_examples`` (the number of rows) lets an ``epochs`` run count its warm-up steps as native
    does; without it the warm-up is given as a fraction (transformers rounds it up).
    """
    opts = normalize_options(options)
    sft = _sft_config(cfg, seed)
    extra = dict(opts["extra"])
    procs = 1 if opts["use_cpu"] else int(opts["gpus"])
    micro = int(extra.pop("per_device_train_batch_size", max(1, sft.batch_size // procs)))
    accum = sft.batch_size // (micro * procs)
    if "gradient_accumulation_steps" in extra:
        accum = int(extra.pop("gradient_accumulation_steps"))
    if micro * accum * procs != sft.batch_size:
        raise ValueError(f"sft batch_size {sft.batch_size} is not per_device_train_batch_size {micro} x "
                         f"gradient_accumulation_steps {accum} x {procs} process(es)")
    if sft.steps is not None:
        total = sft.steps
    elif n_examples is not None:
        total = max(1, round(sft.epochs * math.ceil(n_examples / sft.batch_size)))
    else:
        total = None
    warmup = int(sft.warmup_ratio * total) if total is not None else float(sft.warmup_ratio)
    student = opts["template"] == STUDENT_TEMPLATE
    y: dict[str, Any] = {
        # model
        "model_name_or_path": str(model_dir),
        "trust_remote_code": False,
        # method
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        # data
        "dataset_dir": str(data_dir),
        "dataset": dataset,
        "template": "empty" if student else opts["template"],
        "cutoff_len": sft.max_len,
        "mask_history": True,            # loss on the final response only, as native
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        # output
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "save_strategy": "no",           # the final model only (saved at the end of training)
        "logging_steps": 1,
        "plot_loss": False,
        "report_to": "none",
        # optimisation
        "learning_rate": sft.lr,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accum,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "warmup_steps": warmup,
        "weight_decay": sft.weight_decay,
        "max_grad_norm": sft.grad_clip,
        "optim": "adamw_torch",
        "adam_beta1": 0.9,
        "adam_beta2": 0.95,
        "seed": sft.seed,
        "use_cpu": bool(opts["use_cpu"]),
        "bf16": bool(opts["bf16"]),
    }
    if sft.steps is not None:
        y["max_steps"] = sft.steps
    else:
        y["num_train_epochs"] = float(sft.epochs)
    y.update(extra)
    return y


def llamafactory_command(cli, yaml_path) -> list[str]:
    """The argv that trains with ``yaml_path``."""
    return [str(cli), "train", str(yaml_path)]


def llamafactory_env(options: Mapping | None = None, base: Mapping | None = None,
                     cache_dir=None) -> dict:
    """The CLI's environment: offline hubs, no leaked core-venv paths, torchrun for several GPUs."""
    opts = normalize_options(options)
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "USE_MODELSCOPE_HUB": "0", "USE_OPENMIND_HUB": "0", "WANDB_DISABLED": "true",
                "PYTHONUNBUFFERED": "1"})
    if cache_dir is not None:
        env["HF_DATASETS_CACHE"] = str(cache_dir)
    if opts["use_cpu"]:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif int(opts["gpus"]) > 1:
        env.update({"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": str(int(opts["gpus"]))})
    return env


def read_trainer_log(output_dir) -> list[dict]:
    """LLaMA-Factory's ``trainer_log.jsonl`` (plus grad norms from ``trainer_state.json``) as metrics rows.

    One row per logged training step: ``{"step", "train/loss", "train/lr"[, "train/grad_norm"]}``.
    Lines without a loss (the end-of-training summary) and a torn last line are skipped.
    """
    from opd.io import read_jsonl

    output_dir = Path(output_dir)
    grad_norms = {}
    state = output_dir / "trainer_state.json"
    if state.exists():
        for h in json.loads(state.read_text()).get("log_history", []):
            if "grad_norm" in h and "step" in h:
                grad_norms[int(h["step"])] = float(h["grad_norm"])
    rows = []
    for rec in read_jsonl(output_dir / "trainer_log.jsonl"):
        if rec.get("loss") is None or rec.get("current_steps") is None:
            continue
        step = int(rec["current_steps"])
        row = {"step": step, "train/loss": float(rec["loss"])}
        if rec.get("lr") is not None:
            row["train/lr"] = float(rec["lr"])
        if step in grad_norms:
            row["train/grad_norm"] = grad_norms[step]
        rows.append(row)
    return rows


def _restore_use_cache(config_path: Path, student_config: Path) -> None:
    """LLaMA-Factory turns ``use_cache`` off for training and saves it so; restore the student's."""
    if not student_config.exists():
        return
    cfg = json.loads(config_path.read_text())
    want = json.loads(student_config.read_text()).get("use_cache", True)
    if cfg.get("use_cache") != want:
        cfg["use_cache"] = want
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def finalize_checkpoint(output_dir, student_dir, model_dir) -> None:
    """Make ``model_dir``: LLaMA-Factory's weights and config, the student's own tokenizer files.

    Written into a temporary sibling folder and renamed into place (as ``opd.checkpoint.save_hf``),
    so a killed job never leaves a directory that looks complete.
    """
    output_dir, student_dir, model_dir = Path(output_dir), Path(student_dir), Path(model_dir)
    if (output_dir / "adapter_config.json").exists():
        raise ValueError(f"{output_dir} holds an adapter, not a model: the backend trains finetuning_type full")
    weights = sorted(output_dir.glob("*.safetensors"))
    if not weights or not (output_dir / "config.json").exists():
        raise FileNotFoundError(f"{output_dir}: no config.json / *.safetensors from LLaMA-Factory")
    tok_files = [student_dir / f for f in TOKENIZER_FILES if (student_dir / f).exists()]
    if not tok_files:
        raise FileNotFoundError(f"{student_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    with atomic_dir(model_dir) as tmp:
        for src in weights + [output_dir / f for f in MODEL_FILES if (output_dir / f).exists()]:
            shutil.copy2(src, tmp / src.name)
        for src in tok_files:
            shutil.copy2(src, tmp / src.name)
        _restore_use_cache(tmp / "config.json", student_dir / "config.json")


def _stream(argv: list[str], env: dict, sinks: Iterable) -> int:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            errors="replace", bufsize=1, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        for fh in sinks:
            fh.write(line)
            fh.flush()
    return proc.wait()


def run_sft(cli, rows, cfg: Mapping, options: Mapping | None, student_dir, work_dir, model_dir,
            metrics_path, seed: int, log=None, enable_thinking: bool | None = None) -> list[dict]:
    """SFT of ``student_dir`` on ``rows`` with LLaMA-Factory; writes ``model_dir`` and ``metrics_path``.

    The CLI's output streams to ``log`` (a file path, appended) or, when ``log`` is None, to stdout;
    a full copy is kept in ``work_dir/llamafactory.log``. Returns the metrics rows.
    """
    if cli is None or not Path(cli).exists():
        raise FileNotFoundError(f"LLaMA-Factory CLI not found at {cli}: {INSTALL_HINT}")
    opts = normalize_options(options)
    records = _as_records(rows)
    if not records:
        raise ValueError("no SFT rows")
    if opts["template"] == STUDENT_TEMPLATE:
        from opd.generation.hf import load_tokenizer
        records = render_rows(load_tokenizer(student_dir), records, enable_thinking)
    work_dir = Path(work_dir)
    data_dir, output_dir = work_dir / "data", work_dir / "output"
    for d in (data_dir, output_dir):
        if d.exists():
            shutil.rmtree(d)
    write_dataset(records, data_dir)
    config = train_yaml(cfg, student_dir, data_dir, output_dir, seed, opts, n_examples=len(records))
    yaml_path = work_dir / "train.yaml"
    import yaml

    from opd.io import write_text
    write_text(yaml.safe_dump(config, sort_keys=False), yaml_path)
    argv = llamafactory_command(cli, yaml_path)
    env = llamafactory_env(opts, cache_dir=work_dir / "hf_datasets_cache")
    copy_path = work_dir / "llamafactory.log"
    print(f"llamafactory: {' '.join(argv)} ({len(records)} rows)", flush=True)
    with open(copy_path, "w") as copy:
        if log is None:
            rc = _stream(argv, env, [copy, sys.stdout])
        else:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as fh:
                rc = _stream(argv, env, [copy, fh])
    if rc != 0:
        where = copy_path if log is None else f"{log} (copy: {copy_path})"
        raise RuntimeError(f"`{' '.join(argv)}` exited with status {rc}; see {where}")
    history = read_trainer_log(output_dir)
    if not history:
        raise RuntimeError(f"LLaMA-Factory logged no training step in {output_dir}; see {copy_path}")
    from opd.runlog import MetricsWriter
    writer = MetricsWriter(metrics_path)
    for row in history:
        writer.log(row["step"], {k: v for k, v in row.items() if k != "step"})
    finalize_checkpoint(output_dir, student_dir, model_dir)
    for f in output_dir.glob("*.safetensors"):      # now in model_dir; don't keep the model twice
        f.unlink()
    return history


def cold_start(*, student: str, rows, sft: dict, options: dict, stack: str | None, model: str,
               metrics: str, seed: int, enable_thinking: bool | None = None) -> None:
    """The registry's entry: ``run_sft`` with LLaMA-Factory's work folder beside ``model``."""
    run_sft(stack, rows, sft, options, student, work_dir=str(Path(model).parent / "llamafactory"),
            model_dir=model, metrics_path=metrics, seed=seed, enable_thinking=enable_thinking)
