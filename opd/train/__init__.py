"""On-policy training (OPD, GRPO): ``config`` (``TrainConfig``, no torch), ``native`` (the CPU
trainer) and ``verl/`` (the GPU backend: command, registered losses, reward, run)."""
