"""One student forward per step: ``score_and_backward`` and the trainer's single-forward path give
the losses, gradients, advantages and metrics of the two-forward path (``score_tokens`` +
estimator + ``policy_loss_backward``), on the tiny Qwen3 models.

Run: .venv/bin/pytest tests/test_single_forward.py -q
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from opd.objectives import ADV_ESTIMATORS, OPDConfig, policy_loss_backward, score_tokens
from opd.objectives.single_forward import estimator_fn, score_and_backward
from opd.train.native import OnPolicyTrainer, TrainConfig, slice_scored

OBJECTIVES = {
    "only_stu-student_p": {"top_k": 4, "strategy": "only_stu", "weight_mode": "student_p"},
    "union-teacher_p": {"top_k": 4, "strategy": "union", "weight_mode": "teacher_p"},
    "sampled-token": {"top_k": 0},
    "grpo": {"top_k": 0, "adv_estimator": "grpo"},
    "direct_plus_grpo": {"top_k": 4, "adv_estimator": "token_reward_direct_plus_grpo",
                         "grpo_outcome_weight": 0.5},
    "union-intersection-kl": {"top_k": 3, "strategy": "union-intersection", "weight_mode": "none",
                              "use_kl_loss": True, "kl_loss_coef": 0.2,
                              "loss_agg_mode": "seq-mean-token-mean"},
}
B, P, L = 6, 3, 7
OUTCOME = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
GROUPS = torch.tensor([0, 0, 1, 1, 2, 2])
ROWS = torch.tensor([4, 2, 1, 0, 5])         # a micro-batch: permuted, groups split, one empty row


def _hidden(model, ids):
    return model.model(input_ids=ids).last_hidden_state[:, P - 1:P - 1 + L]


def _setup(tiny_models):
    student, teacher = (copy.deepcopy(m).double() for m in tiny_models)
    teacher.requires_grad_(False)
    V = student.get_output_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, P + L), generator=g)
    lengths = torch.tensor([7, 3, 0, 5, 1, 6])                  # ragged, one empty response
    mask = torch.arange(L)[None] < lengths[:, None]
    ref_logp = torch.randn(B, L, generator=g, dtype=torch.float64) - 3
    return student, teacher, ids, mask, ref_logp


def _grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_score_and_backward_matches_two_forward_path(tiny_models, name):
    student, teacher, ids, mask, ref_logp = _setup(tiny_models)
    cfg = OPDConfig(**OBJECTIVES[name], student_temperature=0.7, teacher_temperature=1.3, metrics_k=4)
    est = ADV_ESTIMATORS.get(cfg.adv_estimator)
    tokens = ids[:, P:]
    W, Wt = student.get_output_embeddings().weight, teacher.get_output_embeddings().weight
    with torch.no_grad():
        h_t = _hidden(teacher, ids)
        full = score_tokens(_hidden(student, ids), W, h_t, Wt, tokens, mask, cfg, 4)
    adv_full = est(full.rewards, full.valid, mask, OUTCOME, GROUPS, cfg)
    ref = ref_logp[ROWS] if cfg.use_kl_loss else None
    assert adv_full.abs().sum() > 0
    for cs in (1, 4, 1000):
        student.zero_grad()
        want = policy_loss_backward(_hidden(student, ids[ROWS]), W, tokens[ROWS], mask[ROWS],
                                    slice_scored(full, ROWS, L), adv_full[ROWS], cfg, cs,
                                    ref_logp=ref, loss_scale=0.5)
        want_grads = _grads(student)

        student.zero_grad()
        fn = estimator_fn(est, OUTCOME, GROUPS, cfg, rows=ROWS)
        sc, adv, got = score_and_backward(_hidden(student, ids[ROWS]), W, h_t[ROWS], Wt, tokens[ROWS],
                                          mask[ROWS], fn, cfg, cs, ref_logp=ref, loss_scale=0.5)
        m = mask[ROWS]
        sub = slice_scored(full, ROWS, L)
        assert torch.equal(sc.ids[m], sub.ids[m]) and torch.equal(sc.valid[m], sub.valid[m])
        for a, b in ((sc.rewards, sub.rewards), (sc.old_logp, sub.old_logp), (sc.token_logp, sub.token_logp),
                     (adv, adv_full[ROWS])):
            torch.testing.assert_close(a[m], b[m], rtol=1e-10, atol=1e-12)
        assert not sc.valid[~m].any() and torch.all(adv[~m] == 0)
        assert list(sc.stats) == list(sub.stats)
        for k in sub.stats:
            torch.testing.assert_close(sc.stats[k][m], sub.stats[k][m], rtol=1e-6, atol=1e-7)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
        for g, w in zip(_grads(student), want_grads):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
        assert any(g.abs().sum() > 0 for g in want_grads)


def test_score_and_backward_holds_no_logits_beyond_one_chunk(tiny_models):
    """No op output of vocabulary width has more than ``chunk_size`` rows (the heads' own
    [H, V] transposes and their gradients aside)."""
    student, teacher, ids, mask, _ = _setup(tiny_models)
    V = student.get_output_embeddings().weight.shape[0]
    heads = {(m.config.hidden_size, V) for m in (student, teacher)}
    cfg = OPDConfig(top_k=4, strategy="union", chunk_size=3)
    h_s, h_t = _hidden(student, ids), _hidden(teacher, ids).detach()
    widest = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.shape[-1:] == (V,) and tuple(t.shape) not in heads:
                    widest.append(t.numel() // V)
            return out

    fn = estimator_fn(ADV_ESTIMATORS.get(cfg.adv_estimator), None, None, cfg)
    with Watch():
        score_and_backward(h_s, student.get_output_embeddings().weight, h_t,
                           teacher.get_output_embeddings().weight, ids[:, P:], mask, fn, cfg)
    assert int(mask.sum()) > 3 and widest and max(widest) <= 3


def test_empty_batch_keeps_keys(tiny_models):
    student, teacher, ids, mask, _ = _setup(tiny_models)
    cfg = OPDConfig(top_k=4)
    z = torch.zeros_like(mask)
    W, Wt = student.get_output_embeddings().weight, teacher.get_output_embeddings().weight
    with torch.no_grad():
        want = score_tokens(_hidden(student, ids), W, _hidden(teacher, ids), Wt, ids[:, P:], z, cfg)
    sc, adv, st = score_and_backward(_hidden(student, ids), W, _hidden(teacher, ids).detach(), Wt, ids[:, P:], z,
                                     estimator_fn(ADV_ESTIMATORS.get("token_reward_direct"), None, None, cfg), cfg)
    assert set(sc.stats) == set(want.stats) and st["loss"] == 0 and st["n_tokens"] == 0
    assert torch.all(adv == 0)


# --------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def rows(tiny_problems):
    return [{"problem_id": str(i), "prompt": [{"role": "user", "content": p.prompt}],
             "ground_truth": str(p.answer)} for i, p in enumerate(tiny_problems["train"][:12])]


def _trainer(tiny_models, tok, rows, single, **kw):
    student = type(tiny_models[0])(tiny_models[0].config)
    student.load_state_dict(tiny_models[0].state_dict())
    cfg = TrainConfig.from_dict({"steps": 1, "prompts_per_step": 3, "n_samples": 2, "max_new_tokens": 8,
                                 "lr": 1e-3, "micro_batch_size": 4, "grad_clip": 1e9, **kw})
    return OnPolicyTrainer(cfg, student, tok, rows, teacher=tiny_models[1] if cfg.method == "opd" else None,
                           single_forward=single)


def _run_step(trainer):
    """One step; returns its metrics and the gradients the optimiser stepped with. The untrained
    tiny students never answer right, so each sample's outcome is set from its real token ids
    (parity of their sum): GRPO's group statistics are then not all zero."""
    grads, rollout, step = [], trainer.rollout, trainer.opt.step

    def relabel(*a):
        samples = rollout(*a)
        for s in samples:
            s["outcome"] = float(sum(s["response_ids"]) % 2)
        return samples

    def record(*a, **k):
        grads.append([p.grad.clone() for p in trainer.student.parameters()])
        return step(*a, **k)
    trainer.rollout, trainer.opt.step = relabel, record
    return trainer.step(1), grads


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_trainer_single_forward_matches_two_forward(tiny_models, tiny_tokenizer, rows, name):
    o = dict(OBJECTIVES[name], student_temperature=0.7, chunk_size=5)
    kw = {"method": "grpo"} if name == "grpo" else {"objective": o}
    old = _trainer(tiny_models, tiny_tokenizer, rows, False, **kw)
    new = _trainer(tiny_models, tiny_tokenizer, rows, None, **kw)
    assert new.single_forward and not old.single_forward
    m_old, g_old = _run_step(old)
    m_new, g_new = _run_step(new)
    assert m_old.keys() == m_new.keys()
    for k, v in m_old.items():
        if not k.startswith("time/"):
            assert math.isclose(m_new[k], v, rel_tol=1e-6, abs_tol=1e-6), (k, m_new[k], v)
    if name in ("grpo", "direct_plus_grpo"):
        assert 0 < m_old["rollout/accuracy"] < 1
    assert len(g_old) == len(g_new) == 1
    for a, b in zip(g_new[0], g_old[0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in g_old[0])
    # (parameters after the step are not compared: Adam's first step is about lr * sign(g), which
    # turns a 1e-9 difference of a near-zero gradient into a full step)


@pytest.mark.parametrize("kw", [{"ppo_epochs": 2}, {"mini_batch_size": 2},
                                {"objective": {"adv_estimator": "grpo", "top_k": 0}}])
def test_two_forward_path_wherever_old_and_new_policies_differ(tiny_models, tiny_tokenizer, rows, kw):
    if "objective" in kw:   # position-local estimator with one step per batch: single forward
        assert _trainer(tiny_models, tiny_tokenizer, rows, None, **kw).single_forward
        return
    trainer = _trainer(tiny_models, tiny_tokenizer, rows, None, **kw)
    assert not trainer.single_forward
    with pytest.raises(ValueError, match="single_forward needs"):
        _trainer(tiny_models, tiny_tokenizer, rows, True, **kw)
    assert math.isfinite(trainer.step(1)["train/loss"])


def test_single_forward_ratio_is_exactly_one(tiny_models, tiny_tokenizer, rows):
    trainer = _trainer(tiny_models, tiny_tokenizer, rows, None)
    m, _ = _run_step(trainer)
    assert 0 <= m["opd/overlap_ratio"] <= 1 and "opd/teacher_entropy" in m
    assert m["train/n_tokens"] > 0 and m["train/clipfrac"] == 0 and m["train/ppo_kl"] == 0


@pytest.mark.parametrize("mini, n", [(None, 1), (64, 1), (128, 1), (16, 4), (24, 3), (63, 2)])
def test_mini_batches_per_step_counts_the_native_update_loop(mini, n):
    cfg = TrainConfig.from_dict({"prompts_per_step": 32, "n_samples": 2, "mini_batch_size": mini,
                                 "objective": {"top_k": 0}})
    assert cfg.mini_batches_per_step() == n == len(range(0, 64, mini or 64))
