"""Backend choice (config ``backends:``), stack lookup and GPU requests, on real configs."""
from __future__ import annotations

import copy
import sys

import pytest
import yaml

from opd import backends as choice
from opd.config import ConfigError
from conftest import ROOT


@pytest.fixture()
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_defaults_are_the_cpu_backends(config):
    config.pop("backends")
    assert [choice.backend(config, s) for s in ("generation", "sft", "train")] == ["hf", "native", "native"]
    assert choice.backend_params(config, "generation") == {"backend": "hf", "options": {}}
    assert choice.env_file(config, "train", "opd") == "../envs/core.yaml"


def test_per_experiment_backend_overrides_the_global_one(config):
    config["backends"]["train"] = "verl"
    config["experiments"]["grpo"]["backends"] = {"train": "native"}
    assert choice.backend(config, "train", "opd") == "verl"
    assert choice.backend(config, "train", "grpo") == "native"
    assert choice.env_file(config, "train", "opd") == "../envs/verl.yaml"
    # generation is global: an experiment cannot override it
    config["experiments"]["opd"]["backends"] = {"sft": "llamafactory"}
    assert choice.backend(config, "generation", "opd") == "hf"
    assert choice.backend(config, "sft", "opd") == "llamafactory"


def test_backend_params_carry_the_options_of_the_chosen_backend_only(config):
    config["backends"]["generation"] = "vllm"
    params = choice.backend_params(config, "generation")
    assert params["backend"] == "vllm" and params["options"]["dtype"] == "float32"
    config["backends"]["generation"] = "hf"
    assert choice.backend_params(config, "generation") == {"backend": "hf", "options": {}}


def test_gpus_follow_the_backend(config):
    assert choice.gpus(config, "eval_generate") == 0
    assert choice.gpus(config, "train", "opd") == 0
    config["backends"].update(generation="vllm", train="verl", sft="llamafactory")
    config["backends"]["vllm"]["tensor_parallel_size"] = 2
    config["backends"]["verl"] = {"n_gpus_per_node": 4, "teacher_n_gpus_per_node": 2}
    config["backends"]["llamafactory"] = {"use_cpu": False, "gpus": 8}
    assert choice.gpus(config, "eval_generate") == 2
    assert choice.gpus(config, "teacher_rollout") == 2
    assert choice.gpus(config, "grade") == 0          # no verifier model
    assert choice.gpus(config, "train", "opd") == 6   # actor + teacher
    assert choice.gpus(config, "train", "grpo") == 4  # no teacher
    assert choice.gpus(config, "sft_cold_start", "opd_coldstart") == 8
    assert choice.gpus(config, "dedup_train") == 0


def test_missing_stack_names_the_make_target(config, tmp_path):
    config["backends"]["generation"] = "vllm"
    config["stacks"]["vllm"] = str(tmp_path / "no-such-python")
    with pytest.raises(ConfigError, match=r"stacks\.vllm.*make env-vllm.*--sdm conda"):
        choice.check_backends(config, using_conda=False)
    choice.check_backends(copy.deepcopy(config), using_conda=True)  # the conda env provides it


def test_unused_stacks_are_not_required(config, tmp_path):
    config["stacks"] = {k: str(tmp_path / k) for k in ("vllm", "llamafactory", "verl")}
    choice.check_backends(config, using_conda=False)


def test_resolve_stack_prefers_the_configured_path_then_the_current_env(tmp_path):
    assert choice.resolve_stack(sys.executable, "vllm") == sys.executable
    # the core env has no vLLM of its own, so a missing path is an error that names the fix
    assert __import__("importlib").util.find_spec("vllm") is None
    with pytest.raises(choice.StackMissing, match="make env-vllm"):
        choice.resolve_stack(str(tmp_path / "nope"), "vllm")


def test_verl_refusal_stops_the_dag_before_any_job(config):
    config["backends"]["train"] = "verl"
    config["stacks"]["verl"] = sys.executable
    config["train_defaults"]["objective"]["strategy"] = "union"
    with pytest.raises(ConfigError, match=r"experiments\.opd\.backends\.train: verl"):
        choice.check_backends(config, using_conda=False)
