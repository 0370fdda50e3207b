"""The native trainer's rollout sampler: plain temperature sampling with less work per token.

transformers ``generate`` spends most of a tiny model's decoding step outside the model (logits
processors, stopping criteria, input preparation, keyword bookkeeping) and in
``torch.multinomial`` (about 0.7 ms for 64 x 320 probabilities on a CI core, more than the
model's forward).  On-policy training samples with plain temperature sampling (top-p 1, top-k 0),
so this loop does only what that needs, per step:

    p = softmax(logits[:, -1] / T);  y = draw(p)  (inverse CDF: the first j with
    cdf_j > u * cdf_V, u ~ U[0, 1) from a generator seeded with ``params.seed``, so
    P(y = j) = p_j, and a zero-probability token is never drawn);
    y = pad where the row already finished;  feed y with the KV cache, the 2-D attention mask
    and position ids = the count of real tokens before it,

and stops when every row has produced eos or after ``max_new_tokens``.  The model calls are
those ``generate`` makes (left-padded prompts, the same masks and positions), so the next-token
distributions are the same; only the random draw differs (tests/test_sampler.py: with
``generate``'s draw swapped in, the same tokens as ``generate``; ``draw``'s frequencies against p).
Rows come back in ``generate``'s format (``make_row``); with ``keep_hidden`` each also holds the
final hidden states that predicted its tokens, which the trainer scores (``rollout_hidden``)
instead of running the student again.

A decoding step of a small model is a few dozen tiny ops; waking a second OpenMP thread for each
costs more than it saves (and on a shared machine a thread waiting for a core that another
process holds stalls the step).  So when a step's largest tensor, the [B, V] logits, has fewer
than ``SINGLE_THREAD_LOGITS`` elements, the batch is decoded on one intra-op thread (the tiny
world: 64 x 320); larger models decode with all of them.

    rows = sample(model, tokenizer, prompt_ids, params)     # params: SamplingParams, top_p 1
"""
from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from opd.generation.config import SamplingParams
from opd.generation.hf import left_pad, make_row

#: Decode on one intra-op thread below this many logits per step (batch x vocabulary).
SINGLE_THREAD_LOGITS = 1 << 17


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` [B, V] (non-negative, rows need not sum to 1) with
    P(j) = probs[b, j] / sum_j probs[b, j]: inverse-CDF sampling (float64 CDF); [B] long."""
    cdf = probs.double().cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, dtype=torch.float64, device=probs.device) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))   # u < total, always
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


def _keeps_last_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _forward(model, keep_hidden: bool, **inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(next-token logits [B, V], the final post-norm hidden state [B, H] behind them, or None).
    With ``keep_hidden`` the decoder and the LM head are called apart (as the trainer's
    ``response_hidden`` does), so the states come with no extra work."""
    if keep_hidden:
        h = model.model(**inputs).last_hidden_state[:, -1]
        return model.get_output_embeddings()(h), h
    extra = {"logits_to_keep": 1} if _keeps_last_logits(model) else {}
    return model(**inputs, **extra).logits[:, -1], None


@torch.no_grad()
def sample_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                 max_new_tokens: int, eos: int, pad: int, generator: torch.Generator | None = None,
                 keep_hidden: bool = False):
    """Sampled continuations ``tokens`` [B, T <= max_new_tokens] of left-padded prompts
    ``input_ids`` [B, P] (``attention_mask`` [B, P]); positions after a row's eos hold ``pad``.
    With ``keep_hidden``, returns ``(tokens, hidden)``: ``hidden`` [B, T, H] the model's final
    hidden states, ``hidden[:, t]`` the one that predicted ``tokens[:, t]`` (the sampling
    policy's states, which the trainer scores instead of a second forward)."""
    B, P = input_ids.shape
    dev = input_ids.device
    attn = torch.ones(B, P + max_new_tokens, dtype=attention_mask.dtype, device=dev)
    attn[:, :P] = attention_mask
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    logits, h = _forward(model, keep_hidden, input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=pos, past_key_values=cache, use_cache=True)
    nxt_pos = pos[:, -1:] + 1
    unfinished = torch.ones(B, dtype=torch.long, device=dev)
    tokens = torch.full((B, max_new_tokens), pad, dtype=torch.long, device=dev)
    hidden = []
    for t in range(max_new_tokens):
        hidden.append(h)
        y = draw(torch.softmax(logits.float() / temperature, dim=-1), generator)
        y = y * unfinished + pad * (1 - unfinished)
        tokens[:, t] = y
        unfinished = unfinished & (y != eos).long()
        if t == max_new_tokens - 1 or int(unfinished.max()) == 0:
            break
        logits, h = _forward(model, keep_hidden, input_ids=y[:, None], attention_mask=attn[:, :P + t + 1],
                             position_ids=nxt_pos, past_key_values=cache, use_cache=True)
        nxt_pos = nxt_pos + 1
    tokens = tokens[:, :len(hidden)]
    return (tokens, torch.stack(hidden, 1)) if keep_hidden else tokens


def sample(model, tokenizer, prompt_ids: list[list[int]], params: SamplingParams,
           keep_hidden: bool = False) -> list[dict]:
    """``params.n`` sampled responses per prompt (token ids, already chat-templated), as
    ``opd.generation.hf.generate`` returns them: one row per (prompt, sample), prompt-major.
    ``keep_hidden``: each row also holds ``hidden`` [len(response_ids), H], the final hidden
    states that predicted its response tokens (``sample_batch``)."""
    if params.temperature <= 0 or params.top_p != 1.0:
        raise ValueError("the rollout sampler does plain temperature sampling: temperature > 0, top_p 1")
    jobs = [(i, s) for i in range(len(prompt_ids)) for s in range(params.n)]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    dev = next(model.parameters()).device
    generator = torch.Generator(device=dev).manual_seed(params.seed)
    vocab = model.get_output_embeddings().weight.shape[0]
    out: list[dict] = []
    for start in range(0, len(jobs), params.batch_size):
        chunk = jobs[start:start + params.batch_size]
        input_ids, attn = left_pad([prompt_ids[i] for i, _ in chunk], pad)
        width = input_ids.shape[1]
        threads = torch.get_num_threads()
        if len(chunk) * vocab < SINGLE_THREAD_LOGITS:
            torch.set_num_threads(1)
        try:
            gen = sample_batch(model, input_ids.to(dev), attn.to(dev), params.temperature,
                               params.max_new_tokens, eos, pad, generator, keep_hidden)
        finally:
            torch.set_num_threads(threads)
        gen, hidden = gen if keep_hidden else (gen, None)
        gen = gen.cpu()
        for row, (i, s) in enumerate(chunk):
            resp = gen[row].tolist()
            if eos in resp:
                resp, finish = resp[:resp.index(eos) + 1], "stop"
            else:
                while resp and resp[-1] == pad:
                    resp.pop()
                finish = "length"
            out.append(make_row(tokenizer, i, s, prompt_ids[i], resp, finish))
            if keep_hidden:
                out[-1]["hidden"] = hidden[row, :len(resp)]
    return out


def rollout_hidden(samples: list[dict], R: int):
    """The sampler's hidden states of ``samples`` (rows with ``hidden`` [n_i, H]) as one
    [B, R, H] tensor, zero after each response; None when the rows carry none."""
    if not samples or "hidden" not in samples[0]:
        return None
    h = samples[0]["hidden"]
    out = h.new_zeros((len(samples), R, h.shape[-1]))
    for i, s in enumerate(samples):
        out[i, :len(s["hidden"])] = s["hidden"]
    return out
