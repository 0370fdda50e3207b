"""Prompt length against a model's context, checked at the start of a job before any compute.

A prompt longer than the model's context does not fail anywhere by itself: transformers keeps
generating past ``max_position_embeddings`` (garbage), and the rejection filter and SFT then
hide the damage. Every stage that generates or trains from prompts therefore calls
``check_prompts_fit`` first (teacher rollout, evaluation generation, the native trainer).

The rule (one, for every stage): each prompt's chat-template tokens **plus the response budget
``max_new_tokens``** must fit the context. A prompt that leaves less room than the budget is an
error, not a warning: its responses would be cut by the context instead of the budget, so
lengths, ``finish_reason`` and accuracy would silently mean something else.

The context is ``max_position_embeddings`` of the model folder's ``config.json`` (or
``text_config.max_position_embeddings``, ``n_positions``, ``max_sequence_length``,
``seq_length``), capped by a configured limit when one is given (the generation backend's
``max_model_len`` option). A model whose config names no context is not checked.

    ctx = model_context("results/world/models/teacher", limit=None)      # -> 256
    check_prompts_fit(tok, chats, model_dir=..., max_new_tokens=64, dataset="train.parquet",
                      budget_key="rollout.max_new_tokens")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def model_context(model_dir: str | Path, limit: int | None = None) -> int | None:
    """Context length in tokens of the Hugging Face model folder ``model_dir``.

    The first of ``CONTEXT_KEYS`` in ``config.json`` (top level, then ``text_config``), capped
    by ``limit`` (e.g. vLLM's ``max_model_len``) when given. None when neither is known (no
    ``config.json`` or no such key, and no limit). Reads one small JSON file; no torch.
    """
    ctx = None
    cfg_path = Path(model_dir) / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        for section in (cfg, cfg.get("text_config") or {}):
            ctx = next((int(section[k]) for k in CONTEXT_KEYS if section.get(k)), None)
            if ctx is not None:
                break
    if limit:
        ctx = int(limit) if ctx is None else min(ctx, int(limit))
    return ctx


def configured_limit(backend: dict | None) -> int | None:
    """The generation backend's ``max_model_len`` option (``{"backend", "options"}``), if set."""
    return ((backend or {}).get("options") or {}).get("max_model_len") or None


def check_prompt_lengths(lengths: Sequence[int], *, context: int | None, max_new_tokens: int,
                         dataset: str, model: str, budget_key: str = "max_new_tokens") -> None:
    """Raise ``ValueError`` unless every prompt length + ``max_new_tokens`` <= ``context``.

    ``lengths``: prompt lengths in tokens (chat template included); ``context``: the model's
    context in tokens (None: nothing to check). The message names ``dataset``, how many prompts
    do not fit (and how many exceed the context on their own), the longest prompt's length, the
    context, the budget (``budget_key``) and the fixes.
    """
    if context is None or not len(lengths):
        return
    room = context - max_new_tokens
    over = [n for n in lengths if n > room]
    if not over:
        return
    alone = sum(n >= context for n in over)
    longest = max(lengths)
    alone_txt = f"; {alone} of them exceed the context on their own" if alone else ""
    fix_budget = f"lower {budget_key}, " if longest < context else ""
    raise ValueError(
        f"{dataset}: {len(over)} of {len(lengths)} prompts do not fit the context of model "
        f"{model} ({context} tokens) with the response budget {budget_key}={max_new_tokens}"
        f"{alone_txt}. The longest prompt has {longest} tokens (chat template included); a "
        f"prompt may have at most {max(room, 0)}. Fix: use shorter prompts or filter out the long "
        f"ones, {fix_budget}or use a model with a larger context (max_position_embeddings in its "
        f"config.json; with vLLM also the backend option max_model_len).")


def prompt_lengths(tokenizer, prompts: list[list[dict]], enable_thinking: bool | None = None) -> list[int]:
    """Tokens per chat prompt as the generators encode it (``opd.generation.hf.encode_prompts``)."""
    from opd.generation.hf import encode_prompts

    return [len(ids) for ids in encode_prompts(tokenizer, prompts, enable_thinking)]


def check_prompts_fit(tokenizer, prompts: list[list[dict]], *, model_dir: str | Path,
                      max_new_tokens: int, dataset: str, budget_key: str = "max_new_tokens",
                      enable_thinking: bool | None = None, limit: int | None = None) -> list[int]:
    """Encode ``prompts`` (chat turns) as the generators do and check them against the context
    of ``model_dir`` (``model_context(model_dir, limit)``); see ``check_prompt_lengths``.

    Returns the prompt lengths in tokens (``[]`` when the context is unknown and nothing was
    checked). Raises ``ValueError`` naming ``dataset`` when a prompt plus ``max_new_tokens``
    does not fit.
    """
    context = model_context(model_dir, limit)
    if context is None:
        print(f"context check skipped: {model_dir}/config.json names no context length")
        return []
    lengths = prompt_lengths(tokenizer, prompts, enable_thinking)
    check_prompt_lengths(lengths, context=context, max_new_tokens=max_new_tokens, dataset=dataset,
                         model=str(model_dir), budget_key=budget_key)
    return lengths
