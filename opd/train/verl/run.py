"""Run one experiment with verl and turn its outputs into the native trainer's artifacts.

The ``train`` rule with ``backends.train: verl`` calls ``run_verl``: it writes the command that
``opd.train.verl.command.verl_command`` generates (``verl_command.sh`` in the run folder, for the
record and for rerunning by hand), runs it with the verl stack's Python, then

* copies each saved step's Hugging Face export (``global_step_N/actor/huggingface``, which
  verl writes because the command asks for ``hf_model`` in ``checkpoint.save_contents``) to
  ``checkpoints/step_NNNN`` with the student's own tokenizer files, so evaluation formats
  prompts exactly as for a native run;
* converts verl's file-logger lines (``{"step": N, "data": {...}}``) into ``metrics.jsonl``
  rows, renaming the keys the figures read (``METRIC_NAMES``) and keeping the rest as verl
  names them.

verl keeps its own sharded checkpoints in ``<run>/verl`` and the command sets
``trainer.resume_mode=auto``, so a killed job resumes from its last saved step on rerun.
verl's trainer needs GPUs: on this project's CPU machines only the command, the registered
functions and these conversions are tested (docs/backends.md, "What was executed here").

    run_verl(python, exp, train, paths, cluster, checkpoints_dir, metrics_path, steps)
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from opd.train.verl.command import is_approximate, tracker_env, verl_command, verl_env
from opd.checkpoint import copy_checkpoint
from opd.runlog import MetricsWriter
from opd.train.config import TrainConfig

#: verl metric -> the name the native trainer logs (and the figures read).
METRIC_NAMES = {
    "critic/score/mean": "rollout/accuracy",
    "response_length/mean": "rollout/mean_length",
    "response_length/clip_ratio": "rollout/clip_ratio",
    "actor/pg_loss": "train/loss",
    "actor/grad_norm": "train/grad_norm",
    "actor/lr": "train/lr",
}


def convert_metrics(verl_log: str | Path, metrics_path: str | Path) -> int:
    """verl's file-logger jsonl -> ``metrics.jsonl`` (last line per step wins); rows written."""
    rows: dict[int, dict] = {}
    for line in Path(verl_log).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        data = rec.get("data", {})
        rows.setdefault(int(rec["step"]), {}).update(
            {METRIC_NAMES.get(k, k): v for k, v in data.items() if isinstance(v, (int, float))})
    writer = MetricsWriter(metrics_path)
    for step in sorted(rows):
        writer.log(step, rows[step])
    return len(rows)


def collect_checkpoints(verl_dir: str | Path, steps: list[int], student_dir: str | Path,
                        checkpoints_dir: str | Path) -> None:
    """Copy verl's Hugging Face export of every step in ``steps`` to ``step_NNNN``."""
    out = Path(checkpoints_dir)
    missing = [s for s in steps if not (Path(verl_dir) / f"global_step_{s}/actor/huggingface/config.json").exists()]
    if missing:
        raise FileNotFoundError(
            f"verl left no Hugging Face export for steps {missing} under {verl_dir}/global_step_N/"
            "actor/huggingface; check that trainer.save_freq equals train.save_every and that the "
            "run finished (see the log)")
    for step in steps:
        copy_checkpoint(Path(verl_dir) / f"global_step_{step}/actor/huggingface",
                        out / f"step_{step:04d}", tokenizer_from=student_dir)


def verl_paths(student_dir, teacher_dir, prompts_path, val_path, run_dir) -> dict:
    """The ``paths`` of ``verl_command`` for one experiment whose outputs live in ``run_dir``."""
    import opd.train.verl.reward as reward
    return {"student": str(student_dir), "teacher": teacher_dir and str(teacher_dir),
            "train_parquet": str(prompts_path), "val_parquet": str(val_path),
            "output_dir": str(Path(run_dir) / "verl"), "reward_fn_file": reward.__file__}


def run_verl(python: str, exp: str, train: TrainConfig, paths: dict, cluster: dict,
             checkpoints_dir: str, metrics_path: str, steps: list[int]) -> list[str]:
    """Run verl for experiment ``exp`` and collect its checkpoints and metrics; returns the argv."""
    verl_dir = Path(paths["output_dir"])
    verl_dir.mkdir(parents=True, exist_ok=True)
    argv = verl_command(exp, train, paths, {**cluster, "python": python})
    if is_approximate(train, cluster):
        print(f"NOTE: {exp} uses the approximate top-k teacher lookup (backends.verl.teacher_topk="
              f"{cluster.get('teacher_topk')}); see docs/verl.md", flush=True)
    (verl_dir / "verl_command.sh").write_text(shlex.join(argv) + "\n")
    log = verl_dir / "metrics.verl.jsonl"
    env = {**os.environ, **verl_env(), **tracker_env(train.logging, verl_dir.parent),
           "VERL_FILE_LOGGER_PATH": str(log)}
    print("running:", shlex.join(argv), flush=True)
    proc = subprocess.run(argv, env=env, stdout=sys.stdout, stderr=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"verl exited with status {proc.returncode}; its output is in this "
                           f"job's log, and the command in {verl_dir / 'verl_command.sh'}")
    collect_checkpoints(verl_dir, steps, paths["student"], checkpoints_dir)
    convert_metrics(log, metrics_path)
    return argv


def run_train(*, cfg: TrainConfig, exp: str, student: str, teacher: str | None, prompts: str,
              checkpoints: str, metrics: str, options: dict, stack: str | None = None,
              val: str | None = None) -> None:
    """The ``verl`` train backend (the registry's entry): verl's own run folder (sharded
    checkpoints, the command) is ``<run>/verl`` next to ``metrics``."""
    paths = verl_paths(student, teacher, prompts, val, Path(metrics).parent)
    run_verl(stack, exp, cfg, paths, options, checkpoints, metrics, cfg.checkpoint_steps())
