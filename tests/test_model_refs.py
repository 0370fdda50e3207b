"""Models from experiments (``models.<name>: {from_experiment, step}``): the DAG-time checks
(unknown experiment, a step it does not save, cycles), the vocabulary they inherit, the stage
that exports a checkpoint, and the edge in Snakemake's DAG (real dry runs)."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from opd.config import ConfigError, check_config
from opd.experiments import experiment_config, step_of
from opd.model_refs import root_model, thinking_of

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
DEFAULT = ROOT / "config" / "config.yaml"


@pytest.fixture
def cfg():
    return yaml.safe_load(DEFAULT.read_text())


def test_default_config_uses_a_model_from_an_experiment(cfg):
    assert cfg["models"]["grpo_student"] == {"from_experiment": "grpo", "step": "final"}
    assert step_of(cfg, "grpo_student") == 60
    assert root_model(cfg, "grpo_student") == "student"
    check_config(cfg)


def test_unknown_experiment_and_step_are_refused(cfg):
    bad = copy.deepcopy(cfg)
    bad["models"]["grpo_student"]["from_experiment"] = "grpo_long"
    with pytest.raises(ConfigError, match=r"models\.grpo_student\.from_experiment: unknown experiment 'grpo_long'"):
        check_config(bad)
    bad = copy.deepcopy(cfg)
    bad["models"]["grpo_student"]["step"] = 40
    with pytest.raises(ConfigError, match=r"models\.grpo_student\.step: experiment 'grpo' saves checkpoints "
                                          r"at steps \[30, 60\], not 40"):
        check_config(bad)
    good = copy.deepcopy(cfg)
    good["models"]["grpo_student"]["step"] = 30
    check_config(good)
    assert step_of(good, "grpo_student") == 30


def test_an_override_file_switches_a_model_from_an_experiment_to_a_path(cfg, tmp_path):
    """The authors' released checkpoint instead of the run: a later file's `path` replaces
    `from_experiment` (opd.config_files); a `step` left behind is refused unless set to null."""
    from opd.config_files import prepare_config
    from opd.config import check_model_refs

    override = {"models": {"grpo_student": {"path": str(tmp_path), "step": None}}}
    merged = copy.deepcopy(cfg)
    merged["models"]["grpo_student"].update(override["models"]["grpo_student"])
    prepare_config(merged, ROOT / "config" / "schema.yaml", [("config.yaml", cfg), ("override.yaml", override)])
    assert merged["models"]["grpo_student"] == {"path": str(tmp_path), "step": None}
    check_model_refs(merged)
    merged["models"]["grpo_student"]["step"] = 20
    with pytest.raises(ConfigError, match=r"models\.grpo_student\.step: only a model with `from_experiment` has a step"):
        check_model_refs(merged)


def test_cycles_are_refused_naming_them(cfg):
    own = copy.deepcopy(cfg)                       # an experiment that trains its own result
    own["experiments"]["grpo"]["student"] = "grpo_student"
    with pytest.raises(ConfigError, match=r"a cycle of models from experiments \(grpo -> grpo\)"):
        check_config(own)
    two = copy.deepcopy(cfg)                       # grpo's student comes from opd, opd's teacher from grpo
    two["models"]["opd_student"] = {"from_experiment": "opd", "step": "final"}
    two["experiments"]["grpo"]["student"] = "opd_student"
    two["experiments"]["opd"]["teacher"] = "grpo_student"
    with pytest.raises(ConfigError, match=r"cycle of models from experiments \((opd -> grpo -> opd|grpo -> opd -> grpo)\)"):
        check_config(two)


def test_chains_inherit_thinking_and_vocabulary(cfg, tmp_path):
    from opd.checks import check_models

    chain = copy.deepcopy(cfg)
    chain["models"]["student"]["enable_thinking"] = False
    chain["models"]["opd_result"] = {"from_experiment": "opd_grpo_teacher"}
    chain["experiments"]["opd_grpo_teacher"]["student"] = "grpo_student"   # a chain of two runs
    chain["experiments"]["opd"]["teacher"] = "opd_result"
    assert root_model(chain, "opd_result") == "student"
    assert thinking_of(chain, "opd_result") is False
    assert experiment_config(chain, "opd_grpo_teacher")["enable_thinking"] is False
    chain["experiments"]["grpo"]["train"]["enable_thinking"] = True     # what the source trained with
    assert thinking_of(chain, "grpo_student") is True
    check_config(chain)
    # a student whose root is a tiny-world model cannot be taught by a path model of another vocabulary
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"vocab_size": 1000}))
    (other / "model.safetensors").touch()
    chain["models"]["big"] = {"path": str(other)}
    chain["experiments"]["opd"]["teacher"] = "big"
    chain["experiments"]["opd"]["student"] = "opd_result"
    with pytest.raises(ConfigError, match=r"experiments\.opd\.teacher: teacher 'big' and student 'opd_result' "
                                          r"do not share a vocabulary"):
        check_models(chain)


def test_stage_exports_a_checkpoint_by_hard_links(tmp_path):
    from opd.stages.models import model_from_experiment

    step = tmp_path / "checkpoints" / "step_0020"
    step.mkdir(parents=True)
    (step / "config.json").write_text("{}")
    (step / "model.safetensors").write_bytes(b"weights")
    model_from_experiment(checkpoints=str(tmp_path / "checkpoints"), step=20, model=str(tmp_path / "m"))
    out = tmp_path / "m" / "model.safetensors"
    assert out.read_bytes() == b"weights" and out.stat().st_ino == (step / "model.safetensors").stat().st_ino
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 40; the experiment saves \['step_0020'\]"):
        model_from_experiment(checkpoints=str(tmp_path / "checkpoints"), step=40, model=str(tmp_path / "m2"))


# ------------------------------------------------------------------------ real dry runs


def snakemake(workdir, override: dict | None, *args, check=True):
    configs = [str(DEFAULT)]
    if override is not None:
        path = Path(workdir) / "override.yaml"
        path.write_text(yaml.safe_dump(override))
        configs.append(str(path))
    out = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
                          "--configfile", *configs, *args], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


@pytest.mark.parametrize("override, message", [
    ({"models": {"grpo_student": {"step": 25}}},
     "models.grpo_student.step: experiment 'grpo' saves checkpoints at steps [30, 60], not 25"),
    ({"models": {"grpo_student": {"from_experiment": "nosuch"}}},
     "models.grpo_student.from_experiment: unknown experiment 'nosuch'"),
    ({"experiments": {"grpo": {"student": "grpo_student"}}}, "a cycle of models from experiments (grpo -> grpo)"),
    ({"models": {"grpo_student": {"step": "last"}}}, "'last' is not valid under any of the given schemas"),
    ({"models": {"teacher": {"from_experiment": "grpo", "path": "/x"}}}, "and `from_experiment` are both set in"),
])
def test_bad_model_refs_stop_before_any_job(tmp_path, override, message):
    out = snakemake(tmp_path, override, "-n", check=False)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_dag_carries_the_edge(tmp_path):
    """train(grpo) -> model_from_experiment(grpo_student) -> train, eval and probes of the OPD run
    it teaches; the run trains on its own prompt set."""
    dot = snakemake(tmp_path, None, "--dag").stdout
    labels = {i: s.replace("\\n", " ") for i, s in re.findall(r"^\s*(\d+)\[label = \"([^\"]*)\"", dot, re.M)}
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}
    assert ("train exp: grpo", "model_from_experiment from_model: grpo_student") in edges
    after = {b for a, b in edges if a == "model_from_experiment from_model: grpo_student"}
    assert {"train exp: opd_grpo_teacher", "eval_generate model: grpo_student"} <= after
    assert not any(b.startswith("train exp: opd_grpo_teacher") for a, b in edges if a == "dedup_train")
    assert ("dedup_prompt_set prompt_set: opd_grpo_teacher", "train exp: opd_grpo_teacher") in edges
    # and the target of one experiment pulls in the other's training
    out = snakemake(tmp_path, None, "-n", "--quiet", "rules", "--", "results/train/opd_grpo_teacher/metrics.jsonl")
    jobs = dict(line.split() for line in out.stdout.splitlines()
                if len(line.split()) == 2 and line.split()[1].isdigit())
    assert jobs["train"] == "2" and jobs["model_from_experiment"] == "1" and jobs["dedup_prompt_set"] == "1"
