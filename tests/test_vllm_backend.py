"""The vLLM generation backend: ``opd.generation.vllm.worker`` driven by ``opd.generation.vllm.client``.

Needs ``.venv-vllm/bin/python`` (``make env-vllm``); skipped without it, except the check that a
missing python names that target. One worker (one engine start, eager mode, about 30-60 s on 2
CPU cores) serves the whole module, on a tiny random Qwen3 model saved to a temp dir. Its head
size is 32: vLLM's CPU attention takes only 32, 64, 80, 96, ..., not the 16/24 of conftest's
``tiny_models``. It is trained for 150 steps (a few seconds) so that its outputs are varied
but not flat: on a fresh model's flat logits, float noise between vLLM's and transformers'
kernels can flip greedy near-ties.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from opd.generation.vllm.client import VLLMWorker, VLLMWorkerError
from opd.generation.config import SamplingParams
from opd.generation.hf import encode_prompts, generate

ROOT = Path(__file__).resolve().parents[1]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
needs_vllm = pytest.mark.skipif(not VLLM_PY.exists(),
                                reason="vLLM env missing: run `make env-vllm` to build .venv-vllm")
MAX_NEW = 40


@pytest.fixture(scope="module")
def tiny_vllm_model(tiny_tokenizer, tiny_problems, tmp_path_factory):
    """(model, model dir): a tiny Qwen3 with head_dim 32, briefly trained, as a Hugging Face dir."""
    from opd.checkpoint import save_hf
    from opd.sft.native import SFTConfig, encode_examples, train_sft
    from opd.world.models import ModelSpec, init_model
    model = init_model(ModelSpec(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                 intermediate_size=128), tiny_tokenizer, seed=3)
    cfg = SFTConfig(lr=3e-3, steps=150, epochs=None, batch_size=16, max_len=128, seed=0)
    pre = tiny_problems["pretrain"]
    train_sft(model, encode_examples(tiny_tokenizer, [[{"role": "user", "content": p.prompt}] for p in pre],
                                     [p.solution for p in pre], cfg.max_len), cfg, tiny_tokenizer.pad_token_id)
    model.eval()
    path = tmp_path_factory.mktemp("vllm") / "model"
    save_hf(model, tiny_tokenizer, path)
    return model, path


@pytest.fixture(scope="module")
def worker(tiny_vllm_model):
    if not VLLM_PY.exists():
        pytest.skip("vLLM env missing: run `make env-vllm` to build .venv-vllm")
    with VLLMWorker(VLLM_PY, tiny_vllm_model[1], enforce_eager=True, max_model_len=256) as w:
        yield w


@pytest.fixture(scope="module")
def chats(tiny_problems):
    return [[{"role": "user", "content": p.prompt}] for p in tiny_problems["eval"]]


def test_missing_python_names_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="make env-vllm"):
        VLLMWorker(tmp_path / "no-venv" / "bin" / "python", tmp_path)


@needs_vllm
def test_greedy_matches_hf(worker, tiny_vllm_model, tiny_tokenizer, chats):
    tok = tiny_tokenizer
    hf = generate(tiny_vllm_model[0], tok, chats, SamplingParams(n=1, temperature=0, max_new_tokens=MAX_NEW),
                  show_progress=False)
    out = worker.generate(encode_prompts(tok, chats), n=1, temperature=0, max_new_tokens=MAX_NEW,
                          stop_token_ids=[tok.eos_token_id])
    assert [o[0]["token_ids"] for o in out] == [r["response_ids"] for r in hf]
    assert [o[0]["finish_reason"] for o in out] == [r["finish_reason"] for r in hf]
    assert {r["finish_reason"] for r in hf} == {"stop", "length"}  # both paths compared


@needs_vllm
def test_samples_per_prompt_and_seed(worker, tiny_tokenizer, chats):
    ids = encode_prompts(tiny_tokenizer, chats)
    kw = dict(n=3, temperature=1.0, top_p=0.95, max_new_tokens=MAX_NEW, seed=7)
    a = worker.generate(ids, **kw)
    assert len(a) == len(ids) and all(len(samples) == 3 for samples in a)
    assert worker.generate(ids, **kw) == a
    assert worker.generate(ids[2:4], **{**kw, "seed": 9}) == a[2:4]  # prompt i uses seed + i
    assert worker.generate(ids, **{**kw, "seed": 8}) != a
    assert len({tuple(s["token_ids"]) for samples in a for s in samples}) > len(ids)


@needs_vllm
def test_length_and_stop_token(worker, tiny_tokenizer, chats):
    ids = encode_prompts(tiny_tokenizer, chats[:1])
    [[free]] = worker.generate(ids, n=1, temperature=0, max_new_tokens=MAX_NEW, logprobs=1)
    assert free["finish_reason"] == "length" and len(free["token_ids"]) == MAX_NEW
    assert len(free.pop("logprobs")) == MAX_NEW
    stop = free["token_ids"][MAX_NEW // 2]
    cut = free["token_ids"].index(stop) + 1
    [[stopped]] = worker.generate(ids, n=1, temperature=0, max_new_tokens=MAX_NEW, stop_token_ids=[stop])
    assert stopped == {"token_ids": free["token_ids"][:cut], "finish_reason": "stop"}
    assert stopped["token_ids"][-1] == stop  # the stop token is kept, as in the hf backend


@needs_vllm
def test_bad_request_reports_and_worker_goes_on(worker):
    with pytest.raises(VLLMWorkerError, match="out of range"):
        worker.generate([[10**6]], n=1, max_new_tokens=2)
    assert len(worker.generate([[1, 2, 3]], n=1, temperature=0, max_new_tokens=2)[0][0]["token_ids"]) <= 2
