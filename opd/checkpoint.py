"""Saving Hugging Face model directories atomically.

``save_hf`` writes model and tokenizer into a temporary sibling folder and renames it into
place, so a killed job never leaves a checkpoint directory that looks complete.

    save_hf(model, tokenizer, "results/train/opd/checkpoints/step_0010")
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def save_hf(model, tokenizer, path) -> None:
    """``save_pretrained`` of model and tokenizer into ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
