"""The added tokens of the tiny world's tokenizer, as Qwen3's tokenizer has them. No torch, so
the workflow reads them at DAG time: they are a parameter of the tokenizer rule, and changing one
rebuilds the world.

``ADDED_TOKENS``: (content, special) in id order. The chat tokens are special (decoding with
``skip_special_tokens`` drops them); the think markers are not (a decoded response keeps its
think block, as with Qwen3, whose ``<think>`` / ``</think>`` have ``special: false``).
"""
from __future__ import annotations

PAD, IM_START, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (PAD, True), (IM_START, True), (EOS, True), (THINK_OPEN, False), (THINK_CLOSE, False))
