"""Saving Hugging Face model directories atomically.

``save_hf`` writes model and tokenizer into a temporary sibling folder and renames it into
place (``atomic_dir``), so a killed job never leaves a checkpoint directory that looks complete;
``copy_checkpoint`` does the same for a folder another tool wrote. The temporary folder is named
and cleaned up as ``opd.io``'s temporaries (a killed save leaves no stray copy after the next write
or job start), and the finished folder and its files get the umask's modes
(``opd.io.apply_output_mode``).

    save_hf(model, tokenizer, "results/train/opd/checkpoints/step_0010")
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from opd.io import apply_output_mode, new_temporary


@contextlib.contextmanager
def atomic_dir(path):
    """A temporary sibling folder to fill; it replaces ``path`` only when the block succeeds.

    Stale temporaries of ``path`` from killed writers are removed first (``opd.io.new_temporary``).
    """
    path = Path(path)
    tmp = new_temporary(path, is_dir=True)
    try:
        yield tmp
        apply_output_mode(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_hf(model, tokenizer, path) -> None:
    """``save_pretrained`` of model and tokenizer into ``path``, atomically."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


#: The files that make up a Hugging Face tokenizer (those present are copied).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json",
                   "merges.txt", "tokenizer.model")


def _link_or_copy(src, dst):
    """A hard link where the file system allows one (checkpoints are never modified in place),
    else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_checkpoint(src, path, tokenizer_from=None, link: bool = False) -> None:
    """Copy the Hugging Face folder ``src`` to ``path`` atomically.

    With ``tokenizer_from``, its tokenizer files replace the copied ones, so a model trained by
    another tool keeps the tokenizer (and chat template) the rest of the pipeline formats with.
    With ``link``, files are hard-linked where possible (no second copy of the weights).
    """
    with atomic_dir(path) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True,
                        copy_function=_link_or_copy if link else shutil.copy2)
        if tokenizer_from is not None:
            for name in TOKENIZER_FILES:
                (tmp / name).unlink(missing_ok=True)
                if (Path(tokenizer_from) / name).exists():
                    shutil.copy2(Path(tokenizer_from) / name, tmp / name)
