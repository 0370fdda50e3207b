"""The TRL train backend without TRL: the key mapping, the refusals, the DAG-time check, and what
the train rule does around a TRL run (checkpoints and metrics into the native layout), on runner
outputs written here by hand in the runner's format. tests/test_trl_run.py runs TRL itself."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from conftest import ROOT
from opd import backends
from opd.errors import ConfigError
from opd.experiments import experiment_config
from opd.io import read_jsonl
from opd.train.config import TrainConfig
from opd.train.trl import plan as trl_plan
from opd.train.trl.run import METRIC_NAMES, collect_checkpoints, convert_metrics, rollout_metrics

CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
# these tests map the paper's objectives; the default world adds the tail bucket (beyond the
# paper), which this backend refuses (a test below says so)
CONFIG["train_defaults"]["objective"]["tail_bucket"] = False
V = CONFIG["world"]["tokenizer"]["vocab_size"]
PATHS = {k: f"/x/{k}" for k in ("student", "teacher", "prompts", "work", "saves", "log", "rollouts")}


def train_cfg(train=None, **objective) -> TrainConfig:
    cfg = copy.deepcopy(experiment_config(CONFIG, "opd"))
    cfg["mini_batch_size"] = None                  # one update a step: what TRL can run
    cfg.update(train or {})
    cfg["objective"].update(objective)
    return TrainConfig.from_dict(cfg)


def with_trl(**objective) -> dict:
    cfg = copy.deepcopy(CONFIG)
    cfg["backends"]["train"] = "trl"
    cfg["train_defaults"]["mini_batch_size"] = None  # one update a step: what TRL can run
    cfg["train_defaults"]["objective"].update(objective)
    return cfg


def test_registered_beside_native_and_verl():
    assert backends.names("train") == ["native", "trl", "verl"]
    b = backends.get("train", "trl")
    assert b.stack.default_path == ".venv-trl/bin/python" and b.stack.make_target == "env-trl"
    assert b.gpus({}, "opd") == 0 and b.gpus({"gpus": 1}, "opd") == 1


def test_full_vocabulary_maps_to_distillation_trainer():
    cfg = train_cfg({"lr": 3e-4, "steps": 7, "grad_clip": 0.5, "seed": 3, "adam_eps": 1e-7}, top_k=V)
    plan = trl_plan.make_plan(cfg, trl_plan.check_supported(cfg, V), PATHS)
    a = plan["args"]
    assert plan["trainer"] == "full_vocab" and plan["trainer_class"] == "trl.DistillationTrainer"
    assert (a["beta"], a["learning_rate"], a["max_steps"], a["max_grad_norm"], a["seed"]) == (1.0, 3e-4, 7, 0.5, 3)
    assert cfg.lr_warmup_steps > 0       # the default's warm-up (tests/test_lr_warmup.py: without one)
    assert (a["lr_scheduler_type"], a["warmup_steps"], a["adam_epsilon"]) == ("constant_with_warmup",
                                                                              cfg.lr_warmup_steps, 1e-7)
    assert (a["temperature"], a["top_p"], a["top_k"]) == (1.0, 1.0, 0)
    assert a["max_completion_length"] == cfg.max_new_tokens
    assert a["per_device_train_batch_size"] * a["gradient_accumulation_steps"] == 32 * 2
    assert (plan["prompts_per_step"], plan["n_samples"]) == (32, 2)
    assert plan["checkpoint_steps"] == cfg.checkpoint_steps()
    assert a["use_cpu"] and not a["bf16"] and not a["gradient_checkpointing"]   # TRL's defaults differ
    json.dumps(plan)  # the runner reads it as JSON


def test_sampled_token_maps_to_iw_opd_at_gamma_zero():
    cfg = train_cfg({"n_samples": 4, "prompts_per_step": 8, "micro_batch_size": 16}, top_k=0)
    plan = trl_plan.make_plan(cfg, trl_plan.check_supported(cfg, None), PATHS, {"gpus": 1})
    a = plan["args"]
    assert plan["trainer_class"] == "trl.experimental.iw_opd.IWOPDTrainer"
    assert (a["distillation_objective"], a["iw_opd_gamma"], a["lmbda"]) == ("iw_opd", 0.0, 1.0)
    assert a["num_generations"] == 4
    assert (a["per_device_train_batch_size"], a["gradient_accumulation_steps"]) == (16, 2)
    assert not a["use_cpu"]


def test_thinking_switch_reaches_the_chat_template():
    cfg = train_cfg({"enable_thinking": False}, top_k=V)
    assert trl_plan.trainer_args(cfg, "full_vocab", {}, "/w")["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.parametrize("train, objective, key", [
    ({}, {"top_k": 16}, "objective.top_k=16 is a top-k strategy"),
    ({}, {"top_k": V, "weight_mode": "teacher_p"}, "objective.weight_mode='teacher_p'"),
    ({}, {"top_k": V, "strategy": "union-intersection"}, "union-intersection"),
    ({}, {"top_k": 0, "student_temperature": 0.7}, "student_temperature=0.7 != teacher_temperature"),
    ({}, {"top_k": 0, "adv_estimator": "token_reward_direct_plus_grpo"}, "adv_estimator"),
    ({}, {"top_k": 0, "loss_agg_mode": "seq-mean-token-mean"}, "loss_agg_mode"),
    ({}, {"top_k": 0, "use_kl_loss": True, "kl_loss_coef": 0.1}, "use_kl_loss"),
    ({}, {"top_k": V, "tail_bucket": True}, "tail_bucket"),
    ({"ppo_epochs": 2}, {"top_k": 0}, "ppo_epochs=2"),
    ({"mini_batch_size": 16}, {"top_k": 0}, "mini_batch_size=16"),
    ({"micro_batch_size": 24}, {"top_k": 0}, "micro_batch_size=24 must divide"),
    ({"teacher_prompt": "own"}, {"top_k": 0}, "teacher_prompt: own"),
])
def test_refusals_name_the_key_and_the_native_backend(train, objective, key):
    with pytest.raises(trl_plan.UnsupportedByTRL, match="backends.train: native") as err:
        trl_plan.check_supported(train_cfg(train, **objective), V)
    assert key in str(err.value)


@pytest.mark.parametrize("mini", [None, 64, 128])
def test_a_mini_batch_of_the_whole_batch_or_more_is_one_update_and_accepted(mini):
    trl_plan.check_supported(train_cfg({"mini_batch_size": mini}, top_k=0), V)   # 32 prompts x 2


def test_grpo_and_unknown_vocabulary_are_refused():
    grpo = TrainConfig.from_dict(experiment_config(CONFIG, "grpo"))
    with pytest.raises(trl_plan.UnsupportedByTRL, match="method 'grpo'.*OPD only"):
        trl_plan.check_supported(grpo, V)
    with pytest.raises(trl_plan.UnsupportedByTRL, match="unknown here"):
        trl_plan.check_supported(train_cfg(top_k=V), None)


def test_every_problem_is_listed_at_once():
    problems = trl_plan.refusals(train_cfg({"ppo_epochs": 2}, top_k=16, tail_bucket=True), V)
    assert len(problems) == 3 and problems[0].startswith("objective.top_k=16")


def test_dag_check_refuses_the_default_top_k_before_any_job():
    with pytest.raises(ConfigError, match=r"experiments.opd.backends.train: trl: TRL backend: objective.top_k=16 "
                                          r"is a top-k strategy .* use backends.train: native"):
        backends.check_backends(with_trl(), using_conda=True)
    trl_exps = {"opd": CONFIG["experiments"]["opd"]}   # the default's GRPO experiment is refused too
    for objective in ({"top_k": V}, {"top_k": 0}):
        backends.check_backends(dict(with_trl(**objective), experiments=trl_exps), using_conda=True)


def test_missing_stack_names_make_target():
    cfg = dict(with_trl(top_k=0), experiments={"opd": CONFIG["experiments"]["opd"]},
               stacks={"trl": "/nonexistent/python"})
    with pytest.raises(ConfigError, match="make env-trl"):
        backends.check_backends(cfg, using_conda=False)


# ----------------------------------------------------------------------- around the run


def test_metrics_take_the_projects_names(tmp_path, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    answer = tiny_tokenizer("\\boxed{7}", add_special_tokens=False)["input_ids"]
    rollouts = [{"step": 1, "row": 0, "response_ids": answer + [eos], "finish_reason": "stop"},
                {"step": 1, "row": 1, "response_ids": answer, "finish_reason": "length"},
                {"step": 2, "row": 1, "response_ids": answer + [eos], "finish_reason": "stop"}]
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    rows = [{"ground_truth": "7"}, {"ground_truth": "8"}]
    stats = rollout_metrics(tmp_path / "rollouts.jsonl", rows, tiny_tokenizer)
    n = len(answer)
    assert stats[1] == {"rollout/accuracy": 0.5, "rollout/mean_length": n + 0.5, "rollout/clip_ratio": 0.5}
    assert stats[2]["rollout/accuracy"] == 0.0
    log = [{"step": 1, "loss": 0.3, "grad_norm": 1.5, "learning_rate": 1e-4, "entropy": 2.0,
            "completions/mean_length": 9.0}, {"step": 2, "loss": 0.2, "iw_opd/mean_advantage": -0.1}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert convert_metrics(tmp_path / "log.jsonl", stats, tmp_path / "metrics.jsonl") == 2
    first, second = read_jsonl(tmp_path / "metrics.jsonl")
    assert first["step"] == 1 and first["train/loss"] == 0.3 and first["train/grad_norm"] == 1.5
    assert first["opd/student_entropy"] == 2.0 and first["trl/completions/mean_length"] == 9.0
    assert first["rollout/accuracy"] == 0.5 and second["train/advantage_mean"] == -0.1
    assert set(METRIC_NAMES.values()) >= {"train/loss", "train/grad_norm", "train/lr"}


def test_checkpoints_land_where_the_native_trainer_puts_them(tmp_path, tiny_models, tiny_tokenizer):
    student, _ = tiny_models
    student_dir, saves = tmp_path / "student", tmp_path / "saves"
    student.save_pretrained(student_dir)
    tiny_tokenizer.save_pretrained(student_dir)
    student.save_pretrained(saves / "step_0002")
    with pytest.raises(FileNotFoundError, match=r"steps \[4\]"):
        collect_checkpoints(saves, [2, 4], student_dir, tmp_path / "checkpoints")
    student.save_pretrained(saves / "step_0004")
    collect_checkpoints(saves, [2, 4], student_dir, tmp_path / "checkpoints")
    out = tmp_path / "checkpoints"
    assert sorted(p.name for p in out.iterdir()) == ["step_0002", "step_0004"]
    assert (out / "step_0004" / "tokenizer.json").read_bytes() == (student_dir / "tokenizer.json").read_bytes()
