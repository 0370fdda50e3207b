"""Stage: on-policy training (OPD or GRPO) of one experiment with the native trainer."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from opd.checkpoint import save_hf
from opd.data import flat_view, read_parquet, write_json
from opd.engine import OnPolicyTrainer, TrainConfig
from opd.generation import load_model, load_tokenizer


def train(student_dir: str, teacher_dir: str | None, prompts_path: str, params_json: str,
          seed: int, checkpoints_dir: str, metrics_path: str, config_path: str,
          threads: int = 1) -> None:
    """Train and save ``step_NNNN`` checkpoints; write the resolved config next to the metrics."""
    torch.set_num_threads(threads)
    resolved = json.loads(params_json)
    cfg = TrainConfig.from_dict(resolved | {"seed": seed})
    prompts = flat_view(read_parquet(prompts_path), prompts_path)
    rows = prompts[["problem_id", "prompt", "ground_truth"]].to_dict("records")
    tok, student = load_tokenizer(student_dir), load_model(student_dir)
    teacher = teacher_tok = None
    if cfg.method == "opd":
        teacher_tok, teacher = load_tokenizer(teacher_dir), load_model(teacher_dir)
    trainer = OnPolicyTrainer(cfg, student, tok, rows, teacher=teacher, teacher_tokenizer=teacher_tok)
    out = Path(metrics_path).parent
    write_json({"resolved": resolved, "student": student_dir, "teacher": teacher_dir,
                "prompts": prompts_path, "seed": seed}, config_path)
    ckpt = Path(checkpoints_dir)

    def save(step):
        save_hf(student, tok, ckpt / f"step_{step:04d}")

    trainer.train(out, save)


def train_verl(python: str, exp: str, student_dir: str, teacher_dir: str | None, prompts_path: str,
               val_path: str, params_json: str, seed: int, cluster: dict, checkpoints_dir: str,
               metrics_path: str, config_path: str) -> None:
    """Train with verl (``backends.train: verl``); same artifacts as ``train``.

    verl's own run folder (sharded checkpoints, the command) is ``<run>/verl`` next to the
    metrics; ``cluster`` is ``backends.verl`` (GPUs, tensor parallelism, validation).
    """
    from opd.backends.verl_run import run_verl, verl_paths

    resolved = json.loads(params_json)
    cfg = TrainConfig.from_dict(resolved | {"seed": seed})
    paths = verl_paths(student_dir, teacher_dir, prompts_path, val_path, Path(metrics_path).parent)
    write_json({"resolved": resolved, "student": student_dir, "teacher": teacher_dir,
                "prompts": prompts_path, "seed": seed, "backend": "verl", "cluster": cluster},
               config_path)
    run_verl(python, exp, resolved | {"seed": seed}, paths, cluster, checkpoints_dir, metrics_path,
             cfg.checkpoint_steps())
