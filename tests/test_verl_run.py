"""What the train rule does around a verl run: checkpoints and metrics into the native layout.

verl's trainer needs GPUs, so its outputs are built here by hand in verl 0.9.1's layout
(``global_step_N/actor/huggingface`` written by ``save_pretrained``, the file logger's
``{"step": N, "data": {...}}`` lines), and the conversion is checked on them.
"""
from __future__ import annotations

import json

import pytest

from opd.train.verl.run import METRIC_NAMES, collect_checkpoints, convert_metrics, verl_paths
from opd.io import read_jsonl
from opd.generation.hf import load_model, load_tokenizer


@pytest.fixture()
def student_dir(tmp_path, tiny_models, tiny_tokenizer):
    student, _ = tiny_models
    d = tmp_path / "student"
    student.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


def fake_verl_run(tmp_path, model, steps):
    """A verl output folder with a Hugging Face export per saved step (no tokenizer, as on rank 0)."""
    verl_dir = tmp_path / "verl"
    for s in steps:
        model.save_pretrained(verl_dir / f"global_step_{s}" / "actor" / "huggingface")
    return verl_dir


def test_checkpoints_land_where_the_native_trainer_puts_them(tmp_path, tiny_models, student_dir):
    student, _ = tiny_models
    verl_dir = fake_verl_run(tmp_path, student, [2, 4])
    out = tmp_path / "checkpoints"
    collect_checkpoints(verl_dir, [2, 4], student_dir, out)
    assert sorted(p.name for p in out.iterdir()) == ["step_0002", "step_0004"]
    for step in ("step_0002", "step_0004"):
        assert (out / step / "tokenizer.json").read_bytes() == (student_dir / "tokenizer.json").read_bytes()
        tok, model = load_tokenizer(out / step), load_model(out / step)
        assert model.config.vocab_size == student.config.vocab_size and tok.eos_token == "<|im_end|>"


def test_a_missing_step_fails_and_names_it(tmp_path, tiny_models, student_dir):
    student, _ = tiny_models
    verl_dir = fake_verl_run(tmp_path, student, [2])
    with pytest.raises(FileNotFoundError, match=r"steps \[4\]"):
        collect_checkpoints(verl_dir, [2, 4], student_dir, tmp_path / "checkpoints")
    assert not (tmp_path / "checkpoints" / "step_0002").exists()  # nothing half-collected


def test_metrics_are_renamed_and_one_row_per_step(tmp_path):
    log = tmp_path / "metrics.verl.jsonl"
    lines = [{"step": 1, "data": {"critic/score/mean": 0.25, "actor/pg_loss": 0.5, "timing_s/gen": 3.0}},
             {"step": 1, "data": {"val-core/aime/acc": 0.1}},
             {"step": 2, "data": {"critic/score/mean": 0.5, "response_length/mean": 40, "note": "text"}}]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert convert_metrics(log, tmp_path / "metrics.jsonl") == 2
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[0] == {"step": 1, "rollout/accuracy": 0.25, "train/loss": 0.5, "timing_s/gen": 3.0,
                       "val-core/aime/acc": 0.1}
    assert rows[1] == {"step": 2, "rollout/accuracy": 0.5, "rollout/mean_length": 40}
    assert set(METRIC_NAMES.values()) >= {"rollout/accuracy", "train/loss"}


def test_paths_put_verl_output_next_to_the_metrics(tmp_path):
    p = verl_paths("/s", None, "/d/train.parquet", "/d/val.parquet", tmp_path / "train" / "grpo")
    assert p["output_dir"] == str(tmp_path / "train" / "grpo" / "verl") and p["teacher"] is None
    assert p["reward_fn_file"].endswith("opd/train/verl/reward.py")
