"""``TrainConfig``: every knob of one on-policy run (OPD or GRPO), for any trainer. No torch.

The stage parses an experiment's resolved config once (``TrainConfig.from_dict``) and hands the
typed object to the native trainer (``opd.train.native``) or to verl's command builder
(``opd.train.verl.command``).

GRPO trains on the verifiable reward alone, so ``method: grpo`` needs the objective
``GRPO_OBJECTIVE`` (``adv_estimator: grpo``, ``top_k: 0``). Without an ``objective`` it gets
that one; an objective that says otherwise is refused (``ValueError`` naming both keys), never
rewritten.

    TrainConfig.from_dict({"method": "grpo", "n_samples": 8}).objective.adv_estimator   # "grpo"
"""
from __future__ import annotations

from dataclasses import dataclass, field

from opd.objectives.config import OPDConfig
from opd.options import from_options

METHODS = ("opd", "grpo")
#: How the teacher sees the prompt (``TrainConfig.teacher_prompt``).
TEACHER_PROMPTS = ("student", "own")
#: Keys of the ``logging`` section (``opd.runlog.MetricsWriter`` options).
LOGGING_KEYS = {"tensorboard", "wandb"}
#: The objective of ``method: grpo``: the group-normalised verifiable reward, no teacher.
GRPO_OBJECTIVE = {"adv_estimator": "grpo", "top_k": 0}


@dataclass
class TrainConfig:
    """Hyper-parameters of one on-policy run; ``objective`` holds the OPD/GRPO loss knobs
    (None: the method's default, ``OPDConfig()`` for opd and ``GRPO_OBJECTIVE`` for grpo)."""

    method: str = "opd"
    steps: int = 20
    prompts_per_step: int = 16
    n_samples: int = 4
    max_new_tokens: int = 64
    lr: float = 1e-4
    # linear warm-up over the first W training steps, then constant: step k (1-based) trains at
    # lr * min(1, (k - 1) / W), as verl's and transformers' constant schedule with warm-up
    lr_warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    mini_batch_size: int | None = None
    micro_batch_size: int = 32
    ppo_epochs: int = 1
    save_every: int = 10
    seed: int = 0
    enable_thinking: bool | None = None  # chat-template switch for the student's prompts (Qwen3)
    # the teacher's prompt: `student` scores the student's token ids as they are (the authors'
    # default); `own` re-renders the same chat messages with the teacher's chat template and its
    # thinking switch (`teacher_enable_thinking`, from models.<teacher>.enable_thinking); the
    # response tokens are scored unchanged
    teacher_prompt: str = "student"
    teacher_enable_thinking: bool | None = None
    objective: OPDConfig | None = None
    # the config's `logging` section: live trackers beside metrics.jsonl, {tensorboard: bool,
    # wandb: {mode, project, entity} | None}; the native trainer's MetricsWriter(**logging)
    logging: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        objective = d.pop("objective", None)
        objective = OPDConfig.from_dict(objective) if objective else None
        return from_options(cls, d | {"objective": objective}, "training")

    def __post_init__(self):
        if self.teacher_prompt not in TEACHER_PROMPTS:
            raise ValueError(f"teacher_prompt must be one of {TEACHER_PROMPTS}, got {self.teacher_prompt!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.objective is None:
            self.objective = OPDConfig(**GRPO_OBJECTIVE) if self.method == "grpo" else OPDConfig()
        got = {k: getattr(self.objective, k) for k in GRPO_OBJECTIVE}
        if self.method == "grpo" and got != GRPO_OBJECTIVE:
            raise ValueError(f"method grpo trains on the verifiable reward alone, so it needs objective "
                             f"{GRPO_OBJECTIVE}, got {got}; set objective.adv_estimator: grpo and "
                             "objective.top_k: 0 (for an OPD run, use method: opd)")
        for name in ("steps", "prompts_per_step", "n_samples", "max_new_tokens", "micro_batch_size",
                     "ppo_epochs", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        unknown = sorted(set(self.logging or {}) - LOGGING_KEYS)
        if unknown:
            raise ValueError(f"logging: unknown key(s) {unknown}; valid: {sorted(LOGGING_KEYS)}")
        if self.method == "grpo" and self.n_samples < 2:
            raise ValueError("grpo needs n_samples >= 2 to normalise rewards within a group")

    def lr_at(self, step: int) -> float:
        """The learning rate of training step ``step`` (1-based): ``lr * (step - 1) / W`` while
        ``step <= W = lr_warmup_steps``, then ``lr`` (so the first step of a warm-up trains at 0,
        as verl's ``get_constant_schedule_with_warmup`` and transformers' ``constant_with_warmup``,
        which count optimiser steps from 0). ``lr_at(k) == lr`` for every k when W is 0."""
        W = self.lr_warmup_steps
        return self.lr * min(1.0, (step - 1) / W) if W else self.lr

    def mini_batches_per_step(self) -> int:
        """Optimiser updates per pass over a rollout batch of ``prompts_per_step * n_samples``
        sequences: ``ceil(batch / mini_batch_size)``, 1 when ``mini_batch_size`` is null or at
        least the batch (verl's ``ppo_mini_batch_size``; the native trainer's update loop)."""
        batch = self.prompts_per_step * self.n_samples
        return -(-batch // (self.mini_batch_size or batch))

    def checkpoint_steps(self) -> list[int]:
        """Steps at which a checkpoint is saved: every ``save_every`` and the last one."""
        steps = list(range(self.save_every, self.steps + 1, self.save_every))
        if not steps or steps[-1] != self.steps:
            steps.append(self.steps)
        return steps
