"""Prompt length against the model's context (issue 11.6), on real tiny models and parquet files:
the helper's rule and message, each stage stopping before any compute, the tiny world's
defaults passing, and SFT counting what ``max_len`` drops or truncates."""
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from opd.generation.context import (check_prompt_lengths, check_prompts_fit, configured_limit,
                                    model_context, prompt_lengths)
from opd.io import make_row, write_parquet
from opd.world.models import ModelSpec, init_model

ROOT = Path(__file__).resolve().parents[1]
LONG = "Add these: " + " + ".join(["7"] * 150) + "?"  # digits are single tokens: > 300 tokens


def frame(questions):
    return pd.DataFrame([make_row("t", f"t-{i}", q, q, "1", i, "train") for i, q in enumerate(questions)])


@pytest.fixture(scope="module")
def dirs(tiny_models, tiny_tokenizer, tmp_path_factory):
    """Saved student (context 256), teacher (256) and a short-context teacher (context 64)."""
    root = tmp_path_factory.mktemp("ctx")
    student, teacher = tiny_models
    short = init_model(ModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                 intermediate_size=64, max_position_embeddings=64), tiny_tokenizer)
    out = {}
    for name, model in (("student", student), ("teacher", teacher), ("short", short)):
        model.save_pretrained(root / name)
        tiny_tokenizer.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def test_model_context_reads_config_and_takes_a_configured_limit(dirs, tmp_path):
    assert model_context(dirs["student"]) == 256
    assert model_context(dirs["short"]) == 64
    assert model_context(dirs["student"], limit=100) == 100
    assert model_context(dirs["short"], limit=1000) == 64
    assert model_context(tmp_path) is None and model_context(tmp_path, limit=50) == 50
    assert configured_limit({"backend": "vllm", "options": {"max_model_len": 32768}}) == 32768
    assert configured_limit({"backend": "hf", "options": {}}) is None and configured_limit(None) is None


def test_prompt_plus_budget_must_fit_exactly():
    check_prompt_lengths([10, 192], context=256, max_new_tokens=64, dataset="d", model="m")
    with pytest.raises(ValueError) as e:
        check_prompt_lengths([10, 193], context=256, max_new_tokens=64, dataset="d", model="m")
    assert "1 of 2 prompts" in str(e.value) and "at most 192" in str(e.value)
    check_prompt_lengths([10**6], context=None, max_new_tokens=64, dataset="d", model="m")


def test_the_message_names_file_count_longest_context_and_fix():
    with pytest.raises(ValueError) as e:
        check_prompt_lengths([5833, 40, 300, 200], context=256, max_new_tokens=64,
                             dataset="data/train.parquet", model="models/tiny",
                             budget_key="rollout.max_new_tokens")
    msg = str(e.value)
    assert msg.startswith("data/train.parquet: 3 of 4 prompts do not fit the context of model "
                          "models/tiny (256 tokens)")
    assert "2 of them exceed the context on their own" in msg
    assert "The longest prompt has 5833 tokens" in msg and "rollout.max_new_tokens=64" in msg
    assert "shorter prompts or filter" in msg and "larger context" in msg
    # the longest prompt exceeds the context on its own: a smaller budget would not help
    assert "lower rollout.max_new_tokens" not in msg
    with pytest.raises(ValueError, match="lower rollout.max_new_tokens"):
        check_prompt_lengths([200], context=256, max_new_tokens=64, dataset="d", model="m",
                             budget_key="rollout.max_new_tokens")


def test_lengths_are_the_generators_prompt_tokens(tiny_tokenizer, dirs):
    from opd.generation.hf import encode_prompts
    chats = [[{"role": "user", "content": "What is 1 + 2?"}], [{"role": "user", "content": LONG}]]
    lengths = prompt_lengths(tiny_tokenizer, chats)
    assert lengths == [len(ids) for ids in encode_prompts(tiny_tokenizer, chats)]
    assert lengths[1] > 300
    with pytest.raises(ValueError, match=rf"1 of 2 prompts .* longest prompt has {lengths[1]} tokens"):
        check_prompts_fit(tiny_tokenizer, chats, model_dir=dirs["student"], max_new_tokens=8,
                          dataset="x.parquet")
    assert check_prompts_fit(tiny_tokenizer, chats[:1], model_dir=dirs["student"],
                             max_new_tokens=8, dataset="x.parquet") == lengths[:1]


def test_teacher_rollout_stops_before_generating(dirs, tmp_path):
    from opd.stages.rollout import teacher_rollout
    prompts = tmp_path / "train.parquet"
    write_parquet(frame(["What is 1 + 2?", LONG]), prompts)
    rollouts = tmp_path / "rollouts.parquet"
    cfg = {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16}
    with pytest.raises(ValueError, match=re.escape(f"{prompts}: 1 of 2 prompts")):
        teacher_rollout(teacher=dirs["teacher"], prompts=str(prompts), rollout=cfg, seed=0,
                        rollouts=str(rollouts), stats=str(tmp_path / "stats.json"))
    assert not any(tmp_path.glob("rollouts*"))  # no checkpoint either: nothing was generated
    # the configured limit of the generation backend counts too
    write_parquet(frame(["What is 1 + 2?"]), prompts)
    with pytest.raises(ValueError, match=r"\(20 tokens\)"):
        teacher_rollout(teacher=dirs["teacher"], prompts=str(prompts), rollout=cfg, seed=0,
                        rollouts=str(rollouts), stats=str(tmp_path / "stats.json"),
                        backend={"backend": "hf", "options": {"max_model_len": 20}})


def test_eval_generate_stops_before_generating(dirs, tmp_path):
    from opd.stages.evaluate import eval_generate
    bench = tmp_path / "bench.parquet"
    write_parquet(frame(["What is 1 + 2?", "What is 2 + 2?"]), bench)
    gens = tmp_path / "gens.parquet"
    with pytest.raises(ValueError, match=r"bench.parquet: 2 of 2 prompts .*eval.max_new_tokens=250"):
        eval_generate(model=dirs["student"], benchmark=str(bench), seed=0, generations=str(gens),
                      eval={"n": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 250})
    assert not gens.exists()


def test_native_training_checks_student_and_teacher_context(dirs, tmp_path):
    from opd.train.config import TrainConfig
    from opd.train.native import run_train
    prompts = tmp_path / "train.parquet"
    write_parquet(frame(["What is 1 + 2?"]), prompts)
    cfg = TrainConfig.from_dict({"steps": 1, "prompts_per_step": 1, "n_samples": 2, "max_new_tokens": 60})
    # fits the student (256) but not the short-context teacher (64), which scores the same tokens
    with pytest.raises(ValueError, match=rf"prompts do not fit the context of model {re.escape(dirs['short'])} "
                                         r"\(64 tokens\) .*experiments.opd.train.max_new_tokens=60"):
        run_train(cfg=cfg, exp="opd", student=dirs["student"], teacher=dirs["short"],
                  prompts=str(prompts), checkpoints=str(tmp_path / "ck"),
                  metrics=str(tmp_path / "m" / "metrics.jsonl"), options={})
    write_parquet(frame([LONG]), prompts)
    grpo = TrainConfig.from_dict({"method": "grpo", "steps": 1, "prompts_per_step": 1,
                                  "n_samples": 2, "max_new_tokens": 8})
    with pytest.raises(ValueError, match=rf"do not fit the context of model {re.escape(dirs['student'])}"):
        run_train(cfg=grpo, exp="grpo", student=dirs["student"], teacher=None,
                  prompts=str(prompts), checkpoints=str(tmp_path / "ck"),
                  metrics=str(tmp_path / "m" / "metrics.jsonl"), options={})
    assert not (tmp_path / "ck").exists() and not (tmp_path / "m").exists()


def test_the_tiny_worlds_defaults_fit(tiny_tokenizer):
    """config/config.yaml's budgets with the tiny models' context and the world's problems."""
    from opd.world.problems import ProblemSpec, make_splits
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    spec = {k: cfg["world"]["problems"][k] for k in ("min_ops", "max_ops", "max_operand")}
    splits = make_splits(ProblemSpec(**spec), {"train": 300, "eval": 100}, seed=cfg["seed"])
    context = ModelSpec().max_position_embeddings
    for name in ("teacher", "student"):
        assert "max_position_embeddings" not in cfg["models"][name]["world"]["size"]
    for split, budget in (("train", cfg["rollout"]["max_new_tokens"]),
                          ("train", cfg["train_defaults"]["max_new_tokens"]),
                          ("eval", cfg["eval"]["max_new_tokens"])):
        chats = [[{"role": "user", "content": p.prompt}] for p in splits[split]]
        for thinking in (None, False):
            lengths = prompt_lengths(tiny_tokenizer, chats, thinking)
            check_prompt_lengths(lengths, context=context, max_new_tokens=budget, dataset=split,
                                 model="tiny")
    assert cfg["sft"]["max_len"] <= context


# -- SFT: what max_len drops or truncates is counted and logged -------------------------------

def test_sft_counts_dropped_and_truncated_examples(tiny_tokenizer, capsys):
    from opd.sft.native import encode_examples, fit_examples
    chat = [{"role": "user", "content": "What is 1 + 2?"}]
    long_chat = [{"role": "user", "content": LONG}]
    p = prompt_lengths(tiny_tokenizer, [chat])[0]
    short_resp = "3"  # 1 token + eos
    long_resp = "1 + 2 = 3. " * 10 + "The answer is \\boxed{3}."
    r_long = len(tiny_tokenizer(long_resp, add_special_tokens=False)["input_ids"]) + 1
    max_len = p + 10
    assert r_long > 10 and len(tiny_tokenizer(short_resp, add_special_tokens=False)["input_ids"]) + 1 <= 10
    prompts = [chat, chat, long_chat, chat, long_chat]
    responses = [short_resp, long_resp, short_resp, long_resp, long_resp]
    examples, counts = fit_examples(tiny_tokenizer, prompts, responses, max_len)
    assert counts == {"total": 5, "kept": 3, "truncated": 2, "dropped": 2}
    assert len(examples) == 3 and all(len(ids) <= max_len for ids, _ in examples)
    assert examples[1][0][-1] != tiny_tokenizer.eos_token_id  # a truncated example loses its eos
    assert examples[0][0][-1] == tiny_tokenizer.eos_token_id
    encode_examples(tiny_tokenizer, prompts, responses, max_len)
    assert (f"sft: max_len={max_len}: 3 of 5 examples kept, 2 truncated (response cut, no eos), "
            "2 dropped (prompt alone fills max_len)") in capsys.readouterr().out
    with pytest.raises(ValueError, match="max_len=8 .*all 2 prompts"):
        fit_examples(tiny_tokenizer, [chat, long_chat], ["3", "3"], 8)


def test_sft_cold_start_logs_counts_and_checks_the_students_context(dirs, tiny_tokenizer, tmp_path, capsys):
    from opd.sft.native import cold_start, fit_examples
    chat = [{"role": "user", "content": "What is 1 + 2?"}]
    rows = pd.DataFrame({"prompt": [chat, chat, [{"role": "user", "content": LONG}]],
                         "response": ["The answer is \\boxed{3}.", "1 + 2 = 3. " * 12 + "\\boxed{3}",
                                      "\\boxed{1050}"]})
    sft = {"lr": 1e-4, "batch_size": 2, "max_len": 300, "steps": 1}
    examples, _ = fit_examples(tiny_tokenizer, list(rows["prompt"]), list(rows["response"]), 300)
    longest = max(len(ids) for ids, _ in examples)
    assert 64 < longest < 300
    with pytest.raises(ValueError, match=rf"sft: 1 of 2 examples are longer than the context .*\(64 tokens; "
                                         rf"the longest has {longest}\).*sft.max_len to at most 64"):
        cold_start(student=dirs["short"], rows=rows, sft=sft, options={}, stack=None,
                   model=str(tmp_path / "model"), metrics=str(tmp_path / "metrics.jsonl"), seed=0)
    assert ("sft: max_len=300: 2 of 3 examples kept, 0 truncated (response cut, no eos), 1 dropped"
            in capsys.readouterr().out)
    assert not (tmp_path / "metrics.jsonl").exists()
    # with room in the context it trains, and the job log has the counts
    cold_start(student=dirs["student"], rows=rows, sft=sft | {"max_len": 40}, options={}, stack=None,
               model=str(tmp_path / "model"), metrics=str(tmp_path / "metrics.jsonl"), seed=0)
    assert "sft: max_len=40: 2 of 3 examples kept, 1 truncated" in capsys.readouterr().out
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "model" / "config.json").exists()
