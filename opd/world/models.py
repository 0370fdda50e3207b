"""Bootstrap of the tiny world's tokenizer and models, built locally with nothing downloaded.

- ``train_tokenizer``: a byte-level BPE tokenizer trained with the ``tokenizers`` library on the
  problem corpus (digits split one per token), saved as a Hugging Face tokenizer with eos
  (``<|im_end|>``) and pad (``<|endoftext|>``) tokens and a ChatML chat template.
- ``init_model``: a randomly initialised Qwen3 causal LM of a configured size. The rules then
  pretrain it from scratch on reference solutions with the native SFT loop (``opd.sft.native``); the
  teacher is larger and trained longer than the student, so it is the stronger model.

Run through the workflow (``snakemake results/world/tokenizer``), or from Python::

    tok = train_tokenizer(texts, vocab_size=384)
    model = init_model(ModelSpec(hidden_size=96, num_layers=3), tok)
"""
from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from opd.world.spec import ModelSpec
from opd.world.tokens import ADDED_TOKENS, EOS, PAD

# ChatML, as Qwen models use it. ``enable_thinking=False`` inserts an empty think block like
# Qwen3's own template, so the rollout code can toggle thinking the same way for tiny and real
# tokenizers.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int,
                    added_tokens=ADDED_TOKENS) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.
    ``added_tokens``: (content, special) pairs, ids 0, 1, ... in order (``opd.world.tokens``)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[t for t, _ in added_tokens], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    # the trainer registers every added token as special; as in Qwen3's tokenizer the think
    # markers are not, so a response decoded with skip_special_tokens (every generation backend's
    # default) keeps them and a teacher's rollouts carry their think block into SFT data
    special = {t: bool(s) for t, s in added_tokens}
    spec = json.loads(tok.to_str())
    for added in spec["added_tokens"]:
        added["special"] = special[added["content"]]
    tok = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, chat_template=CHATML_TEMPLATE,
        padding_side="left", model_max_length=2048)


def init_model(spec: ModelSpec, tokenizer, seed: int = 0) -> Qwen3ForCausalLM:
    """A randomly initialised Qwen3 causal LM sized by ``spec`` for ``tokenizer``'s vocabulary."""
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        rope_theta=10000.0,
    )
    return Qwen3ForCausalLM(config)
