"""The whole DAG, for real, on a smaller tiny world: artifacts, caching, lint, config errors.

One module-scoped run of ``snakemake`` in a temporary working directory; the tests after it
inspect the artifacts and ask Snakemake what a second run would do.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from opd.data import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "configs" / "small.yaml"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
pytestmark = pytest.mark.slow


def snakemake(workdir, *args, timeout=900, check=True):
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           "--configfile", str(SMALL), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def planned_jobs(workdir, *args) -> dict[str, int]:
    """Job counts per rule of a dry run (empty when there is nothing to do)."""
    out = snakemake(workdir, "-n", "--quiet", "rules", *args)
    counts = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    start = time.time()
    snakemake(workdir)
    return workdir, time.time() - start


def test_end_to_end_produces_every_artifact(run):
    wd, seconds = run
    r = wd / "results"
    assert seconds < 600, f"the small end-to-end run took {seconds:.0f}s"
    for split in ("pretrain", "train", "eval", "heldout"):
        assert len(pd.read_parquet(r / f"world/problems/{split}.parquet")) > 0
    for m in ("teacher", "student"):
        assert (r / f"world/models/{m}/config.json").exists()
        assert (r / f"world/models/{m}/tokenizer.json").exists()
    assert json.loads((r / "data/dedup_report.json").read_text())["n_kept"] > 0
    rollouts = pd.read_parquet(r / "rollout/teacher/rollouts.parquet")
    assert {"problem_id", "prompt", "response", "n_tokens", "finish_reason"} <= set(rollouts.columns)
    assert all("\\boxed{" in t for t in rollouts["response"])
    stats = json.loads((r / "rollout/teacher/stats.json").read_text())
    assert stats["slots"] == 32 and not (r / "rollout/teacher/rollouts.parquet.progress.jsonl").exists()
    assert (r / "sft/opd_coldstart/model/model.safetensors").exists()
    assert len(read_jsonl(r / "sft/opd_coldstart/metrics.jsonl")) > 0
    for exp in ("opd", "grpo", "opd_coldstart"):
        metrics = read_jsonl(r / f"train/{exp}/metrics.jsonl")
        assert [m["step"] for m in metrics] == [1, 2, 3, 4]
        assert all("train/pg_loss" in m and "rollout/accuracy" in m for m in metrics)
        assert sorted(p.name for p in (r / f"train/{exp}/checkpoints").glob("step_*")) == ["step_0002", "step_0004"]
        assert json.loads((r / f"train/{exp}/config.json").read_text())["resolved"]["method"] in ("opd", "grpo")
    assert "opd/overlap_ratio" in read_jsonl(r / "train/opd/metrics.jsonl")[0]
    models = ["student", "teacher", "opd.step0002", "opd.step0004", "grpo.step0004", "opd_coldstart.sft"]
    for m in models:
        gen = pd.read_parquet(r / f"eval/{m}/tiny_eval.parquet")
        assert len(gen) == 12 * 2
        assert {"problem_id", "sample_idx", "response", "n_tokens", "finish_reason"} <= set(gen.columns)
        grade = json.loads((r / f"grades/{m}/tiny_eval.json").read_text())
        assert 0 <= grade["mean_score"] <= grade["best_score"] <= 1
        assert len(pd.read_parquet(r / f"grades/{m}/tiny_eval.verdicts.parquet")) == 24
    table = pd.read_csv(r / "tables/summary.csv")
    assert set(models) <= set(table["model"])
    for fig in ("accuracy_vs_step.png", "training_dynamics.png"):
        assert (r / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for rule_log in ("world_problems.log", "dedup_train.log", "figures.log"):
        assert (r / "logs" / rule_log).exists()
    assert (r / "benchmarks/train/opd.tsv").exists()


def test_second_run_has_nothing_to_do(run):
    wd, _ = run
    assert planned_jobs(wd) == {}


def test_changing_one_experiment_reruns_only_it(run, tmp_path):
    wd, _ = run
    cfg = yaml.safe_load(SMALL.read_text())
    cfg["experiments"]["grpo"]["train"]["lr"] = 5.0e-4
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(wd, "--configfile", str(changed))
    assert jobs.get("train") == 1
    assert jobs.get("eval_generate") == 2 and jobs.get("grade") == 2  # grpo's two checkpoints
    assert set(jobs) == {"train", "eval_generate", "grade", "figures", "all"}


def test_rollout_resumes_after_a_killed_run(run):
    wd, _ = run
    r = wd / "results"
    target = "results/rollout/teacher/rollouts.parquet"
    before = pd.read_parquet(r / "rollout/teacher/rollouts.parquet")
    (r / "rollout/teacher/rollouts.parquet").unlink()
    cfg = yaml.safe_load(SMALL.read_text())
    cfg["rollout"]["batch_size"] = 2  # small batches so the kill lands between checkpoints
    slow = wd / "slow.yaml"
    slow.write_text(yaml.safe_dump(cfg))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(wd), "--cores", "1",
           "--configfile", str(slow), "--allowed-rules", "teacher_rollout", "--", target]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    progress = r / "rollout/teacher/rollouts.parquet.progress.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and len(progress.read_text().splitlines()) >= 7:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_jsonl(progress)) - 1  # minus the header line
    assert 6 <= done_before < 32, "the kill should land mid-rollout"
    assert not (r / "rollout/teacher/rollouts.parquet").exists()
    # what a user does after a hard kill: release Snakemake's lock, then rerun
    unlock = subprocess.run(cmd[:-2] + ["--unlock"], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    out = subprocess.run(cmd[:-2] + ["--rerun-incomplete", "--", target], capture_output=True,
                         text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    stats = json.loads((r / "rollout/teacher/stats.json").read_text())
    assert stats["slots"] == 32 and stats["resumed_slots"] == done_before
    after = pd.read_parquet(r / "rollout/teacher/rollouts.parquet")
    keys = list(zip(after["problem_id"], after["sample_idx"]))
    assert len(keys) == len(set(keys))
    assert len(after) == stats["accepted"]
    assert not progress.exists()
    assert len(before) > 0


def test_lint_is_clean():
    out = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--lint"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Lints for" not in text, text[-3000:]


@pytest.mark.parametrize("override, key", [
    ({"eval": {"n": 0}}, "['eval']['n']"),
    ({"train_defaults": {"objective": {"strategy": "both"}}}, "strategy"),
    ({"experiments": {"opd": {"method": "opd", "student": "student", "teacher": "nosuch"}}},
     "experiments.opd.teacher"),
    ({"figures": {"benchmark": "aime"}}, "figures.benchmark"),
])
def test_invalid_config_names_the_key(tmp_path, override, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    out = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False, timeout=120)
    assert out.returncode != 0
    assert key in out.stdout + out.stderr
