"""``teacher_prompt: own``: the teacher scores the responses behind its own chat template's prompt."""
from __future__ import annotations

import copy

import pytest
import torch

from opd.train.config import TrainConfig
from opd.train.native import OnPolicyTrainer


def trainer(tiny_models, tok, rows, **kw):
    student, teacher = tiny_models
    cfg = TrainConfig.from_dict({"steps": 1, "prompts_per_step": 2, "n_samples": 2, "max_new_tokens": 6,
                                 "enable_thinking": False, **kw})
    return OnPolicyTrainer(cfg, copy.deepcopy(student), tok, rows, teacher=teacher, teacher_tokenizer=tok)


def test_own_prompt_changes_the_teacher_scores_with_its_thinking_switch(tiny_models, tiny_tokenizer,
                                                                          tiny_problems):
    assert "enable_thinking" in tiny_tokenizer.chat_template        # the tiny template has the switch
    rows = [{"problem_id": str(i), "prompt": [{"role": "user", "content": p.prompt}],
             "ground_truth": str(p.answer)} for i, p in enumerate(tiny_problems["train"][:4])]
    base = trainer(tiny_models, tiny_tokenizer, rows)
    samples = base.rollout(1, base.next_prompts())
    from opd.train.native import response_batch
    batch = response_batch(samples, tiny_tokenizer.pad_token_id)

    def teacher_view(**kw):
        t = trainer(tiny_models, tiny_tokenizer, rows, **kw)
        scored, _ = t.score(batch, t.teacher_batch(samples))
        return scored if torch.is_tensor(scored) else scored.rewards

    student_view = teacher_view()
    think_on = teacher_view(teacher_prompt="own", teacher_enable_thinking=True)
    think_off = teacher_view(teacher_prompt="own", teacher_enable_thinking=False)
    mask = batch[5]
    # `student`: the teacher reads the student's own prompt ids (non-thinking here), so `own` with
    # the same switch gives identical scores, and the other switch gives different ones
    torch.testing.assert_close(think_off[mask], student_view[mask])
    assert not torch.allclose(think_on[mask], think_off[mask])


def test_own_prompt_is_refused_on_verl_and_checked():
    from opd.train.verl.command import UnsupportedCombination, check_supported

    with pytest.raises(UnsupportedCombination, match="teacher_prompt: own"):
        check_supported(TrainConfig.from_dict({"teacher_prompt": "own"}))
    with pytest.raises(ValueError, match="teacher_prompt must be one of"):
        TrainConfig.from_dict({"teacher_prompt": "theirs"})
