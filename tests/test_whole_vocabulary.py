"""The head at k near the vocabulary (``top_k: V``, the exact reverse KL): the sorted membership
test and the scatter sum of repeated ids give what the pairwise forms give, and the chunked
objective at k = V is the reverse KL and back-propagates as autograd does.

Run: .venv/bin/pytest tests/test_whole_vocabulary.py -q
"""
from __future__ import annotations

import pytest
import torch

from opd.objectives import OPDConfig, score_tokens
from opd.objectives import topk
from opd.objectives.logprobs import sum_repeated
from test_chunked import V, Tiny, _check_backward, setup


def test_isin_rows_sorted_path_by_hand(monkeypatch):
    monkeypatch.setattr(topk, "PAIRWISE_MAX", 0)
    a = torch.tensor([[3, 1, 7, 9], [0, 0, 2, 5]])
    b = torch.tensor([[7, 3, 9], [5, 2, 2]])
    member = torch.tensor([[True, False, True], [False, True, False]])
    # row 0: 3 is in b but not a member; row 1: 2 is a member through its first copy only
    want = torch.tensor([[False, False, True, True], [False, False, True, False]])
    assert torch.equal(topk.isin_rows(a, b, member), want)


@pytest.mark.parametrize("shape", [(50, 384, 384), (4, 7, 33, 40), (3, 0, 5)])
def test_isin_rows_sorted_path_equals_pairwise(monkeypatch, shape):
    *lead, Ma, Mb = shape
    g = torch.Generator().manual_seed(Ma + Mb)
    a = torch.randint(0, 60, (*lead, Ma), generator=g)         # few values: many repeats and hits
    b = torch.randint(0, 60, (*lead, Mb), generator=g)
    member = torch.rand(*lead, Mb, generator=g) < 0.7
    monkeypatch.setattr(topk, "PAIRWISE_MAX", float("inf"))
    want = topk.isin_rows(a, b, member)
    monkeypatch.setattr(topk, "PAIRWISE_MAX", 0)
    got = topk.isin_rows(a, b, member)
    assert torch.equal(got, want) and (Ma * Mb == 0 or 0 < int(want.sum()) < want.numel())


def test_sum_repeated_by_hand():
    ids = torch.tensor([[2, 5, 2, 1], [0, 0, 0, 3]])
    g = torch.tensor([[1.0, 2.0, 4.0, 8.0], [1.0, 2.0, 4.0, 8.0]])
    want = torch.tensor([[5.0, 2.0, 5.0, 8.0], [7.0, 7.0, 7.0, 8.0]])
    for pairwise in (True, False, None):
        assert torch.equal(sum_repeated(ids, g, 6, pairwise), want)


def test_whole_vocabulary_rewards_are_the_reverse_kl():
    """top_k = V, only_stu, student_p, no tail bucket: sum_c r_c = -sum_v p_v (S_v - T_v)."""
    model = Tiny(tied=False)
    inp, tokens, mask, th, thead, _ = setup()
    cfg = OPDConfig(top_k=V, strategy="only_stu", weight_mode="student_p", tail_bucket=False)
    with torch.no_grad():
        hs = model(inp)
        S, T = torch.log_softmax(hs @ model.head.T, -1), torch.log_softmax(th @ thead.T, -1)
        sc = score_tokens(hs, model.head, th, thead, tokens, mask, cfg, 4)
    kl = (S.exp() * (S - T)).sum(-1)
    m = mask.bool()
    assert bool(sc.valid[m].all())
    torch.testing.assert_close(-sc.rewards.sum(-1)[m], kl[m], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("strategy", ["only_stu", "union", "intersection"])
def test_whole_vocabulary_backward_matches_autograd(monkeypatch, strategy):
    """The chunked backward at k = V (scatter sum of the union's repeated ids) and the sorted
    membership path against autograd through the full log-softmax (test_chunked's reference)."""
    monkeypatch.setattr(topk, "PAIRWISE_MAX", 0)
    _check_backward(strategy, False, False, "token-mean", V)
