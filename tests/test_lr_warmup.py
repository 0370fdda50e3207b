"""``train.lr_warmup_steps``: the learning-rate schedule of an on-policy run, the same on every
train backend: step k (1-based) trains at ``lr * min(1, (k - 1) / W)``, as verl's and
transformers' constant schedule with warm-up (they count optimiser steps from 0).

Run: .venv/bin/pytest tests/test_lr_warmup.py -q
"""
from __future__ import annotations

import pytest
import torch

from opd.train.config import TrainConfig
from opd.train.native import OnPolicyTrainer


def test_lr_at_by_hand():
    cfg = TrainConfig.from_dict({"lr": 1e-3, "lr_warmup_steps": 4})
    assert [cfg.lr_at(k) for k in range(1, 7)] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    flat = TrainConfig.from_dict({"lr": 1e-3})
    assert [flat.lr_at(k) for k in (1, 2, 100)] == [1e-3] * 3


def test_negative_warmup_is_refused():
    with pytest.raises(ValueError, match="lr_warmup_steps must be >= 0"):
        TrainConfig.from_dict({"lr_warmup_steps": -1})


def test_lr_at_matches_transformers_constant_with_warmup():
    """The peers' schedule (TRL reads transformers'; verl's is written the same way), stepped
    once per training step as both do."""
    from transformers import get_constant_schedule_with_warmup

    cfg = TrainConfig.from_dict({"lr": 3e-4, "lr_warmup_steps": 5})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = get_constant_schedule_with_warmup(opt, num_warmup_steps=cfg.lr_warmup_steps)
    got = []
    for _ in range(8):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx([cfg.lr_at(k) for k in range(1, 9)])


def test_native_trainer_steps_at_the_schedule(tiny_models, tiny_tokenizer, tiny_problems):
    """The optimiser's rate at each of three steps, and the logged ``train/lr``."""
    rows = [{"problem_id": str(i), "prompt": [{"role": "user", "content": p.prompt}],
             "ground_truth": str(p.answer)} for i, p in enumerate(tiny_problems["train"][:4])]
    student = type(tiny_models[0])(tiny_models[0].config)
    student.load_state_dict(tiny_models[0].state_dict())
    cfg = TrainConfig.from_dict({"steps": 3, "prompts_per_step": 2, "n_samples": 2, "max_new_tokens": 6,
                                 "lr": 1e-3, "lr_warmup_steps": 2, "micro_batch_size": 4})
    trainer = OnPolicyTrainer(cfg, student, tiny_tokenizer, rows, teacher=tiny_models[1])
    seen, step = [], trainer.opt.step

    def record(*a, **k):
        seen.append(trainer.opt.param_groups[0]["lr"])
        return step(*a, **k)
    trainer.opt.step = record
    logged = [trainer.step(k)["train/lr"] for k in (1, 2, 3)]
    assert seen == pytest.approx([0.0, 5e-4, 1e-3]) and logged == pytest.approx(seen)


def test_backends_carry_the_warmup():
    from opd.train.trl.plan import trainer_args
    from opd.train.verl.command import verl_overrides

    cfg = TrainConfig.from_dict({"lr": 5e-4, "lr_warmup_steps": 10, "objective": {"top_k": 0}})
    a = trainer_args(cfg, "full_vocab", None, "out")
    assert (a["lr_scheduler_type"], a["warmup_steps"]) == ("constant_with_warmup", 10)
    assert trainer_args(TrainConfig.from_dict({}), "full_vocab", None, "out")["lr_scheduler_type"] == "constant"
    paths = {"student": "/m/s", "teacher": "/m/t", "train_parquet": "/d/t.parquet",
             "val_parquet": "/d/v.parquet", "output_dir": "/out", "reward_fn_file": "/r.py"}
    assert verl_overrides("opd", cfg, paths)["actor_rollout_ref.actor.optim.lr_warmup_steps"] == 10
    flat = verl_overrides("opd", TrainConfig.from_dict({"objective": {"top_k": 0}}), paths)
    assert flat["actor_rollout_ref.actor.optim.lr_warmup_steps"] == -1   # verl: read the ratio, 0.0
