"""Shared fixtures: the repo root, the real data folder, and a tiny tokenizer and models."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def questions_frame(name: str, questions: list[str]):
    """Bare questions as a dataset in the project's row format (ground truth "1")."""
    import pandas as pd

    from opd.io import make_row
    return pd.DataFrame([make_row(name, f"{name}-{i}", q, q, "1", i, "train")
                         for i, q in enumerate(questions)])


@pytest.fixture(scope="session")
def tiny_problems():
    from opd.world.problems import ProblemSpec, make_splits
    return make_splits(ProblemSpec(), {"pretrain": 400, "train": 50, "eval": 20}, seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_problems):
    from opd.world.models import train_tokenizer
    texts = [f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n{p.solution}<|im_end|>\n"
             for p in tiny_problems["pretrain"]]
    return train_tokenizer(texts, vocab_size=320)


@pytest.fixture(scope="session")
def tiny_models(tiny_tokenizer):
    """A (student, teacher) pair of untrained tiny Qwen3 models sharing the tokenizer."""
    from opd.world.models import ModelSpec, init_model
    student = init_model(ModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                   intermediate_size=64), tiny_tokenizer, seed=1)
    teacher = init_model(ModelSpec(hidden_size=48, num_layers=2, num_heads=2, num_kv_heads=1,
                                   intermediate_size=96), tiny_tokenizer, seed=2)
    return student, teacher
