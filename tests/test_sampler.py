"""The trainer's rollout sampler: the model calls of transformers ``generate`` (the same tokens
with the same random draw), ``draw``'s frequencies match the probabilities, eos ends rows.

Run: .venv/bin/pytest tests/test_sampler.py -q
"""
from __future__ import annotations

import copy

import pytest
import torch

from opd.generation.config import SamplingParams
from opd.generation.hf import encode_prompts, generate
from opd.train.sampler import draw, sample


def _prompts(tiny_problems, n=6):
    return [[{"role": "user", "content": p.prompt}] for p in tiny_problems["train"][:n]]


@pytest.mark.parametrize("temperature,batch_size", [(0.7, 1024), (1.3, 5)])
def test_sampler_makes_generates_model_calls(tiny_models, tiny_tokenizer, tiny_problems, monkeypatch,
                                             temperature, batch_size):
    """With ``draw`` swapped for ``generate``'s own draw (``torch.multinomial`` on the global RNG,
    seeded alike), the sampler must walk exactly ``generate``'s tokens: the same cache, masks,
    positions, temperature and stopping, on varied samples."""
    import opd.train.sampler as sampler

    monkeypatch.setattr(sampler, "draw", lambda probs, generator: torch.multinomial(probs, 1).squeeze(1))
    model = tiny_models[0].eval()
    prompts = _prompts(tiny_problems)
    params = SamplingParams(n=2, temperature=temperature, top_p=1.0, max_new_tokens=12, seed=11,
                            batch_size=batch_size)
    want = generate(model, tiny_tokenizer, prompts, params, show_progress=False)
    torch.manual_seed(params.seed)
    got = sample(model, tiny_tokenizer, encode_prompts(tiny_tokenizer, prompts), params)
    assert got == want
    assert len({tuple(r["response_ids"]) for r in got}) > 1


def test_sampler_is_seeded_and_varied(tiny_models, tiny_tokenizer, tiny_problems):
    model = tiny_models[0].eval()
    ids = encode_prompts(tiny_tokenizer, _prompts(tiny_problems, 3))
    params = SamplingParams(n=4, temperature=0.7, top_p=1.0, max_new_tokens=8, seed=3)
    a, b = sample(model, tiny_tokenizer, ids, params), sample(model, tiny_tokenizer, ids, params)
    c = sample(model, tiny_tokenizer, ids, SamplingParams(n=4, temperature=0.7, top_p=1.0, max_new_tokens=8, seed=4))
    assert a == b and a != c
    assert len({tuple(r["response_ids"]) for r in a}) == len(a)      # 12 different samples


def test_draw_frequencies_match_probabilities():
    probs = torch.tensor([[0.5, 0.25, 0.0, 0.25], [0.0, 0.0, 1.0, 0.0], [1.0, 3.0, 0.0, 0.0],
                          [0.1, 0.2, 0.3, 0.4]])
    n = 40_000
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4, 4)
    for _ in range(n // 1000):
        y = draw(probs.repeat(1000, 1), g).view(1000, 4)
        counts += torch.nn.functional.one_hot(y, 4).sum(0).float()
    p = probs / probs.sum(-1, keepdim=True)
    sigma = (p * (1 - p) / n).sqrt()
    assert torch.all((counts / n - p).abs() <= 5 * sigma + 1e-12)
    assert torch.all(counts[p == 0] == 0)                    # a zero-probability token never comes
    u_max = torch.tensor([[0.0, 0.3, 0.7, 0.0]])             # trailing zeros: never past the last mass
    assert draw(u_max.repeat(5000, 1)).max() <= 2


def test_sampler_stops_at_eos_and_pads(tiny_models, tiny_tokenizer, tiny_problems):
    """With eos made near-certain (a forward hook adds 50 to its logit), every row stops after
    one token with reason "stop"; the loop ends there instead of running to max_new_tokens."""
    model = copy.deepcopy(tiny_models[0]).eval()
    eos = tiny_tokenizer.eos_token_id
    calls = []

    def boost(module, args, out):
        calls.append(1)
        out.logits[..., eos] += 50.0
        return out
    model.register_forward_hook(boost)
    params = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=5, seed=0)
    rows = sample(model, tiny_tokenizer, encode_prompts(tiny_tokenizer, _prompts(tiny_problems, 3)), params)
    assert len(rows) == 6 and len(calls) == 1
    assert all(r["response_ids"] == [eos] and r["finish_reason"] == "stop" for r in rows)
    with pytest.raises(ValueError, match="top_p 1"):
        sample(model, tiny_tokenizer, [[1, 2]], SamplingParams(temperature=1.0, top_p=0.9))


def test_kept_hidden_states_are_a_scoring_forwards(tiny_models, tiny_tokenizer, tiny_problems):
    """``keep_hidden`` draws the same tokens, and each row's states are those a full forward of
    prompt + response gives at the positions that predict its tokens (the trainer scores them
    in place of that forward), up to float rounding; ``rollout_hidden`` pads them to [B, R, H]."""
    from opd.train.native import response_batch, response_hidden
    from opd.train.sampler import rollout_hidden

    model = tiny_models[0].eval()
    ids = encode_prompts(tiny_tokenizer, _prompts(tiny_problems))
    params = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=3, batch_size=5)
    plain = sample(model, tiny_tokenizer, ids, params)
    kept = sample(model, tiny_tokenizer, ids, params, keep_hidden=True)
    assert [r["response_ids"] for r in kept] == [r["response_ids"] for r in plain]
    assert all(r["hidden"].shape == (len(r["response_ids"]), model.config.hidden_size) for r in kept)
    input_ids, attn, pos, P, tokens, mask = response_batch(kept, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        want = response_hidden(model, input_ids, attn, pos, P, tokens.shape[1])
    got = rollout_hidden(kept, tokens.shape[1])
    assert got.shape == want.shape
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-4, atol=1e-5)
    assert (got[~mask] == 0).all() and rollout_hidden(plain, tokens.shape[1]) is None
