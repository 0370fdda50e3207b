"""Tests for opd.objectives: top-k rewards vs an independent float64 reference, registries,
config validation, advantage estimators, policy losses / aggregation, mechanism metrics.

Run: .venv/bin/pytest tests/test_objectives.py -q
"""
from __future__ import annotations

import math

import pytest
import torch

from opd.objectives import (ADV_ESTIMATORS, LOSS_AGG_MODES, POLICY_LOSSES, STRATEGIES, WEIGHT_MODES,
                            OPDConfig, Registry, agg_loss, low_var_kl, mechanism_metrics,
                            token_mechanism_stats, token_weights, topk_details, topk_rewards,
                            vanilla_token_loss)

NEG_INF = float("-inf")
FLOOR = math.log(2.0 ** -126)          # log of the smallest normal float32, derived independently


# ----------------------------------------------------------------------------- reference
def ref_log_softmax(row: list[float], temp: float) -> list[float]:
    xs = [x / temp for x in row]
    finite = [x for x in xs if x != NEG_INF]
    if not finite:
        return [float("nan")] * len(xs)
    m = max(finite)
    lse = m + math.log(sum(math.exp(x - m) for x in finite))
    return [x - lse if x != NEG_INF else NEG_INF for x in xs]


def ref_top(lp: list[float], k: int) -> list[int]:
    return sorted(range(len(lp)), key=lambda i: -lp[i] if math.isfinite(lp[i]) else math.inf)[:k]


def ref_position(zs, zt, k, strategy, mode, ts, tt, y):
    """Straightforward float64 implementation of the definitions for one position."""
    S, T = ref_log_softmax(zs, ts), ref_log_softmax(zt, tt)
    tfl = lambda i: T[i] if (math.isfinite(T[i]) and T[i] > FLOOR) else FLOOR  # noqa: E731
    if k == 0:
        ok = math.isfinite(S[y])
        return [y], [ok], [1.0 if ok else 0.0], [-(S[y] - tfl(y)) if ok else 0.0]
    s_list, t_list = ref_top(S, k), ref_top(T, k)
    s_set = {i for i in s_list if math.isfinite(S[i])}
    t_set = {i for i in t_list if math.isfinite(T[i])}
    if strategy == "only_stu":
        cands, valid = s_list, [i in s_set for i in s_list]
    elif strategy == "only_tch":
        cands, valid = t_list, [i in t_set for i in t_list]
    elif strategy == "intersection":
        cands, valid = s_list, [i in s_set and i in t_set for i in s_list]
    elif strategy == "union":
        cands = s_list + t_list
        valid = [i in s_set for i in s_list] + [i in t_set and i not in s_set for i in t_list]
    else:
        cands = s_list + t_list
        valid = [i in s_set and i not in t_set for i in s_list] + [i in t_set and i not in s_set for i in t_list]
    valid = [v and math.isfinite(S[i]) for v, i in zip(valid, cands)]
    src = {"student_p": lambda i: S[i], "teacher_p": tfl, "none": lambda i: 0.0}[mode]
    if strategy == "union-intersection":
        w = [math.exp(src(i)) if v else 0.0 for i, v in zip(cands, valid)]
    else:
        z = sum(math.exp(src(i)) for i, v in zip(cands, valid) if v)
        w = [math.exp(src(i)) / z if v else 0.0 for i, v in zip(cands, valid)]
    r = [-(S[i] - tfl(i)) * wi if v else 0.0 for i, v, wi in zip(cands, valid, w)]
    return cands, valid, w, r


def make_logits(seed=0, B=3, L=4, V=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(B, L, V, generator=g, dtype=dtype) * 2
    zt = torch.randn(B, L, V, generator=g, dtype=dtype) * 2
    zs[torch.rand(B, L, V, generator=g) < 0.2] = NEG_INF
    zt[torch.rand(B, L, V, generator=g) < 0.2] = NEG_INF
    zs[0, 0, 2:] = NEG_INF                    # fewer than k finite student entries
    zt[0, 1, :6] = NEG_INF                    # disjoint supports -> empty intersection
    zs[0, 1, 6:] = NEG_INF
    zt[1, 0, :] = zt[1, 0, :].clamp(max=0)    # plain row
    y = torch.randint(0, V, (B, L), generator=g)
    y[0, 0] = 0                               # sampled token with finite student logit
    return zs, zt, y


CASES = [(k, s, w) for k in (4,) for s in STRATEGIES for w in WEIGHT_MODES] + [(0, "only_stu", "student_p")]


@pytest.mark.parametrize("k,strategy,mode", CASES)
def test_topk_matches_reference(k, strategy, mode):
    zs, zt, y = make_logits()
    compare_to_reference(zs, zt, y, k, strategy, mode, 0.7, 1.3)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", WEIGHT_MODES)
def test_topk_reference_padding_picks(strategy, mode):
    """Teacher has fewer than k finite tokens and its padding picks land in the student's top-k."""
    zs = torch.tensor([[[0.0, -0.5, -3.0, 2.0, 1.5], [0.3, NEG_INF, NEG_INF, NEG_INF, 1.0]]], dtype=torch.float64)
    zt = torch.tensor([[[1.0, 0.2, 0.5, NEG_INF, NEG_INF], [NEG_INF, 0.0, 2.0, 1.0, -1.0]]], dtype=torch.float64)
    y = torch.tensor([[3, 2]])
    compare_to_reference(zs, zt, y, 4, strategy, mode, 0.7, 1.3)


def compare_to_reference(zs, zt, y, k, strategy, mode, ts, tt):
    d = topk_details(torch.log_softmax(zs / ts, -1), torch.log_softmax(zt / tt, -1), k, strategy, mode, y)
    out = topk_rewards(zs, zt, k, strategy, mode, ts, tt, tokens=y)
    assert torch.equal(out.rewards, d.rewards) and torch.equal(out.valid, d.valid)
    M = {0: 1}.get(k, 2 * k if strategy in ("union", "union-intersection") else k)
    assert out.ids.shape == out.rewards.shape == out.valid.shape == (*zs.shape[:-1], M)
    assert out.rewards.dtype == torch.float64 and torch.isfinite(out.rewards).all()
    B, L, _ = zs.shape
    for b in range(B):
        for t in range(L):
            cands, valid, w, r = ref_position(zs[b, t].tolist(), zt[b, t].tolist(), k, strategy, mode,
                                              ts, tt, int(y[b, t]))
            assert out.valid[b, t].tolist() == valid, (b, t)
            got_ids = out.ids[b, t].tolist()
            assert [i for i, v in zip(got_ids, valid) if v] == [i for i, v in zip(cands, valid) if v]
            assert out.rewards[b, t].tolist() == pytest.approx(r, abs=1e-6)
            assert d.weights[b, t].tolist() == pytest.approx(w, abs=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_close_to_reference(strategy):
    zs, zt, y = make_logits(seed=3)
    out = topk_rewards(zs.float(), zt.float(), 4, strategy, "teacher_p", 0.7, 1.3, tokens=y)
    ref = topk_rewards(zs, zt, 4, strategy, "teacher_p", 0.7, 1.3, tokens=y)
    assert out.rewards.dtype == torch.float32
    assert torch.equal(out.valid, ref.valid)
    torch.testing.assert_close(out.rewards.double(), ref.rewards, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", WEIGHT_MODES)
def test_identical_models_zero_reward(strategy, mode):
    zs, _, y = make_logits(seed=1)
    for k in (0, 3):
        out = topk_rewards(zs, zs.clone(), k, strategy, mode, 0.8, 0.8, tokens=y)
        assert torch.all(out.rewards == 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", WEIGHT_MODES)
def test_weights(strategy, mode):
    zs, zt, y = make_logits(seed=2)
    d = topk_details(torch.log_softmax(zs, -1), torch.log_softmax(zt, -1), 4, strategy, mode)
    assert torch.all(d.weights[~d.valid] == 0)
    sums = d.weights.sum(-1)
    has = d.valid.any(-1)
    if strategy != "union-intersection":
        torch.testing.assert_close(sums[has], torch.ones_like(sums[has]))
    else:  # not renormalised: exp(source)
        src = {"student_p": d.student_logp, "teacher_p": d.teacher_logp,
               "none": torch.zeros_like(d.student_logp)}[mode]
        torch.testing.assert_close(d.weights, torch.where(d.valid, src.exp(), torch.zeros_like(src)))
    assert torch.all(sums[~has] == 0)


def test_no_nan_with_inf_rows_and_empty_intersection():
    V = 8
    zs = torch.randn(4, V)
    zt = torch.randn(4, V)
    zs[0] = NEG_INF                    # student all -inf (log_softmax NaN row)
    zt[1] = NEG_INF                    # teacher all -inf
    zs[2, 4:] = NEG_INF                # disjoint supports
    zt[2, :4] = NEG_INF
    zs[3, 1:] = NEG_INF                # a single finite student token
    y = torch.zeros(4, dtype=torch.long)
    for strategy in STRATEGIES:
        for mode in WEIGHT_MODES:
            for k in (0, 3, V):
                out = topk_rewards(zs, zt, k, strategy, mode, 0.5, 2.0, tokens=y)
                assert torch.isfinite(out.rewards).all(), (strategy, mode, k)
                assert not out.valid[0].any()
        out = topk_rewards(zs, zt, 3, "intersection", "student_p")
        assert not out.valid[2].any() and torch.all(out.rewards[2] == 0)
    st = token_mechanism_stats(torch.log_softmax(zs, -1), torch.log_softmax(zt, -1), 3)
    assert all(torch.isfinite(v).all() for v in st.values())
    # teacher -inf where the student is finite: the floor gives a finite, large penalty
    out = topk_rewards(zs[3:4], zt[3:4].fill_(0).index_fill_(-1, torch.tensor([0]), NEG_INF), 1,
                       "only_stu", "none")
    assert out.valid.all() and out.rewards.item() == pytest.approx(FLOOR, rel=1e-5)


def test_name_and_argument_errors():
    s = torch.randn(2, 5)
    with pytest.raises(ValueError, match="only_stu.*union-intersection"):
        topk_rewards(s, s, 2, "bogus", "none")
    with pytest.raises(ValueError, match="student_p, teacher_p, none"):
        topk_rewards(s, s, 2, "union", "bogus")
    with pytest.raises(ValueError, match="tokens"):
        topk_rewards(s, s, 0, "union", "none")
    with pytest.raises(ValueError, match="vocabulary"):
        topk_rewards(s, s, 6, "union", "none")


# ----------------------------------------------------------------------------- registries, config
def test_registry():
    reg = Registry("thing")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and reg.names() == ["a"] and "a" in reg
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)
    with pytest.raises(ValueError, match="valid: a"):
        reg.get("b")
    assert set(ADV_ESTIMATORS.names()) >= {"token_reward_direct", "grpo", "token_reward_direct_plus_grpo"}
    assert "vanilla" in POLICY_LOSSES.names()
    with pytest.raises(ValueError, match="vanilla"):
        POLICY_LOSSES.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        ADV_ESTIMATORS.register("grpo")(lambda *a: None)


def test_config_validation():
    cfg = OPDConfig()
    assert cfg.top_k == 16 and cfg.num_candidates == 16
    assert OPDConfig(strategy="union", top_k=3).num_candidates == 6
    assert OPDConfig(top_k=0).num_candidates == 1
    for kw, field in [({"strategy": "x"}, "strategy"), ({"weight_mode": "x"}, "weight_mode"),
                      ({"top_k": -1}, "top_k"), ({"loss_agg_mode": "x"}, "loss_agg_mode"),
                      ({"adv_estimator": "x"}, "adv_estimator"), ({"policy_loss": "x"}, "policy_loss"),
                      ({"clip_ratio_c": 1.0}, "clip_ratio_c"), ({"student_temperature": 0}, "student_temperature"),
                      ({"chunk_size": 0}, "chunk_size"), ({"kl_loss_type": "x"}, "kl_loss_type"),
                      ({"use_kl_loss": "yes"}, "use_kl_loss")]:
        with pytest.raises(ValueError, match=field):
            OPDConfig(**kw)
    with pytest.raises(ValueError, match="token-mean"):
        OPDConfig(loss_agg_mode="mean")
    c = OPDConfig.from_dict({"top_k": 4, "strategy": "union"})
    assert c.top_k == 4 and OPDConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="topk, zzz"):
        OPDConfig.from_dict({"topk": 3, "zzz": 1})


# ----------------------------------------------------------------------------- advantages
def test_advantage_estimators():
    cfg = OPDConfig(grpo_outcome_weight=0.5)
    rewards = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]).repeat(5, 1, 1)       # [5, 2, 2]
    valid = torch.tensor([[[True, False], [True, True]]]).repeat(5, 1, 1)
    mask = torch.tensor([[1, 0]] * 5)
    outcome = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.7])
    gids = torch.tensor([7, 7, 3, 3, 9])

    direct = ADV_ESTIMATORS.get("token_reward_direct")(rewards, valid, mask, None, None, cfg)
    assert direct[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]

    g = ADV_ESTIMATORS.get("grpo")(rewards, valid, mask, outcome, gids, cfg)
    a0 = 0.5 / (math.sqrt(0.5) + 1e-6)          # group {1, 0}: mean .5, unbiased std sqrt(.5)
    expect = [a0, -a0, 0.0, 0.0, 0.7 / (1 + 1e-6)]  # {1, 1}: 0; singleton: mean 0, std 1
    assert g[:, 0, 0].tolist() == pytest.approx(expect, rel=1e-6)
    assert torch.all(g[:, 0, 1] == 0) and torch.all(g[:, 1] == 0)

    nostd = ADV_ESTIMATORS.get("grpo")(rewards, valid, mask, outcome, gids, OPDConfig(norm_adv_by_std=False))
    assert nostd[:, 0, 0].tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.7])

    both = ADV_ESTIMATORS.get("token_reward_direct_plus_grpo")(rewards, valid, mask, outcome, gids, cfg)
    torch.testing.assert_close(both, direct + 0.5 * g)
    with pytest.raises(ValueError, match="outcome"):
        ADV_ESTIMATORS.get("grpo")(rewards, valid, mask, None, None, cfg)


# ----------------------------------------------------------------------------- losses
def test_vanilla_clipping_and_dual_clip():
    cfg = OPDConfig(clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0)
    ratios = torch.tensor([1.5, 0.5, 5.0, 0.5, 2.0], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    old = torch.full((5,), -1.0, dtype=torch.float64)
    new = (old + ratios.log()).requires_grad_()
    valid = torch.ones(5, dtype=torch.bool)
    expect = [-1.2, -0.5, 3.0, 0.8, 2.0]
    tok, st = vanilla_token_loss(new[:, None], old[:, None], adv[:, None], valid[:, None], cfg)
    assert tok.tolist() == pytest.approx(expect)
    assert st["clipfrac"][:, 0].tolist() == [1, 0, 0, 1, 0]       # l2 > l1
    assert st["pg_clipfrac_lower"][:, 0].tolist() == [0, 0, 1, 0, 0]
    loss, stats = POLICY_LOSSES.get("vanilla")(new[None, :, None], old[None, :, None], adv[None, :, None],
                                               valid[None, :, None], torch.ones(1, 5), cfg)
    assert loss.item() == pytest.approx(sum(expect) / 5)
    assert stats["clipfrac"] == pytest.approx(0.4) and stats["pg_clipfrac_lower"] == pytest.approx(0.2)
    loss.backward()
    # gradient flows only where unclipped: d(-A r)/d logp = -A r
    assert new.grad.tolist() == pytest.approx([0.0, -0.5 / 5, 0.0, 0.0, 2.0 / 5])


def test_candidates_summed_and_invalid_ignored():
    cfg = OPDConfig()
    new = torch.tensor([[0.0, -0.1, NEG_INF]], requires_grad=True)
    old = torch.tensor([[0.0, -0.1, 0.0]])
    adv = torch.tensor([[1.0, 2.0, 5.0]])
    valid = torch.tensor([[True, True, False]])
    tok, _ = vanilla_token_loss(new, old, adv, valid, cfg)
    assert tok.item() == pytest.approx(-3.0)
    tok.sum().backward()
    assert torch.isfinite(new.grad).all() and new.grad[0, 2] == 0


def test_agg_modes():
    loss = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    expect = {"token-mean": 21 / 5, "seq-mean-token-sum": (3 + 18) / 2,
              "seq-mean-token-mean": (1.5 + 6) / 2, "seq-mean-token-sum-norm": (3 / 4 + 18 / 4) / 2}
    for mode in LOSS_AGG_MODES:
        assert agg_loss(loss, mask, mode).item() == pytest.approx(expect[mode]), mode
        assert agg_loss(loss, mask.bool(), mode).item() == pytest.approx(
            (loss * token_weights(mask, mode)).sum().item())
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm", loss_scale_factor=2).item() == pytest.approx(5.25)
    x = torch.randn(4, 7)
    m = torch.rand(4, 7) > 0.4
    for mode in LOSS_AGG_MODES:
        torch.testing.assert_close(agg_loss(x, m, mode), (x * token_weights(m, mode)).sum())
        assert agg_loss(x, torch.zeros(4, 7), mode).item() == 0
    with pytest.raises(ValueError, match="token-mean"):
        agg_loss(x, m, "sum")


def test_low_var_kl():
    logp = torch.tensor([[0.0, -1.0, 0.0, -30.0]])
    ref = torch.tensor([[math.log(2.0), -1.0, -30.0, 0.0]])
    out = low_var_kl(logp, ref)
    assert out[0, 0].item() == pytest.approx(2 - math.log(2) - 1)
    assert out[0, 1].item() == 0
    assert out[0, 2].item() == 10.0                                    # exp(-30)+30-1 = 29 -> 10
    assert out[0, 3].item() == 10.0                                    # exp(30)-31 clamped at 10


# ----------------------------------------------------------------------------- mechanism metrics
def test_mechanism_stats_hand_built():
    p = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    q = torch.tensor([0.1, 0.5, 0.2, 0.1, 0.05, 0.05], dtype=torch.float64)
    st = token_mechanism_stats(p.log()[None], q.log()[None], 2)      # Ks = {0, 1}, Kt = {1, 2}
    expect = {"overlap_ratio": 0.5, "student_mass_shared": 0.3, "teacher_mass_shared": 0.5,
              "student_mass_own_topk": 0.7, "teacher_mass_own_topk": 0.7,
              "student_mass_on_teacher_topk": 0.4, "teacher_mass_on_student_topk": 0.6,
              "student_entropy": float(-(p * p.log()).sum()), "teacher_entropy": float(-(q * q.log()).sum())}
    for k, v in expect.items():
        assert st[k].item() == pytest.approx(v), k


def test_mechanism_metrics_buckets():
    mask = torch.tensor([[1] * 8, [0, 0, 0, 0, 1, 1, 1, 1]])
    overlap = torch.tensor([[float(i) for i in range(8)], [0, 0, 0, 0, 10, 20, 30, 40]])
    reward = torch.tensor([[1.0] * 8, [0, 0, 0, 0, 3, 3, -1, 5]])
    m = mechanism_metrics({"overlap_ratio": overlap, "reward": reward,
                           "student_entropy": torch.ones(2, 8)}, mask)
    assert m["opd/overlap_ratio"] == pytest.approx((28 + 100) / 12)
    assert m["opd/student_entropy"] == pytest.approx(1.0)
    vals = [1.0] * 8 + [3, 3, -1, 5]
    mean = sum(vals) / 12
    assert m["opd/reward_mean"] == pytest.approx(mean)
    assert m["opd/reward_std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / 12))
    assert (m["opd/reward_min"], m["opd/reward_max"]) == (-1.0, 5.0)
    # row 0: token i -> bucket i; row 1 (4 tokens): buckets 0, 2, 4, 6
    assert m["opd/overlap_ratio_bucket0"] == pytest.approx((0 + 10) / 2)
    assert m["opd/overlap_ratio_bucket1"] == pytest.approx(1.0)
    assert m["opd/overlap_ratio_bucket6"] == pytest.approx((6 + 40) / 2)
    assert m["opd/overlap_ratio_bucket7"] == pytest.approx(7.0)
    only_row1 = mechanism_metrics({"overlap_ratio": overlap}, mask * torch.tensor([[0], [1]]))
    assert sorted(k for k in only_row1 if "bucket" in k) == [f"opd/overlap_ratio_bucket{i}" for i in (0, 2, 4, 6)]
    assert mechanism_metrics({"overlap_ratio": overlap}, torch.zeros(2, 8)) == {}
