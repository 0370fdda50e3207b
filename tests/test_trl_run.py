"""TRL's trainers, for real, on the tiny models: two steps of each objective through the backend.

Needs the TRL stack (``make env-trl`` builds ``.venv-trl``); skipped without it. Each run goes
through ``opd.train.trl.run.run_trl`` as the train rule does (plan, runner in the TRL stack,
checkpoints and metrics.jsonl in the native layout). The loss scaling is checked against an
independent computation: TRL's logged step-1 loss must equal the token mean, over every response
token the step generated (recorded by the runner), of the per-token loss recomputed here with
the initial student and the teacher. Both runs accumulate gradients over two micro-batches, so a
divisor counted on anything but the step's generated tokens (GKD's placeholder answers: an 18x
larger step in the 2026-12-04 diagnosis) fails it.
"""
from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT
from opd.generation.hf import load_model
from opd.io import read_jsonl, write_parquet
from opd.train.config import TrainConfig
from opd.train.trl.run import run_trl
from opd.world.problems import to_frame

TRL_PY = ROOT / ".venv-trl" / "bin" / "python"
pytestmark = pytest.mark.skipif(not TRL_PY.exists(),
                                reason="TRL env missing: run `make env-trl` to build .venv-trl")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_models, tiny_tokenizer, tiny_problems):
    d = tmp_path_factory.mktemp("trl_pair")
    for name, model in zip(("student", "teacher"), tiny_models):
        model.save_pretrained(d / name)
        tiny_tokenizer.save_pretrained(d / name)
    write_parquet(to_frame(tiny_problems["train"][:12], "train"), d / "train.parquet")
    return d / "student", d / "teacher", d / "train.parquet"


def recomputed_loss(student_dir, teacher_dir, prompts: list[list[int]], rollouts: list[dict], sampled: bool,
                    temperature: float = 1.0) -> float:
    """Token mean over ``rollouts`` of KL(p_s || p_t) over the vocabulary, or (``sampled``) of
    -S_y (T_y - S_y), each sequence scored alone by the saved models (float32, no padding)."""
    student, teacher = load_model(student_dir), load_model(teacher_dir)
    total, n = 0.0, 0
    with torch.no_grad():
        for r in rollouts:
            p, y = prompts[r["row"]], r["response_ids"]
            ids = torch.tensor([p + y])
            cut = slice(len(p) - 1, len(p) - 1 + len(y))
            S = torch.log_softmax(student(input_ids=ids).logits[0, cut].double() / temperature, -1)
            T = torch.log_softmax(teacher(input_ids=ids).logits[0, cut].double() / temperature, -1)
            if sampled:
                s_y, t_y = S.gather(-1, torch.tensor(y)[:, None])[:, 0], T.gather(-1, torch.tensor(y)[:, None])[:, 0]
                total += float((-s_y * (t_y - s_y)).sum())
            else:
                total += float((S.exp() * (S - T)).sum())
            n += len(y)
    return total / n


@pytest.mark.parametrize("top_k", [320, 0], ids=["full_vocab", "sampled_token"])
def test_two_steps_with_trl(pair, tmp_path, top_k):
    student, teacher, prompts = pair
    cfg = TrainConfig.from_dict({"method": "opd", "steps": 2, "prompts_per_step": 2, "n_samples": 2,
                                 "max_new_tokens": 12, "lr": 1e-2, "micro_batch_size": 2, "save_every": 1,
                                 "seed": 0, "objective": {"top_k": top_k}})
    run, ckpt, metrics = tmp_path / "run", tmp_path / "run" / "checkpoints", tmp_path / "run" / "metrics.jsonl"
    plan = run_trl(str(TRL_PY), "t", cfg, str(student), str(teacher), str(prompts), run, {}, str(ckpt), str(metrics))
    assert plan["args"]["gradient_accumulation_steps"] == 2
    # checkpoints where the native trainer puts them; the student moved
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_0001", "step_0002"]
    before, after = load_model(student).state_dict(), load_model(ckpt / "step_0002").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # one metrics row per step, in the project's names
    rows = read_jsonl(metrics)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert {"train/loss", "train/grad_norm", "train/lr", "rollout/accuracy", "rollout/mean_length",
                "rollout/clip_ratio"} <= set(r)
        assert r["train/lr"] == pytest.approx(1e-2)
    # each step generated prompts_per_step x n_samples sequences, n_samples per prompt
    rollouts = read_jsonl(run / "trl" / "rollouts.jsonl")
    first = [r for r in rollouts if r["step"] == 1]
    assert len(first) == 4 and len({r["row"] for r in first}) == 2
    assert rows[0]["rollout/mean_length"] == pytest.approx(sum(len(r["response_ids"]) for r in first) / 4)
    # the loss scaling: the token mean over the step's generated tokens
    ids = [json.loads(line)["prompt_ids"] for line in (run / "trl" / "prompts.jsonl").read_text().splitlines()]
    expected = recomputed_loss(student, teacher, ids, first, sampled=top_k == 0)
    assert rows[0]["train/loss"] == pytest.approx(expected, rel=2e-3, abs=1e-5)
