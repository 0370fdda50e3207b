"""``ModelSpec``: the size of a tiny-world Qwen3 model (``models.<name>.world.size``). No torch,
so the config check builds it at DAG time (``opd.config.check_config``) and ``opd.world.models``
builds the model from it.

    ModelSpec.from_dict({"hidden_size": 96, "num_heads": 4})   # ValueError on a bad size
"""
from __future__ import annotations

from dataclasses import dataclass

from opd.options import from_options


@dataclass(frozen=True)
class ModelSpec:
    """Size of a tiny Qwen3 model."""

    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return from_options(cls, d, "model size")

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                             f"{self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads "
                             f"{self.num_kv_heads}")
