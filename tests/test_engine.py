"""The native on-policy trainer on real tiny Qwen3 models: every objective trains, errors are early."""
import itertools
import math

import pytest
import torch

from opd.train.native import OnPolicyTrainer, TrainConfig, check_same_vocabulary, response_batch
from opd.objectives import STRATEGIES, WEIGHT_MODES


@pytest.fixture(scope="module")
def rows(tiny_problems):
    return [{"problem_id": str(i), "prompt": [{"role": "user", "content": p.prompt}],
             "ground_truth": str(p.answer)} for i, p in enumerate(tiny_problems["train"][:12])]


def make(tiny_models, tok, rows, **kw):
    student, teacher = tiny_models
    student = type(student)(student.config)
    student.load_state_dict(tiny_models[0].state_dict())
    cfg = TrainConfig.from_dict({"steps": 2, "prompts_per_step": 2, "n_samples": 2,
                                 "max_new_tokens": 6, "lr": 1e-3, "micro_batch_size": 2, **kw})
    return OnPolicyTrainer(cfg, student, tok, rows, teacher=teacher if cfg.method == "opd" else None)


COMBOS = [{"top_k": 4, "strategy": s, "weight_mode": w}
          for s, w in itertools.product(STRATEGIES, WEIGHT_MODES)] + [{"top_k": 0}]


@pytest.mark.parametrize("objective", COMBOS, ids=lambda o: f"{o.get('strategy', 'sampled')}-{o.get('weight_mode', '')}")
def test_every_objective_trains_with_finite_loss(tiny_models, tiny_tokenizer, rows, objective):
    trainer = make(tiny_models, tiny_tokenizer, rows,
                   objective={**objective, "student_temperature": 1.0, "chunk_size": 5})
    before = [p.detach().clone() for p in trainer.student.parameters()]
    for step in (1, 2):
        m = trainer.step(step)
        assert math.isfinite(m["train/loss"]) and math.isfinite(m["train/grad_norm"])
        assert 0.0 <= m["opd/overlap_ratio"] <= 1.0
        assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.student.parameters()))


def test_grpo_trains_and_has_no_teacher_metrics(tiny_models, tiny_tokenizer, rows):
    trainer = make(tiny_models, tiny_tokenizer, rows, method="grpo")
    assert trainer.cfg.objective.adv_estimator == "grpo" and trainer.cfg.objective.top_k == 0
    m = trainer.step(1)
    assert math.isfinite(m["train/loss"]) and "opd/overlap_ratio" not in m
    assert "opd/student_entropy" in m


def test_kl_loss_and_minibatches(tiny_models, tiny_tokenizer, rows):
    trainer = make(tiny_models, tiny_tokenizer, rows, mini_batch_size=2, ppo_epochs=2,
                   objective={"use_kl_loss": True, "kl_loss_coef": 0.1})
    m = trainer.step(1)
    assert math.isfinite(m["train/kl_loss"]) and m["train/kl_loss"] >= 0


def test_checkpoint_steps():
    assert TrainConfig(steps=30, save_every=10).checkpoint_steps() == [10, 20, 30]
    assert TrainConfig(steps=25, save_every=10).checkpoint_steps() == [10, 20, 25]
    assert TrainConfig(steps=5, save_every=10).checkpoint_steps() == [5]


def test_bad_training_config_names_the_option():
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig.from_dict({"objective": {"strategy": "both"}})
    with pytest.raises(ValueError, match="n_samples"):
        TrainConfig.from_dict({"method": "grpo", "n_samples": 1})


def test_teacher_with_another_vocabulary_fails_before_training(tiny_models, tiny_tokenizer, tiny_problems):
    from opd.world.models import ModelSpec, init_model, train_tokenizer
    other_tok = train_tokenizer([p.prompt for p in tiny_problems["pretrain"]] + ["zzz qqq"], vocab_size=400)
    other = init_model(ModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                 intermediate_size=64), other_tok)
    with pytest.raises(ValueError, match="do not share a vocabulary"):
        check_same_vocabulary(tiny_tokenizer, other_tok, tiny_models[0], other)


def test_response_batch_aligns_responses():
    rows = [{"prompt_ids": [5, 6, 7], "response_ids": [8, 9]},
            {"prompt_ids": [5], "response_ids": [1, 2, 3]}]
    ids, attn, pos, P, tokens, mask = response_batch(rows, pad_id=0)
    assert P == 3
    assert tokens.tolist() == [[8, 9, 0], [1, 2, 3]]
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    assert pos[1].tolist()[2:] == [0, 1, 2, 3]  # left padding does not shift positions
