"""Stage: on-policy training (OPD or GRPO) of one experiment with the chosen trainer (rules/train.smk)."""
from __future__ import annotations

from opd import backends
from opd.io import write_json
from opd.train.config import TrainConfig


def train(*, exp: str, student: str, prompts: str, train: dict, backend: dict, seed: int,
          checkpoints: str, metrics: str, config: str, teacher: str | None = None,
          val: str | None = None, stack: str | None = None, logging: dict | None = None) -> None:
    """Parse the experiment's resolved config once and hand it to the trainer of ``backend``;
    writes ``step_NNNN`` checkpoints, ``metrics.jsonl`` and the resolved ``config.json``.
    ``logging``: the config's tracker switches (TensorBoard, W&B), for the trainer's writer."""
    cfg = TrainConfig.from_dict(train | {"seed": seed, "logging": logging or {}})
    record = {"resolved": train, "student": student, "teacher": teacher, "prompts": prompts,
              "seed": seed, "backend": backend["backend"]}
    if backend["options"]:
        record["cluster"] = backend["options"]
    write_json(record, config)
    backends.entry(backend, "train")(cfg=cfg, exp=exp, student=student, teacher=teacher,
                                     prompts=prompts, val=val, options=backend["options"],
                                     stack=stack, checkpoints=checkpoints, metrics=metrics)
