"""Run one experiment with TRL and turn its outputs into the native trainer's artifacts.

The ``train`` rule with ``backends.train: trl`` calls ``run_train`` (in the core env). It

* checks the experiment against the student's LM head (``plan.check_supported``; the DAG-time
  check read the declared vocabulary) and that every prompt plus ``max_new_tokens`` fits both
  models, as the native trainer does;
* writes the training prompts as the token ids of the student's chat template
  (``opd.generation.hf.encode_prompts``, exactly as the native trainer encodes them) and the
  plan (``opd.train.trl.plan.make_plan``) into ``<run>/trl/``, and runs
  ``opd/train/trl/runner.py`` with the TRL stack's Python;
* copies each saved ``step_NNNN`` to ``checkpoints/`` with the student's own tokenizer files;
* grades the recorded rollouts with ``opd.grading.verify.is_correct`` and writes
  ``metrics.jsonl``: per step ``rollout/accuracy``, ``rollout/mean_length`` (response tokens,
  eos included) and ``rollout/clip_ratio`` as the native trainer defines them, TRL's values under
  the project's names (``METRIC_NAMES``), and its other numbers as ``trl/<TRL's name>``.

TRL computes none of the mechanism metrics (``opd/overlap_ratio``, ...) except the student's
entropy. ``<run>/trl/`` keeps the plan, TRL's log, the rollouts and the saved steps.

    run_trl(python, exp, cfg, student, teacher, prompts, run_dir, options, checkpoints, metrics)
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from opd.train.config import TrainConfig
from opd.train.trl.plan import check_supported, make_plan

#: TRL's logged name -> the name the native trainer logs (and the figures read).
METRIC_NAMES = {
    "loss": "train/loss",
    "grad_norm": "train/grad_norm",
    "learning_rate": "train/lr",
    "entropy": "opd/student_entropy",
    "iw_opd/mean_advantage": "train/advantage_mean",
    "step_time": "time/step_s",
}
RUNNER = Path(__file__).with_name("runner.py")


def rollout_metrics(rollouts_path, rows: list[dict], tokenizer) -> dict[int, dict]:
    """Per step, from the runner's rollouts: ``rollout/accuracy`` (``is_correct`` against the
    row's ground truth), ``rollout/mean_length`` and ``rollout/clip_ratio``."""
    from opd.generation.hf import make_row
    from opd.grading.verify import is_correct
    from opd.io import read_jsonl

    by_step: dict[int, list[dict]] = defaultdict(list)
    for r in read_jsonl(rollouts_path):
        row = make_row(tokenizer, r["row"], 0, [], r["response_ids"], r["finish_reason"])
        row["outcome"] = float(is_correct(row["response"], rows[r["row"]]["ground_truth"]))
        by_step[int(r["step"])].append(row)
    return {step: {"rollout/accuracy": sum(x["outcome"] for x in xs) / len(xs),
                   "rollout/mean_length": sum(x["n_tokens"] for x in xs) / len(xs),
                   "rollout/clip_ratio": sum(x["finish_reason"] == "length" for x in xs) / len(xs)}
            for step, xs in by_step.items()}


def convert_metrics(trl_log, rollout_stats: dict[int, dict], metrics_path, logging: dict | None = None) -> int:
    """TRL's per-step log + ``rollout_stats`` -> ``metrics.jsonl`` (one row per step); rows written."""
    from opd.io import read_jsonl
    from opd.runlog import MetricsWriter

    rows: dict[int, dict] = {s: dict(v) for s, v in rollout_stats.items()}
    for rec in read_jsonl(trl_log):
        step = int(rec.pop("step"))
        rows.setdefault(step, {}).update({METRIC_NAMES.get(k, f"trl/{k}"): v for k, v in rec.items()})
    writer = MetricsWriter(metrics_path, **(logging or {}))
    for step in sorted(rows):
        writer.log(step, rows[step])
    writer.close()
    return len(rows)


def collect_checkpoints(saves, steps: list[int], student_dir, checkpoints_dir) -> None:
    """Copy the runner's ``saves/step_NNNN`` of every step in ``steps`` to ``checkpoints_dir``."""
    from opd.checkpoint import copy_checkpoint

    missing = [s for s in steps if not (Path(saves) / f"step_{s:04d}" / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"the TRL run left no checkpoint for steps {missing} under {saves}; "
                                "see the job's log")
    for step in steps:
        copy_checkpoint(Path(saves) / f"step_{step:04d}", Path(checkpoints_dir) / f"step_{step:04d}",
                        tokenizer_from=student_dir, link=True)


def run_trl(python: str, exp: str, cfg: TrainConfig, student: str, teacher: str, prompts: str, run_dir,
            options: dict, checkpoints: str, metrics: str) -> dict:
    """Run experiment ``exp`` with TRL and write the native artifacts; returns the plan."""
    from opd.checks import head_size
    from opd.generation.context import check_prompt_lengths, model_context
    from opd.generation.hf import encode_prompts, load_tokenizer
    from opd.io import flat_view, read_parquet

    kind = check_supported(cfg, head_size(student))
    rows = flat_view(read_parquet(prompts), prompts)[["problem_id", "prompt", "ground_truth"]].to_dict("records")
    tok = load_tokenizer(student)
    ids = encode_prompts(tok, [r["prompt"] for r in rows], cfg.enable_thinking)
    for model_dir in (student, teacher):
        check_prompt_lengths([len(x) for x in ids], context=model_context(model_dir), model=str(model_dir),
                             max_new_tokens=cfg.max_new_tokens, dataset=str(prompts),
                             budget_key=f"experiments.{exp}.train.max_new_tokens")
    work = Path(run_dir) / "trl"
    shutil.rmtree(work / "saves", ignore_errors=True)   # never collect a step an earlier run saved
    work.mkdir(parents=True, exist_ok=True)
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt_ids": x}) + "\n" for x in ids))
    paths = {"student": student, "teacher": teacher, "prompts": work / "prompts.jsonl", "work": work / "trainer",
             "saves": work / "saves", "log": work / "log.jsonl", "rollouts": work / "rollouts.jsonl"}
    plan = make_plan(cfg, kind, paths, options)
    (work / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    argv = [python, str(RUNNER), str(work / "plan.json")]
    print("running:", shlex.join(argv), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(argv, env=env, stdout=sys.stdout, stderr=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"the TRL runner exited with status {proc.returncode}; its output is in this "
                           f"job's log, and its plan in {work / 'plan.json'}")
    collect_checkpoints(paths["saves"], cfg.checkpoint_steps(), student, checkpoints)
    convert_metrics(paths["log"], rollout_metrics(paths["rollouts"], rows, tok), metrics, cfg.logging)
    return plan


def run_train(*, cfg: TrainConfig, exp: str, student: str, teacher: str | None, prompts: str,
              checkpoints: str, metrics: str, options: dict, stack: str | None = None,
              val: str | None = None) -> None:
    """The ``trl`` train backend (the registry's entry): ``stack`` is the TRL stack's Python; the
    run folder ``<run>/trl/`` lies next to ``metrics``."""
    if teacher is None:
        raise ValueError(f"experiment {exp!r}: the TRL backend runs OPD, which needs a teacher")
    run_trl(stack or sys.executable, exp, cfg, student, teacher, prompts, Path(metrics).parent, options,
            checkpoints, metrics)
