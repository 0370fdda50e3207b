"""The ``vllm`` generation backend: a vLLM engine in a worker process in the vLLM stack.

``client`` drives ``worker`` (run by the stack's Python) over JSON lines; token ids go in and
come out, and this process encodes prompts and decodes responses with the ``hf`` backend's
tokenizer, so both backends write identical rows for identical tokens.
"""
from __future__ import annotations

from opd.generation.config import SamplingParams
from opd.generation.hf import encode_prompts, load_tokenizer, make_row
from opd.runlog import progress


class VLLMGenerator:
    """The ``vllm`` backend: token ids in, token ids out, through a worker in the vLLM stack.

    Prompts are encoded and responses decoded here with the same tokenizer as the ``hf``
    backend, so both produce identical rows for identical tokens.  Sampling parameters map one
    to one (``max_new_tokens`` -> ``max_tokens``); prompt ``i`` of a call samples with seed
    ``params.seed + i``, so results do not depend on how prompts are batched.
    """

    def __init__(self, model_dir, stack: str, options: dict | None = None):
        from opd.generation.vllm.client import VLLMWorker

        self.tokenizer = load_tokenizer(model_dir)
        self.worker = VLLMWorker(stack, model_dir, **(options or {}))

    def generate(self, prompts, params: SamplingParams, enable_thinking=None, desc="generate",
                 show_progress=True) -> list[dict]:
        prompt_ids = encode_prompts(self.tokenizer, prompts, enable_thinking)
        out: list[dict] = []
        step = max(1, params.batch_size // params.n)
        bar = progress(total=len(prompt_ids) * params.n, desc=desc, disable=not show_progress)
        for start in range(0, len(prompt_ids), step):
            chunk = prompt_ids[start:start + step]
            samples = self.worker.generate(
                chunk, n=params.n, temperature=params.temperature, top_p=params.top_p,
                max_new_tokens=params.max_new_tokens, seed=params.seed + start,
                stop_token_ids=[self.tokenizer.eos_token_id])
            for offset, per_prompt in enumerate(samples):
                for s, sample in enumerate(per_prompt):
                    out.append(make_row(self.tokenizer, start + offset, s, chunk[offset],
                                        sample["token_ids"], sample["finish_reason"]))
            bar.update(len(chunk) * params.n)
        bar.close()
        return out

    def close(self):
        self.worker.close()
