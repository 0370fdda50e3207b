"""The Triton kernels of the chunked head (opd.objectives.triton_head), run on the CPU through
Triton's interpreter (``TRITON_INTERPRET=1``), against float64 references; and the chunked
paths with ``OPD_HEAD_KERNELS=triton`` against the torch backend.

Run: .venv/bin/pytest tests/test_triton_head.py -q   (skips without the ``triton`` package)
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("triton was imported without TRITON_INTERPRET=1; run this file on its own",
                allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="the triton package is needed (pyproject's test extra)")

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # 0 * -inf, masked

from opd.objectives import (ADV_ESTIMATORS, OPDConfig, policy_loss_backward,  # noqa: E402
                            score_tokens)
from opd.objectives import triton_head as th  # noqa: E402
from opd.objectives.logprobs import ChunkLogProbs  # noqa: E402
from opd.objectives.single_forward import estimator_fn, score_and_backward  # noqa: E402


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 and segments of at least 128 columns, so a row of a few hundred spans several."""
    monkeypatch.setattr(th, "BLOCK", 64)
    monkeypatch.setattr(th, "SEGMENT", 128)


def reference_topk(x: torch.Tensor, k: int):
    """Top-k by value descending, ties by id ascending (a stable sort of the whole row)."""
    order = torch.sort(x, dim=-1, descending=True, stable=True).indices[:, :k]
    return x.gather(-1, order), order


def logits(C, V, seed, dtype=torch.float32, ties=False):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(C, V, generator=g) * 3
    if ties:
        z = z.round()                      # few distinct values: ties at every top-k boundary
    z[0, ::7] = float("-inf")              # a masked vocabulary
    z[1, :] = float("-inf")
    z[1, 5] = 2.0                          # one finite logit: fewer than k members
    return z.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ties", [False, True])
def test_row_stats_match_float64(small_blocks, dtype, ties):
    C, V, k, temp = 6, 700, 8, 0.7
    z = logits(C, V, 1, dtype, ties)
    z[2, :] = float("-inf")                # a row of all -inf: lse -inf, entropy 0
    lse, ent, val, ids = th.row_stats(z, temp, k)
    one = th.row_stats(z, temp, k, n_seg=1)                   # one program per row: the same
    assert torch.equal(one[3], ids)
    torch.testing.assert_close(one[0], lse)
    x = z.double() / temp
    S = torch.log_softmax(x, -1)
    ok = torch.ones(C, dtype=torch.bool)
    ok[2] = False
    torch.testing.assert_close(lse[ok].double(), torch.logsumexp(x, -1)[ok], rtol=1e-5, atol=1e-5)
    h = torch.special.entr(S.exp()).sum(-1)
    torch.testing.assert_close(ent[ok].double(), h[ok], rtol=1e-4, atol=1e-5)
    assert lse[2] == float("-inf") and ent[2] == 0
    want_val, want_ids = reference_topk(S, k)
    finite = torch.isfinite(want_val)
    assert torch.equal(ids[finite], want_ids[finite])                 # the same ids, ties included
    torch.testing.assert_close(val[finite].double(), want_val[finite], rtol=1e-5, atol=1e-5)
    assert not torch.isfinite(val[~finite]).any() and (ids >= 0).all() and (ids < V).all()


def test_row_stats_without_topk(small_blocks):
    z = logits(3, 300, 2)
    lse, ent, val, ids = th.row_stats(z, 1.0, 0)
    torch.testing.assert_close(lse[[0, 2]], torch.logsumexp(z.double(), -1)[[0, 2]].float())
    assert val.shape == (3, 0) and ids.shape == (3, 0)
    with pytest.raises(ValueError, match="top-400"):
        th.row_stats(z, 1.0, 400)


@pytest.mark.parametrize("out", [torch.float32, torch.bfloat16])
def test_softmax_grad_matches_autograd(small_blocks, out):
    """ChunkLogProbs.softmax_grad (Triton dense part + sparse ids, repeated ids included) against
    float64 autograd of log_softmax."""
    C, V, temp = 5, 333, 1.3
    z = logits(C, V, 3)
    z[1] = torch.randn(V)
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, V, (C, 6), generator=g)
    ids[:, 5] = ids[:, 0]                                  # a repeated id: its g adds up
    w = torch.randn(C, 6, generator=g, dtype=torch.float64)
    w = torch.where(torch.isfinite(z.gather(-1, ids)), w, torch.zeros_like(w))   # as the loss masks them
    zr = z.double().requires_grad_(True)
    S = torch.log_softmax(zr / temp, -1).gather(-1, ids)
    torch.where(w != 0, S * w, torch.zeros_like(w)).sum().backward()
    os.environ["OPD_HEAD_KERNELS"] = "triton"
    try:
        S = ChunkLogProbs(z, temp, torch.float32, 4)
        assert S.backend == "triton"
        G = S.softmax_grad(ids, w.float(), out)
    finally:
        del os.environ["OPD_HEAD_KERNELS"]
    assert G.dtype == out
    tol = 1e-5 if out == torch.float32 else 1e-2
    rows = torch.isfinite(zr.grad).all(-1)
    torch.testing.assert_close(G.double()[rows], zr.grad[rows], rtol=tol, atol=tol)


# ------------------------------------------------------------------ the chunked paths, both backends
B, L, H, V = 3, 7, 16, 300


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(B, L, H, generator=g) * 2
    head = torch.randn(V, H, generator=g) * 0.5
    ht = torch.randn(B, L, H, generator=g) * 2
    thead = torch.randn(V, H, generator=g) * 0.5
    tokens = torch.randint(0, V, (B, L), generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    return hs, head, ht, thead, tokens, mask


def _run(kind, cfg, backend):
    os.environ["OPD_HEAD_KERNELS"] = backend
    try:
        hs, head, ht, thead, tokens, mask = _inputs()
        hs.requires_grad_(True)
        head.requires_grad_(True)
        if kind == "single":
            fn = estimator_fn(ADV_ESTIMATORS.get(cfg.adv_estimator), None, None, cfg)
            sc, adv, st = score_and_backward(hs, head, ht, thead, tokens, mask, fn, cfg, 5)
        else:
            sc = score_tokens(hs.detach(), head.detach(), ht, thead, tokens, mask, cfg, 5)
            adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(sc.rewards, sc.valid, mask, None, None, cfg)
            st = policy_loss_backward(hs, head, tokens, mask, sc, adv, cfg, 5)
        return sc, st, hs.grad, head.grad, mask.bool()
    finally:
        del os.environ["OPD_HEAD_KERNELS"]


@pytest.mark.parametrize("kind", ["single", "two"])
@pytest.mark.parametrize("objective", [dict(top_k=4, strategy="union", weight_mode="teacher_p"),
                                       dict(top_k=0, metrics_k=4),
                                       dict(top_k=4, strategy="only_stu", tail_bucket=True,
                                            student_temperature=0.8, teacher_temperature=1.2)])
def test_triton_path_equals_torch_path(small_blocks, kind, objective):
    cfg = OPDConfig(chunk_size=5, **objective)
    want = _run(kind, cfg, "torch")
    got = _run(kind, cfg, "triton")
    (sc_w, st_w, gh_w, gW_w, m), (sc_g, st_g, gh_g, gW_g, _) = want, got
    assert torch.equal(sc_g.ids[m], sc_w.ids[m]) and torch.equal(sc_g.valid[m], sc_w.valid[m])
    for a, b in ((sc_g.rewards, sc_w.rewards), (sc_g.old_logp, sc_w.old_logp), (sc_g.token_logp, sc_w.token_logp)):
        torch.testing.assert_close(a[m], b[m], rtol=1e-4, atol=1e-5)
    assert set(sc_g.stats) == set(sc_w.stats)
    for k in sc_w.stats:
        torch.testing.assert_close(sc_g.stats[k][m], sc_w.stats[k][m], rtol=1e-4, atol=1e-5, msg=k)
    assert st_g.keys() == st_w.keys()
    for k in st_w:
        assert st_g[k] == pytest.approx(st_w[k], rel=1e-4, abs=1e-6), k
    torch.testing.assert_close(gh_g, gh_w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gW_g, gW_w, rtol=1e-4, atol=1e-6)
    assert gW_w.abs().sum() > 0
