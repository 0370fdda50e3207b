"""On-policy training (OPD, GRPO): ``config`` (``TrainConfig``, no torch), ``native`` (the CPU
trainer), ``verl/`` (the GPU backend: command, registered losses, reward, run) and ``trl/`` (TRL's
distillation trainers: plan, runner, run)."""
