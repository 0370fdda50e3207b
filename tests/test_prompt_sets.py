"""Prompt sets: an experiment's own training set (``experiments.<exp>.data``), the cold-start
prompts (``rollout.source``), and the selection reference deduplicated against the training
set (paper section 5.2), on real parquet files and in real dry runs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, SHARED_DATA, questions_frame
from opd.config import ConfigError
from opd.experiments import prompt_set

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
DEFAULT = ROOT / "config" / "config.yaml"


def test_prompt_set_names_only_other_sources():
    cfg = yaml.safe_load(DEFAULT.read_text())
    assert prompt_set(cfg, "opd") is None
    assert prompt_set(cfg, "opd_grpo_teacher") == "opd_grpo_teacher"     # world:heldout
    # C6's two experiments train on one source (world:pool): one set, named after the first
    assert prompt_set(cfg, "opd_aligned") == prompt_set(cfg, "opd_random") == "opd_aligned"
    cfg["experiments"]["opd"]["data"] = {"source": "world:train"}       # the default set, restated
    assert prompt_set(cfg, "opd") is None
    cfg["experiments"]["opd"]["data"] = {"source": "world:train", "prompt_style": "paper"}
    assert prompt_set(cfg, "opd") == "opd"


def test_user_files_of_sets_are_checked_before_any_job(tmp_path):
    from opd.checks import check_data

    cfg = yaml.safe_load(DEFAULT.read_text())
    cfg["experiments"]["opd"]["data"] = {"source": str(tmp_path / "mine.parquet")}
    with pytest.raises(ConfigError, match=r"experiments\.opd\.data\.source: .*mine\.parquet: file not found"):
        check_data(cfg)
    questions_frame("mine", ["What is 1?"]).to_parquet(tmp_path / "mine.parquet")
    check_data(cfg)
    cfg["rollout"]["source"] = {"source": str(tmp_path / "cold.parquet")}
    with pytest.raises(ConfigError, match=r"rollout\.source\.source: .*cold\.parquet: file not found"):
        check_data(cfg)
    cfg["data"]["selection"]["dedup"]["encoder"] = str(tmp_path / "nowhere")
    cfg["rollout"]["source"] = None
    with pytest.raises(ConfigError, match=r"data\.selection\.dedup\.encoder: .*nowhere: no local sentence"):
        check_data(cfg)


def dag(workdir, override: dict) -> tuple[set, str]:
    path = Path(workdir) / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    base = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
            "--configfile", str(DEFAULT), str(path)]
    outs = [subprocess.run(base + [flag], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            for flag in ("--dag", "-n")]
    for out in outs:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    dot = outs[0].stdout
    labels = {i: s.replace("\\n", " ") for i, s in re.findall(r"^\s*(\d+)\[label = \"([^\"]*)\"", dot, re.M)}
    return {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}, outs[1].stdout


def test_each_set_is_deduplicated_and_selected_apart(tmp_path):
    experiments = yaml.safe_load(DEFAULT.read_text())["experiments"]
    # the other experiments that select from the default set (C6's random control) take it all
    override = {e: {"prompts": "all"} for e, x in experiments.items()
                if e != "opd_aligned" and x.get("prompts", "all") != "all"}
    # a source no other experiment trains on (opd_grpo_teacher's world:heldout, restyled)
    override["opd_aligned"] = {"data": {"source": "world:heldout", "prompt_style": "paper"}}
    cold = {x["teacher"] for x in experiments.values() if x.get("cold_start")}
    edges, plan = dag(tmp_path, {"experiments": override,
                                 "rollout": {"source": {"source": "world:heldout", "prompt_style": "keep"}}})
    # (a --dag label names only the wildcards a job adds to those of its inputs)
    s = "dedup_prompt_set prompt_set: opd_aligned"
    assert {("prepare_benchmark bench: tiny_eval", s), (s, "dedup_reference_set"),
            ("dedup_reference_set", "select_prompt_set"), ("select_prompt_set", "train exp: opd_aligned"),
            ("dedup_train", "train exp: opd"),
            ("prepare_benchmark bench: tiny_eval", "dedup_rollout_prompts")} <= edges
    assert cold and {("dedup_rollout_prompts", f"teacher_rollout teacher: {t}") for t in cold} <= edges
    # the default set's selection is not needed any more; the rollout no longer reads data.train
    assert not any("select_prompts" in (a, b) or "dedup_reference" in (a, b) for a, b in edges)
    assert not any(a == "dedup_train" and b.startswith("teacher_rollout") for a, b in edges)
    assert "results/data/sets/opd_aligned/selected.parquet" in plan
    assert "results/data/rollout_prompts.parquet" in plan
    assert "results/data/reference.parquet" not in plan   # only the set that selects needs a reference


def test_random_prompts_are_the_selections_control(tmp_path):
    """``prompts: random`` trains on random_prompts.parquet, written by the selection's own rule
    (so its size is the selection's), and like ``selected`` needs a data.selection section."""
    edges, plan = dag(tmp_path, {"experiments": {"opd": {"prompts": "random"},
                                                 "opd_grpo_teacher": {"prompts": "random"}}})
    s = "dedup_prompt_set prompt_set: opd_grpo_teacher"
    assert {("dedup_train", "dedup_reference"), ("dedup_reference", "select_prompts"),
            ("select_prompts", "train exp: opd"), (s, "dedup_reference_set"),
            ("dedup_reference_set", "select_prompt_set"),
            ("select_prompt_set", "train exp: opd_grpo_teacher")} <= edges
    assert "results/data/random_prompts.parquet" in plan
    assert "results/data/sets/opd_grpo_teacher/random_prompts.parquet" in plan
    from opd.config import check_config

    cfg = yaml.safe_load(DEFAULT.read_text())
    del cfg["data"]["selection"]
    for exp in cfg["experiments"].values():
        exp["prompts"] = "random"
    with pytest.raises(ConfigError, match=r"experiments\.\w+\.prompts: 'random' needs a data\.selection section"):
        check_config(cfg)


@pytest.fixture(scope="module")
def dapo():
    path = SHARED_DATA / "train" / "dapo-math-17k.parquet"
    if not path.exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (../shared/data)")
    from opd.data.datasets import load_dataset
    return load_dataset(str(path), name="dapo", prompt_style="paper", split="train")


def test_reference_dedup_reports_every_removed_pair(dapo, tmp_path):
    """DeepMath questions plus planted copies of DAPO training questions: the stage removes the
    copies and names each one with the training question it duplicates and their similarity."""
    from opd.data.datasets import strip_instructions
    from opd.stages.data import dedup_reference, select_prompts

    deep = pd.read_parquet(SHARED_DATA / "train" / "deepmath-14k.parquet").iloc[:40]
    train = dapo.iloc[:120].reset_index(drop=True)
    train.to_parquet(tmp_path / "train.parquet")
    planted = [strip_instructions(p[0]["content"]) for p in train["prompt"].iloc[:5]]
    planted = [planted[0], planted[1].upper(), planted[2] + "  ", "Please solve: " + planted[3],
               planted[4].replace(",", " ,")]
    source = pd.concat([deep, questions_frame("planted", planted)], ignore_index=True)
    source.to_parquet(tmp_path / "source.parquet")
    dedup_reference(source=str(tmp_path / "source.parquet"), train=str(tmp_path / "train.parquet"),
                    spec={"prompt_style": "paper"}, dedup={"enabled": True, "threshold": 0.9},
                    reference=str(tmp_path / "reference.parquet"), report=str(tmp_path / "report.json"))
    report = json.loads((tmp_path / "report.json").read_text())
    kept = pd.read_parquet(tmp_path / "reference.parquet")
    removed = {p["candidate_id"]: p for p in report["removed_pairs"]}
    ids = [f"reference-{40 + i}" for i in range(5)]     # the planted rows (ids of the loaded set)
    assert set(ids) <= set(removed), report["removed_pairs"]
    assert len(removed) == report["n_candidates"] - report["n_kept"] == len(source) - len(kept)
    train_ids = set(train["extra_info"].map(lambda e: e["problem_id"]))
    for i in range(5):
        pair = removed[ids[i]]
        assert pair["reference_id"] in train_ids and pair["similarity"] >= 0.9
        assert pair["phase"] in ("exact", "semantic")
    assert removed[ids[0]]["phase"] == "exact" and removed[ids[0]]["similarity"] == 1.0
    assert removed[ids[3]]["phase"] == "semantic" and removed[ids[3]]["reference"] == planted[3][14:][:300]
    assert not set(kept["extra_info"].map(lambda e: e["problem_id"])) & set(removed)
    # the selection reads the deduplicated reference as it is (project rows)
    select_prompts(train=str(tmp_path / "train.parquet"), reference=str(tmp_path / "reference.parquet"),
                   selection={"top_n": 10, "score": "max"}, seed=3, selected=str(tmp_path / "selected.parquet"),
                   random=str(tmp_path / "random.parquet"), report=str(tmp_path / "selection.json"))
    assert len(pd.read_parquet(tmp_path / "selected.parquet")) == 10
    assert len(pd.read_parquet(tmp_path / "random.parquet")) == 10    # C6's control: as many, at random
    control = json.loads((tmp_path / "selection.json").read_text())["random_control"]
    assert control["n"] == 10 and control["seed"] == 3 and 0 <= control["n_also_selected"] <= 10


def test_reference_dedup_off_and_too_strict(tmp_path):
    from opd.stages.data import dedup_reference

    questions_frame("t", ["What is 2 + 2?", "Find x."]).to_parquet(tmp_path / "train.parquet")
    questions_frame("r", ["what is 2+2", "find   X"]).to_parquet(tmp_path / "source.parquet")
    kw = dict(source=str(tmp_path / "source.parquet"), train=str(tmp_path / "train.parquet"), spec={},
              reference=str(tmp_path / "reference.parquet"), report=str(tmp_path / "report.json"))
    dedup_reference(dedup={"enabled": False}, **kw)
    assert len(pd.read_parquet(tmp_path / "reference.parquet")) == 2
    assert json.loads((tmp_path / "report.json").read_text())["enabled"] is False
    with pytest.raises(ValueError, match=r"removed every reference question.*raise data\.selection\.dedup\.threshold"):
        dedup_reference(dedup={"enabled": True, "threshold": 0.9, "encoder": "/nonexistent"}, **kw)
