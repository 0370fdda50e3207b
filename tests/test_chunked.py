"""Chunked OPD path (opd.objectives.chunked) vs the full-logits reference.

Run: .venv/bin/pytest tests/test_chunked.py -q
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from opd.objectives import (ADV_ESTIMATORS, LOSS_AGG_MODES, POLICY_LOSSES, STRATEGIES, OPDConfig, agg_loss,
                            low_var_kl, mechanism_metrics, policy_loss_backward, score_tokens,
                            token_mechanism_stats, topk_rewards)

B, L, H, HT, V = 3, 6, 8, 5, 20
DT = torch.float64


class Tiny(nn.Module):
    """hidden = tanh(Linear(emb[inp])); the LM head may be tied to ``emb``."""

    def __init__(self, tied: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Parameter(torch.randn(V, H, generator=g, dtype=DT))
        self.lin = nn.Linear(H, H, dtype=DT)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(H, H, generator=g, dtype=DT))
            self.lin.bias.copy_(torch.randn(H, generator=g, dtype=DT) * 0.1)
        self.head = self.emb if tied else nn.Parameter(torch.randn(V, H, generator=g, dtype=DT))

    def forward(self, inp):
        return torch.tanh(self.lin(self.emb[inp])) * 3


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    inp = torch.randint(0, V, (B, L), generator=g)
    tokens = torch.randint(0, V, (B, L), generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    th = torch.randn(B, L, HT, generator=g, dtype=DT) * 2
    thead = torch.randn(V, HT, generator=g, dtype=DT)
    ref = torch.randn(B, L, generator=g, dtype=DT) - 2
    return inp, tokens, mask, th, thead, ref


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("top_k", [0, 3])
def test_score_tokens_matches_topk_rewards(strategy, top_k):
    model = Tiny(tied=False)
    inp, tokens, mask, th, thead, _ = setup()
    cfg = OPDConfig(top_k=top_k, strategy=strategy, weight_mode="teacher_p",
                    student_temperature=0.7, teacher_temperature=1.3, metrics_k=4)
    with torch.no_grad():
        hs = model(inp)
        zs, zt = hs @ model.head.T, th @ thead.T
    ref = topk_rewards(zs, zt, top_k, strategy, "teacher_p", 0.7, 1.3, tokens=tokens)
    S, T = torch.log_softmax(zs / 0.7, -1), torch.log_softmax(zt / 1.3, -1)
    full_stats = token_mechanism_stats(S, T, top_k or 4)
    m = mask.bool()
    for cs in (1, 3, 1000):
        sc = score_tokens(hs, model.head, th, thead, tokens, mask, cfg, cs)
        assert sc.ids.shape == ref.ids.shape
        assert torch.equal(sc.ids[m], ref.ids[m]) and torch.equal(sc.valid[m], ref.valid[m])
        torch.testing.assert_close(sc.rewards[m], ref.rewards[m], rtol=1e-10, atol=1e-12)
        old = torch.where(ref.valid, S.gather(-1, ref.ids), torch.zeros_like(ref.rewards))
        torch.testing.assert_close(sc.old_logp[m], old[m])
        torch.testing.assert_close(sc.token_logp[m], S.gather(-1, tokens[..., None])[..., 0][m])
        assert torch.all(sc.ids[~m] == 0) and not sc.valid[~m].any() and torch.all(sc.rewards[~m] == 0)
        for k, v in full_stats.items():
            torch.testing.assert_close(sc.stats[k][m], v[m].float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sc.stats["reward"][m], ref.rewards.sum(-1)[m].float())
    assert set(mechanism_metrics(sc.stats, mask)) >= {"opd/overlap_ratio", "opd/reward_mean",
                                                       "opd/teacher_entropy", "opd/overlap_ratio_bucket6"}


def test_score_tokens_without_teacher():
    model = Tiny(tied=True)
    inp, tokens, mask, *_ = setup()
    cfg = OPDConfig(top_k=0, adv_estimator="grpo")
    hs = model(inp).detach()
    sc = score_tokens(hs, model.head, None, None, tokens, mask, cfg, 4)
    m = mask.bool()
    assert sc.ids.shape == (B, L, 1) and torch.equal(sc.valid[..., 0], m)
    assert torch.equal(sc.ids[..., 0][m], tokens[m]) and torch.all(sc.rewards == 0)
    assert set(sc.stats) == {"student_entropy"}
    S = torch.log_softmax(hs @ model.head.T, -1)
    torch.testing.assert_close(sc.old_logp[..., 0][m], S.gather(-1, tokens[..., None])[..., 0][m])


def _grads(model, extra):
    return [p.grad.clone() for p in model.parameters()] + [extra.grad.clone()]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("use_kl", [False, True])
def test_policy_loss_backward_matches_reference(strategy, use_kl):
    for tied, agg, top_k in [(False, "token-mean", 3), (True, "seq-mean-token-mean", 3),
                             (False, "seq-mean-token-sum-norm", 0)]:
        _check_backward(strategy, use_kl, tied, agg, top_k)


@pytest.mark.parametrize("agg", LOSS_AGG_MODES)
def test_policy_loss_backward_agg_modes(agg):
    _check_backward("union", True, True, agg, 2)


def _check_backward(strategy, use_kl, tied, agg, top_k):
    model = Tiny(tied=tied)
    inp, tokens, mask, th, thead, ref_logp = setup()
    cfg = OPDConfig(top_k=top_k, strategy=strategy, weight_mode="student_p", student_temperature=0.7,
                    teacher_temperature=1.3, adv_estimator="token_reward_direct_plus_grpo",
                    loss_agg_mode=agg, use_kl_loss=use_kl, kl_loss_coef=0.3, clip_ratio_c=1.5)
    scale = torch.ones(B, L, H, dtype=DT, requires_grad=True)   # a leaf in front of the model output
    with torch.no_grad():
        scored = score_tokens(model(inp), model.head, th, thead, tokens, mask, cfg, 4)
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():                              # move the policy: ratios != 1
            p.add_(torch.randn(p.shape, generator=g, dtype=DT) * 0.1)
    outcome = torch.tensor([1.0, 0.0, 1.0])
    adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(scored.rewards * 20, scored.valid, mask, outcome,
                                                torch.tensor([0, 0, 1]), cfg)

    model.zero_grad()
    hs = model(inp) * scale
    S = torch.log_softmax(hs @ model.head.T / 0.7, -1)
    loss, ref_stats = POLICY_LOSSES.get("vanilla")(S.gather(-1, scored.ids), scored.old_logp, adv,
                                                   scored.valid, mask, cfg)
    if use_kl:
        kl = agg_loss(low_var_kl(S.gather(-1, tokens[..., None])[..., 0], ref_logp), mask, agg)
        loss = loss + cfg.kl_loss_coef * kl
    loss.backward()
    want = _grads(model, scale)
    assert ref_stats["clipfrac"] > 0

    for cs in (1, 3, 1000):
        model.zero_grad()
        scale.grad = None
        hs = model(inp) * scale
        st = policy_loss_backward(hs, model.head, tokens, mask, scored, adv, cfg, cs,
                                  ref_logp=ref_logp if use_kl else None, loss_scale=0.5)
        assert st["loss"] == pytest.approx(loss.item(), rel=1e-9, abs=1e-12)
        assert st["clipfrac"] == pytest.approx(ref_stats["clipfrac"])
        assert st["ppo_kl"] == pytest.approx(ref_stats["ppo_kl"])
        for g, w in zip(_grads(model, scale), want):
            torch.testing.assert_close(g, 0.5 * w, rtol=1e-9, atol=1e-12)


def test_policy_loss_backward_float32_and_errors():
    model = Tiny(tied=False).float()
    inp, tokens, mask, th, thead, ref_logp = setup()
    cfg = OPDConfig(top_k=4, strategy="only_tch", use_kl_loss=True, kl_loss_coef=0.1)
    with torch.no_grad():
        scored = score_tokens(model(inp), model.head, th.float(), thead.float(), tokens, mask, cfg, 2)
    assert scored.rewards.dtype == torch.float32
    adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(scored.rewards, scored.valid, mask, None, None, cfg)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss_backward(model(inp), model.head, tokens, mask, scored, adv, cfg, 2)
    model.zero_grad()
    st = policy_loss_backward(model(inp), model.head, tokens, mask, scored, adv, cfg, 2, ref_logp=ref_logp.float())
    assert st["clipfrac"] == 0 and st["ppo_kl"] == pytest.approx(0, abs=1e-6)   # on-policy: ratio 1
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # empty response mask: no NaN, zero gradients
    model.zero_grad()
    z = torch.zeros_like(mask)
    sc0 = score_tokens(model(inp).detach(), model.head, th.float(), thead.float(), tokens, z, cfg, 2)
    st0 = policy_loss_backward(model(inp), model.head, tokens, z, sc0, torch.zeros_like(sc0.rewards), cfg, 2,
                               ref_logp=ref_logp.float())
    assert st0["loss"] == 0 and st0["n_tokens"] == 0 and "clipfrac" in st0
    assert all(torch.all(p.grad == 0) for p in model.parameters() if p.grad is not None)


def test_chunked_paths_keep_no_graph_through_the_logits():
    """The logits are outside autograd: nothing returned requires grad (a graph through them would
    keep every chunk's [C, V] logits alive until the end of the batch, as ``gather`` saves its input)."""
    from opd.objectives.single_forward import estimator_fn, score_and_backward
    model = Tiny(tied=True)
    inp, tokens, mask, th, thead, _ = setup()
    cfg = OPDConfig(top_k=3, strategy="union", chunk_size=2)
    fn = estimator_fn(ADV_ESTIMATORS.get(cfg.adv_estimator), None, None, cfg)
    sc, adv, _ = score_and_backward(model(inp), model.head, th, thead, tokens, mask, fn, cfg)
    assert not any(t.requires_grad for t in (sc.rewards, sc.old_logp, sc.token_logp, adv, *sc.stats.values()))
    assert model.head.grad is not None and model.head.grad.abs().sum() > 0
