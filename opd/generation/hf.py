"""The ``hf`` generation backend (the CPU default): transformers ``generate``, in process.

Every generation backend returns one dict per (prompt, sample)::

    prompt_index, sample_idx, response, n_tokens, finish_reason ("stop" | "length"),
    prompt_ids, response_ids

    params = SamplingParams(n=4, temperature=0.7, top_p=0.95, max_new_tokens=64)
    rows = generate(model, tokenizer, prompts, params)
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from opd.generation.config import SamplingParams
from opd.runlog import progress


def load_tokenizer(path):
    """Tokenizer from a local Hugging Face directory, left-padded for generation."""
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path, dtype=torch.float32):
    """Causal LM from a local Hugging Face directory, in eval mode."""
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    model.eval()
    return model


def supports_thinking_toggle(tokenizer) -> bool:
    """Whether the chat template reacts to ``enable_thinking`` (Qwen3 and the tiny ChatML do)."""
    return "enable_thinking" in (tokenizer.chat_template or "")


def encode_prompts(tokenizer, prompts: list[list[dict]], enable_thinking: bool | None = None) -> list[list[int]]:
    """Chat-template token ids of each prompt, ending with the assistant header."""
    kwargs = {}
    if enable_thinking is not None and supports_thinking_toggle(tokenizer):
        kwargs["enable_thinking"] = enable_thinking
    texts = [tokenizer.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True, **kwargs)
             for m in prompts]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ``input_ids [B, W]`` left-padded with ``pad`` and ``attention_mask [B, W]``."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attn[row, width - len(ids):] = 1
    return input_ids, attn


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[dict]], params: SamplingParams,
             enable_thinking: bool | None = None, desc: str = "generate",
             show_progress: bool = True) -> list[dict]:
    """Sample ``params.n`` responses for every chat prompt with transformers ``generate``."""
    prompt_ids = encode_prompts(tokenizer, prompts, enable_thinking)
    jobs = [(i, s) for i in range(len(prompt_ids)) for s in range(params.n)]
    torch.manual_seed(params.seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out: list[dict] = []
    bar = progress(total=len(jobs), desc=desc, disable=not show_progress)
    for start in range(0, len(jobs), params.batch_size):
        chunk = jobs[start:start + params.batch_size]
        input_ids, attn = left_pad([prompt_ids[i] for i, _ in chunk], pad)
        width = input_ids.shape[1]
        sample = params.temperature > 0
        # top_k here is transformers' sampling filter (default 50), not the objective's candidate
        # count: 0 turns it off, so sampling is plain temperature / top-p, as on vLLM
        gen = model.generate(
            input_ids=input_ids, attention_mask=attn, max_new_tokens=params.max_new_tokens,
            do_sample=sample, temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None, top_k=0 if sample else None,
            eos_token_id=eos, pad_token_id=pad)
        for row, (i, s) in enumerate(chunk):
            resp = gen[row, width:].tolist()
            if eos in resp:
                resp = resp[:resp.index(eos) + 1]
                finish = "stop"
            else:
                while resp and resp[-1] == pad:
                    resp.pop()
                finish = "length"
            out.append(make_row(tokenizer, i, s, prompt_ids[i], resp, finish))
        bar.update(len(chunk))
    bar.close()
    return out


def make_row(tokenizer, prompt_index: int, sample_idx: int, prompt_ids: list[int],
             response_ids: list[int], finish_reason: str) -> dict:
    """One generation row; ``response_ids`` ends with the stop token when ``finish_reason`` is stop."""
    text_ids = response_ids[:-1] if finish_reason == "stop" else response_ids
    return {"prompt_index": prompt_index, "sample_idx": sample_idx,
            "response": tokenizer.decode(text_ids, skip_special_tokens=True),
            "n_tokens": len(response_ids), "finish_reason": finish_reason,
            "prompt_ids": prompt_ids, "response_ids": list(response_ids)}


class HFGenerator:
    """The ``hf`` backend: the model in this process, transformers ``generate``."""

    def __init__(self, model_dir, stack: str | None = None, options: dict | None = None):
        self.tokenizer, self.model = load_tokenizer(model_dir), load_model(model_dir)

    def generate(self, prompts, params: SamplingParams, enable_thinking=None, desc="generate",
                 show_progress=True) -> list[dict]:
        return generate(self.model, self.tokenizer, prompts, params, enable_thinking, desc, show_progress)

    def close(self):
        pass
