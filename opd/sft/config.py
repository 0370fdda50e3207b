"""``SFTConfig``: hyper-parameters of an SFT run (the cold start, or a tiny model's pretraining). No torch."""
from __future__ import annotations

from dataclasses import dataclass

from opd.options import from_options


@dataclass
class SFTConfig:
    """Hyper-parameters of the native SFT loop. Exactly one of ``steps`` and ``epochs``."""

    lr: float = 1e-4
    steps: int | None = None
    epochs: float | None = 1.0
    batch_size: int = 16
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_len: int = 512
    seed: int = 0
    log_every: int = 10

    @classmethod
    def from_dict(cls, d: dict) -> "SFTConfig":
        d = dict(d)
        if d.get("steps") is not None and "epochs" not in d:  # `steps` alone means no epochs
            d["epochs"] = None
        return from_options(cls, d, "SFT")

    def __post_init__(self):
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of sft 'steps' and 'epochs'")
        if self.lr <= 0 or self.batch_size < 1:
            raise ValueError(f"lr must be > 0 and batch_size >= 1, got {self.lr}, {self.batch_size}")
