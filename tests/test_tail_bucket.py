"""The tail-bucket candidate of top-k OPD (``tail_bucket=True``) against a float64 reference."""
from __future__ import annotations

import math

import pytest
import torch

from opd.objectives.config import STRATEGIES, WEIGHT_MODES
from opd.objectives.topk import LOGP_FLOOR, TAIL_ID, log1mexp, topk_details, topk_rewards


def reference(zs, zt, k, strategy, weight_mode):
    """Float64, position by position, with Python sets: the tail as the mass outside C."""
    S, T = torch.log_softmax(zs.double(), -1), torch.log_softmax(zt.double(), -1)
    out = []
    for s, t in zip(S.reshape(-1, S.shape[-1]), T.reshape(-1, T.shape[-1])):
        s_top = s.topk(k).indices.tolist()
        t_top = t.topk(k).indices.tolist()
        if strategy == "only_stu":
            C = s_top
        elif strategy == "only_tch":
            C = t_top
        elif strategy == "intersection":
            C = [i for i in s_top if i in t_top]
        elif strategy == "union":
            C = s_top + [i for i in t_top if i not in s_top]
        else:
            C = [i for i in s_top if i not in t_top] + [i for i in t_top if i not in s_top]
        if not C:
            out.append((None, None, 0.0, 0.0, []))
            continue
        ps, pt = s.exp(), t.exp()
        s_tail = math.log(1 - float(ps[C].sum())) if C else None
        t_tail = max(math.log(max(1 - float(pt[C].sum()), 0.0)) if float(pt[C].sum()) < 1 else -math.inf, LOGP_FLOOR)
        src = {"student_p": [float(s[i]) for i in C] + [s_tail],
               "teacher_p": [max(float(t[i]), LOGP_FLOOR) for i in C] + [t_tail],
               "none": [0.0] * (len(C) + 1)}[weight_mode]
        if strategy == "union-intersection":
            w = [math.exp(x) for x in src]
        else:
            e = [math.exp(x - max(src)) for x in src]
            w = [x / sum(e) for x in e]
        out.append((s_tail, t_tail, w[-1], -(s_tail - t_tail) * w[-1], sorted(C)))
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("weight_mode", WEIGHT_MODES)
def test_tail_matches_a_float64_reference(strategy, weight_mode):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(3, 5, 40, generator=g) * 2, torch.randn(3, 5, 40, generator=g) * 2
    d = topk_details(torch.log_softmax(zs.double(), -1), torch.log_softmax(zt.double(), -1), 4,
                     strategy, weight_mode, tail_bucket=True)
    M = 8 if strategy in ("union", "union-intersection") else 4
    assert d.ids.shape == (3, 5, M + 1) and bool((d.ids[..., -1] == TAIL_ID).all())
    flat = lambda x: x.reshape(-1, M + 1)  # noqa: E731
    for i, (s_tail, t_tail, w_tail, r_tail, C) in enumerate(reference(zs, zt, 4, strategy, weight_mode)):
        valid = flat(d.valid)[i]
        assert sorted(flat(d.ids)[i][:-1][valid[:-1]].tolist()) == C
        if not C:
            assert not bool(valid[-1]) and float(flat(d.rewards)[i][-1]) == 0.0
            continue
        assert bool(valid[-1])
        assert float(flat(d.student_logp)[i][-1]) == pytest.approx(s_tail, rel=1e-9, abs=1e-12)
        assert float(flat(d.teacher_logp)[i][-1]) == pytest.approx(t_tail, rel=1e-9, abs=1e-12)
        assert float(flat(d.weights)[i][-1]) == pytest.approx(w_tail, rel=1e-9, abs=1e-12)
        assert float(flat(d.rewards)[i][-1]) == pytest.approx(r_tail, rel=1e-9, abs=1e-12)


def test_student_weights_are_the_true_probabilities_with_the_tail():
    """student_p renormalises over C plus the tail, whose masses add up to one: w_c = p_s(c)."""
    zs, zt = torch.randn(2, 30, dtype=torch.float64), torch.randn(2, 30, dtype=torch.float64)
    d = topk_details(torch.log_softmax(zs, -1), torch.log_softmax(zt, -1), 5, "only_stu", "student_p",
                     tail_bucket=True)
    p = torch.softmax(zs, -1)
    torch.testing.assert_close(d.weights[..., :-1], p.gather(-1, d.ids[..., :-1]))
    torch.testing.assert_close(d.weights.sum(-1), torch.ones(2, dtype=torch.float64))


def test_a_candidate_set_covering_the_vocabulary_leaves_a_zero_mass_tail_and_no_nan():
    zs, zt = torch.randn(4, 6), torch.randn(4, 6)
    for strategy in STRATEGIES:
        r = topk_rewards(zs, zt, 6, strategy, "student_p", tail_bucket=True)
        assert torch.isfinite(r.rewards).all()
        if strategy in ("only_stu", "only_tch", "intersection", "union"):
            assert not r.valid[..., -1].any()       # C is every token: nothing left outside


def test_without_the_flag_nothing_changes():
    zs, zt = torch.randn(3, 50), torch.randn(3, 50)
    a = topk_rewards(zs, zt, 8, "union", "teacher_p")
    b = topk_rewards(zs, zt, 8, "union", "teacher_p", tail_bucket=True)
    assert a.ids.shape[-1] + 1 == b.ids.shape[-1]
    assert torch.equal(a.ids, b.ids[..., :-1]) and torch.equal(a.valid, b.valid[..., :-1])


def test_log1mexp_is_stable_at_both_ends():
    x = torch.tensor([-1e-12, -1e-3, -0.5, -5.0, -50.0, 0.0], dtype=torch.float64)
    want = [math.log(-math.expm1(v)) if v < 0 else -math.inf for v in x.tolist()]
    got = log1mexp(x).tolist()
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12) or (g == w == -math.inf)


def test_the_chunked_path_with_the_tail_matches_full_logits():
    """score_tokens + policy_loss_backward with tail_bucket: same rewards as topk_rewards and the
    same gradient as the policy loss on full logits, tail ratio exp(S_tail,new - S_tail,old)."""
    from opd.objectives import ADV_ESTIMATORS, POLICY_LOSSES, OPDConfig, policy_loss_backward, score_tokens
    from opd.objectives.topk import candidate_logp

    torch.manual_seed(0)
    B, L, H, V = 2, 5, 8, 30
    dt = torch.float64
    head = torch.randn(V, H, dtype=dt, requires_grad=True)
    hs, ht, thead = torch.randn(B, L, H, dtype=dt), torch.randn(B, L, H, dtype=dt), torch.randn(V, H, dtype=dt)
    tokens = torch.randint(0, V, (B, L))
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 3:] = False
    for strategy in ("only_stu", "union"):
        cfg = OPDConfig(top_k=4, strategy=strategy, weight_mode="student_p", tail_bucket=True)
        with torch.no_grad():
            scored = score_tokens(hs, head, ht, thead, tokens, mask, cfg, 3)
        want = topk_rewards(hs @ head.T, ht @ thead.T, 4, strategy, "student_p", tail_bucket=True)
        assert scored.ids.shape[-1] == cfg.num_candidates == want.ids.shape[-1]
        torch.testing.assert_close(scored.rewards[mask], want.rewards[mask])
        adv = ADV_ESTIMATORS.get("token_reward_direct")(scored.rewards * 10, scored.valid, mask, None, None, cfg)
        moved = (head.detach() + 0.05 * torch.randn(V, H, dtype=dt)).requires_grad_(True)
        S = torch.log_softmax(hs @ moved.T, -1)
        loss, _ = POLICY_LOSSES.get("vanilla")(candidate_logp(S, scored.ids, scored.valid), scored.old_logp,
                                               adv, scored.valid, mask, cfg)
        (g_ref,) = torch.autograd.grad(loss, moved)
        moved.grad = None
        policy_loss_backward(hs, moved, tokens, mask, scored, adv, cfg, 3)
        torch.testing.assert_close(moved.grad, g_ref)
        assert torch.isfinite(moved.grad).all() and float(g_ref.abs().sum()) > 0


@pytest.mark.parametrize("extra", [{}, {"mini_batch_size": 2, "ppo_epochs": 2}])
def test_the_trainer_runs_with_the_tail(tiny_models, tiny_tokenizer, tiny_problems, extra):
    """Both trainer paths (one student forward, and scoring then mini-batch updates) with the tail."""
    from opd.train.config import TrainConfig
    from opd.train.native import OnPolicyTrainer

    rows = [{"problem_id": str(i), "prompt": [{"role": "user", "content": p.prompt}],
             "ground_truth": str(p.answer)} for i, p in enumerate(tiny_problems["train"][:8])]
    cfg = TrainConfig.from_dict({"steps": 1, "prompts_per_step": 2, "n_samples": 2, "max_new_tokens": 6,
                                 **extra, "objective": {"top_k": 4, "tail_bucket": True, "chunk_size": 5}})
    student, teacher = tiny_models
    import copy
    trainer = OnPolicyTrainer(cfg, copy.deepcopy(student), tiny_tokenizer, rows, teacher=teacher,
                              teacher_tokenizer=tiny_tokenizer)
    m = trainer.step(1)
    assert math.isfinite(m["train/loss"]) and math.isfinite(m["train/grad_norm"])


@pytest.mark.parametrize("peak", [0.0, 30.0])
def test_a_zero_mass_tail_has_a_finite_gradient(peak):
    """A tail with no mass (C covers the vocabulary, or the student puts all its float32 mass on
    one token) is invalid and masked out of the loss; its gradient must still be finite, or the
    masked 0 * inf turns every weight into NaN (seen on the tiny world's peaked student)."""
    from opd.objectives import POLICY_LOSSES, OPDConfig
    from opd.objectives.topk import candidate_logp

    z = torch.randn(1, 3, 6)
    z[..., 0] += peak
    z.requires_grad_(True)
    r = topk_rewards(z.detach(), torch.randn(1, 3, 6), 6 if peak == 0 else 4, "only_stu", "student_p",
                     tail_bucket=True)
    assert not r.valid[..., -1].any()
    cfg = OPDConfig(top_k=r.ids.shape[-1] - 1, strategy="only_stu", weight_mode="student_p", tail_bucket=True)
    S = torch.log_softmax(z, -1)
    new = candidate_logp(S, r.ids, r.valid)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, _ = POLICY_LOSSES.get("vanilla")(new, new.detach(), r.rewards, r.valid, mask, cfg)
    loss.backward()
    assert torch.isfinite(z.grad).all()
