"""Inputs issue 20 found accepted without a word, each now refused with an error naming the key
(or warned about, with what happens): non-finite numbers, claims naming missing or non-OPD
experiments, a key under ``claims:`` that nothing reads, C4's own experiment, and more prompts per
step than the training set has. Config-level checks here; one real ``snakemake -n`` shows the
message reaches the user before any job is planned."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from opd.checks import training_warnings
from opd.claims import evaluate_claims
from opd.config import ConfigError, check_config
from opd.config_files import load_config_file, prepare_config
from opd.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def base():
    return copy.deepcopy(BASE)


# ------------------------------------------------------------------------ non-finite numbers


@pytest.mark.parametrize("key,text", [("lr", ".inf"), ("grad_clip", ".nan"), ("lr", "-.inf")])
def test_a_non_finite_number_is_an_error_naming_the_key(tmp_path, key, text):
    path = tmp_path / "bad.yaml"
    path.write_text(f"train_defaults:\n  {key}: {text}\n")
    override = load_config_file(path)            # YAML reads .inf / .nan as floats
    cfg = base()
    cfg["train_defaults"].update(override["train_defaults"])
    with pytest.raises(ConfigError, match=rf"^train_defaults\.{key}: -?(inf|nan) is not a finite number"):
        prepare_config(cfg, SCHEMA)


def test_non_finite_numbers_are_found_anywhere_and_all_named():
    cfg = base()
    cfg["experiments"]["opd"]["train"] = {"objective": {"kl_loss_coef": float("nan")}}
    cfg["data"]["benchmarks"]["tiny_eval"]["extra"] = [1.0, float("inf")]
    with pytest.raises(ConfigError) as err:
        prepare_config(cfg, SCHEMA)
    assert "experiments.opd.train.objective.kl_loss_coef: nan" in str(err.value)
    assert "data.benchmarks.tiny_eval.extra[1]: inf" in str(err.value)


def dry_run(tmp_path, override: str):
    path = tmp_path / "override.yaml"
    path.write_text(override)
    return subprocess.run([SNAKEMAKE, "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                           "--cores", "1", "--configfile", str(ROOT / "config" / "config.yaml"), str(path)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_the_dry_run_stops_on_a_non_finite_number(tmp_path):
    out = dry_run(tmp_path, "train_defaults:\n  lr: .inf\n")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "train_defaults.lr: inf is not a finite number" in text
    assert "rule " not in text                   # stopped before any job was planned


# ------------------------------------------------------------------------ claims


def test_a_claim_naming_a_missing_experiment_is_refused():
    cfg = base()
    cfg["claims"]["C1"] = {"experiment": "nonexistent"}
    with pytest.raises(ConfigError, match=r"^claims\.C1\.experiment: unknown experiment 'nonexistent'"):
        check_config(cfg)
    cfg = base()
    cfg["claims"]["C6"]["random"] = "opd_randm"
    with pytest.raises(ConfigError, match=r"^claims\.C6\.random: unknown experiment 'opd_randm'"):
        check_config(cfg)


def test_a_claim_naming_a_grpo_experiment_is_refused():
    cfg = base()
    cfg["claims"]["C4"] = {"experiment": "grpo"}
    with pytest.raises(ConfigError, match=r"^claims\.C4\.experiment: experiment 'grpo' has method 'grpo'"):
        check_config(cfg)


def test_every_claims_key_is_read_so_random_belongs_to_c6_only():
    cfg = base()
    validate(cfg, str(SCHEMA))
    cfg["claims"]["C1"] = {"experiment": "opd", "random": "opd_random"}   # nothing reads C1.random
    with pytest.raises(Exception, match="random"):
        validate(cfg, str(SCHEMA))
    cfg = base()
    cfg["claims"]["C6"] = {"experiment": "opd_aligned"}                  # C6 without its control
    with pytest.raises(Exception, match="random"):
        validate(cfg, str(SCHEMA))


def _rising(start, step, n=20):
    return [{"opd/overlap_ratio": start + step * i, "opd/student_mass_shared": 0.99} for i in range(n)]


def test_c4_uses_its_own_experiment():
    """C4 measures the overlap rise of ``claims.C4.experiment``, not C1's."""
    experiments = {"opd": {"student": "s", "teacher": "t"}, "other": {"student": "s", "teacher": "t"}}
    grades = {"s": {"mean_score": 0.3}, "t": {"mean_score": 0.9}, "opd.step0010": {"mean_score": 0.7},
              "other.step0010": {"mean_score": 0.7}}
    metrics = {"opd": _rising(0.5, -0.01), "other": _rising(0.5, 0.01)}   # C1's falls, C4's rises
    rows = {r["claim"]: r for r in evaluate_claims({"C1": {"experiment": "opd"}, "C4": {"experiment": "other"}},
                                                   experiments, grades, metrics)}
    assert rows["C4"]["experiments"] == "other" and rows["C4"]["holds"] is True
    assert rows["C4"]["value"] == pytest.approx(0.01 * 18)
    rows = {r["claim"]: r for r in evaluate_claims({"C1": {"experiment": "opd"}, "C4": {"experiment": "opd"}},
                                                   experiments, grades, metrics)}
    assert rows["C4"]["experiments"] == "opd" and rows["C4"]["holds"] is False
    rows = {r["claim"]: r for r in evaluate_claims({"C1": {"experiment": "opd"}}, experiments, grades, metrics)}
    assert rows["C4"]["holds"] == "" and rows["C4"]["detail"].startswith("not run")   # left out: not run


# ------------------------------------------------------------------------ prompts per step


def test_more_prompts_per_step_than_prompts_is_a_warning_that_says_what_happens():
    cfg = base()
    assert not [w for w in training_warnings(cfg) if "prompts_per_step" in w]
    n = cfg["world"]["problems"]["sizes"]["train"]
    cfg["train_defaults"]["prompts_per_step"] = 100000
    check_config(cfg)                            # legal: the trainer repeats prompts
    warnings = [w for w in training_warnings(cfg) if "prompts_per_step" in w]
    assert any(w.startswith(f"train_defaults.prompts_per_step = 100000 exceeds the {n} training prompts "
                            "of experiment 'opd'") and "repeats prompts" in w for w in warnings)
    # an experiment's own setting is named as its own key; grpo sets 16, within the set
    cfg["experiments"]["opd"]["train"] = {"prompts_per_step": 5000}
    warnings = [w for w in training_warnings(cfg) if "prompts_per_step" in w]
    assert any(w.startswith("experiments.opd.train.prompts_per_step = 5000") for w in warnings)
    assert not any("experiment 'grpo'" in w for w in warnings)


def test_the_dry_run_warns_about_more_prompts_per_step_than_prompts(tmp_path):
    out = dry_run(tmp_path, "train_defaults:\n  prompts_per_step: 100000\n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Warning: train_defaults.prompts_per_step = 100000 exceeds the 1200 training prompts" in out.stdout + out.stderr


# ------------------------------------------------------------------------ GRPO's objective


def test_grpo_gets_its_objective_and_a_contradicting_one_is_refused_not_rewritten():
    assert TrainConfig.from_dict({"method": "grpo"}).objective.adv_estimator == "grpo"
    assert TrainConfig.from_dict({"method": "grpo"}).objective.top_k == 0
    with pytest.raises(ValueError, match="method grpo .* needs objective"):
        TrainConfig.from_dict({"method": "grpo", "objective": {"top_k": 16, "adv_estimator": "grpo"}})
    cfg = base()
    del cfg["experiments"]["grpo"]["train"]["objective"]       # would inherit train_defaults' OPD objective
    with pytest.raises(ConfigError, match=r"^experiments\.grpo\.train: method grpo .*adv_estimator: grpo"):
        check_config(cfg)


def test_an_experiments_training_config_is_parsed_once(monkeypatch):
    """The DAG asks for checkpoint steps once per job and check; the TrainConfig behind them is
    built once per distinct resolved config (opd.experiments.train_config)."""
    from opd.experiments import checkpoint_steps, train_config

    built = []
    init = TrainConfig.__post_init__
    monkeypatch.setattr(TrainConfig, "__post_init__", lambda self: (built.append(1), init(self)))
    cfg = base()
    cfg["train_defaults"]["lr"] = 1.2345e-4          # a resolved config no other test parsed
    steps = checkpoint_steps(cfg, "opd")
    for _ in range(4):
        assert checkpoint_steps(cfg, "opd") == steps
    assert train_config(cfg, "opd") is train_config(cfg, "opd") and len(built) == 1
