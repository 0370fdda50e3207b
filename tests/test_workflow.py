"""The whole DAG, for real, on a smaller tiny world: artifacts, caching, lint, config errors.

One module-scoped run of ``snakemake`` in a temporary working directory; the tests after it
inspect the artifacts and ask Snakemake what a second run would do.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from opd.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "config.yaml"
SMALL = ROOT / "tests" / "configs" / "small.yaml"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
pytestmark = pytest.mark.slow
FIGURES = ("accuracy_vs_step.png", "training_dynamics.png", "overlap_vs_step.png", "entropy_vs_step.png",
           "reward_by_class.png", "by_position.png", "extreme_reward.png", "objective_ablation.png",
           "claims.png")


def snakemake(workdir, *args, configs=(SMALL,), timeout=900, check=True):
    """Run Snakemake on the default config overridden by ``configs`` (each replaces the last)."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           "--configfile", str(DEFAULT), *map(str, configs), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def planned_jobs(workdir, *args, configs=(SMALL,)) -> dict[str, int]:
    """Job counts per rule of a dry run (empty when there is nothing to do)."""
    out = snakemake(workdir, "-n", "--quiet", "rules", *args, configs=configs)
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
    for split in ("pretrain", "train", "eval", "heldout", "pool"):
        assert len(pd.read_parquet(r / f"world/problems/{split}.parquet")) > 0
    for m in ("teacher", "teacher_think", "student"):
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
    t = table.set_index("model")
    acc_s, acc_t = t.loc["student", "mean_score"], t.loc["teacher", "mean_score"]
    for m in ("opd.step0002", "opd.step0004", "opd_coldstart.sft"):
        want = (t.loc[m, "mean_score"] - acc_s) / (acc_t - acc_s) if acc_t > acc_s else float("nan")
        assert t.loc[m, "gap_recovered"] == pytest.approx(want, nan_ok=True), m
    assert t.loc[["student", "teacher", "grpo.step0004"], "gap_recovered"].isna().all()
    for fig in FIGURES:
        assert (r / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the claims table is well formed (whether a claim holds in this 4-step world is not checked)
    claims = pd.read_csv(r / "tables/claims.csv", keep_default_na=False)
    assert list(claims["claim"]) == [f"C{i}" for i in range(1, 8)]
    assert {"metric", "value", "se", "threshold", "holds", "detail"} <= set(claims.columns)
    assert set(claims["holds"].astype(str)) <= {"True", "False", ""}
    for c, exps in {"C1": "opd", "C2": "opd_think opd", "C3": "opd_grpo_teacher opd",
                    "C5": "opd_coldstart opd_think", "C6": "opd_aligned opd_random"}.items():
        assert claims.set_index("claim").loc[c, "experiments"] == exps
    # probes: every model of each OPD experiment but its teacher, on the figures' benchmark
    probed = sorted(str(p.relative_to(r / "probe")) for p in (r / "probe").glob("*/*/*.json"))
    expect = [f"{e}/{m}/tiny_eval.json" for e, ms in
              (("opd", ["student", "opd.step0002", "opd.step0004"]),
               ("opd_think", ["student", "opd_think.step0002", "opd_think.step0004"]),
               ("opd_coldstart", ["student", "opd_coldstart.sft", "opd_coldstart.step0002",
                                  "opd_coldstart.step0004"])) for m in ms]
    assert set(expect) == set(probed)                  # probe.experiments: the mechanism claims' runs
    assert not [p for p in probed if p.startswith("grpo/") or "/teacher/" in p]   # no GRPO run, no teacher
    # a model from an experiment: grpo's final checkpoint, hard-linked, taught opd_grpo_teacher
    exported = r / "models/grpo_student/model.safetensors"
    assert exported.stat().st_ino == (r / "train/grpo/checkpoints/step_0004/model.safetensors").stat().st_ino
    assert json.loads((r / "train/opd_grpo_teacher/config.json").read_text())["resolved"]["steps"] == 2
    assert (r / "grades/grpo_student/tiny_eval.json").exists()
    # its own prompt set: the held-out problems, deduplicated against the benchmarks apart
    own = pd.read_parquet(r / "data/sets/opd_grpo_teacher/train.parquet")
    assert len(own) > 0 and all("-heldout-" in e["problem_id"] for e in own["extra_info"])
    assert json.loads((r / "data/sets/opd_grpo_teacher/dedup_report.json").read_text())["n_candidates"] == 8
    # C6's pool (world:pool): one set for its two experiments, selected apart from data.train
    pool = r / "data/sets/opd_aligned"
    assert json.loads((pool / "dedup_report.json").read_text())["n_candidates"] == 40
    assert len(pd.read_parquet(pool / "random_prompts.parquet")) == len(pd.read_parquet(pool / "selected.parquet"))
    assert not (r / "data/sets/opd_random").exists()
    # the selection reference, deduplicated against the training set, every removed pair named
    ref_report = json.loads((pool / "reference_dedup_report.json").read_text())
    assert ref_report["threshold"] == 0.99 and ref_report["n_candidates"] == 600
    assert len(ref_report["removed_pairs"]) == 600 - ref_report["n_kept"] == 600 - len(pd.read_parquet(pool / "reference.parquet"))
    assert all(p["similarity"] >= 0.99 for p in ref_report["removed_pairs"])
    summary = json.loads((r / "probe/opd/opd.step0004/tiny_eval.json").read_text())
    tokens = pd.read_parquet(r / "probe/opd/opd.step0004/tiny_eval.parquet")
    assert summary["n_tokens"] == len(tokens) > 0 and summary["chunk_tokens"] == 16
    assert {"opd/overlap_ratio", "opd/reward_teacher_only", "opd/entropy_gap",
            "opd/overlap_ratio_chunk1"} <= set(summary["metrics"])
    assert {"overlap_ratio", "reward_topk_max", "student_p_at_reward_max", "teacher_entropy"} <= set(tokens.columns)
    # training logs the same metric set at every step
    assert {"opd/reward_student_only", "opd/student_p_top1"} <= set(read_jsonl(r / "train/opd/metrics.jsonl")[0])
    for rule_log in ("world_problems.log", "dedup_train.log", "figures.log"):
        assert (r / "logs" / rule_log).exists()
    assert (r / "benchmarks/train/opd.tsv").exists()
    # the world's fingerprint, built with pinned kernels (docs/reproducibility.md)
    fp = json.loads((r / "fingerprint.json").read_text())
    from opd.stages.world import SPLITS
    assert len(fp["artifacts"]) == len(SPLITS) + 1 + 3        # the problem splits, the tokenizer, 3 models
    assert fp["kernels"]["mode"] == fp["settings"]["kernels"] == "reproducible"


def test_report_embeds_every_figure(run, tmp_path):
    """`snakemake --report` (the `make report` command), opened in headless Chromium: the page
    renders its categories, and every figure it embeds decodes in the browser to the PNG that the
    figures rule drew, with its caption; the summary table is there too."""
    import html as htmllib

    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium missing: `apt-get install -y chromium` (.ci/run installs it)")
    wd, _ = run
    report = wd / "results" / "report.html"
    snakemake(wd, "--report", str(report))
    page = report.read_text()
    checked = tmp_path / "report_checked.html"
    cut = page.rindex("</body>")
    checked.write_text(page[:cut] + (ROOT / "tests" / "report_check.html").read_text() + page[cut:])
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                          "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=180,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    rendered = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S))
    assert {"Figures", "Mechanism", "Tables"} <= set(rendered.split()), "the report app did not render"
    found = re.search(r'<pre id="opd-report-check">(.*?)</pre>', dom, re.S)
    assert found, "the in-page check did not finish"
    seen = json.loads(htmllib.unescape(found.group(1)))
    for fig in FIGURES:
        path = f"results/figures/{fig}"
        assert seen["images"].get(path) == list(Image.open(wd / path).size), fig   # decoded by the browser
        assert seen["captions"][path] > 50, f"{fig} has no caption"
    assert seen["categories"]["results/tables/summary.csv"] == "Tables"


def test_second_run_has_nothing_to_do(run):
    wd, _ = run
    assert planned_jobs(wd) == {}


def test_one_experiment_table_needs_nothing_upstream_rerun(run):
    wd, _ = run
    target = "results/tables/experiments/grpo.csv"
    assert planned_jobs(wd, "--", target) == {"experiment_table": 1}
    snakemake(wd, "--", target)
    table = pd.read_csv(wd / target)
    assert list(table["model"]) == ["student", "grpo.step0002", "grpo.step0004"]
    assert table["mean_score"].between(0, 1).all()


def test_changing_one_experiment_reruns_only_it(run, tmp_path):
    wd, _ = run
    cfg = yaml.safe_load(SMALL.read_text())
    cfg["experiments"]["grpo"]["train"]["lr"] = 5.0e-4
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(wd, configs=(changed,))
    # grpo, and what depends on its result (models.grpo_student): the export, the experiment it
    # teaches and their evaluations (grpo's 2 checkpoints, grpo_student, opd_grpo_teacher's 1; that
    # experiment is not in probe.experiments); the figures and claims read them all
    assert jobs == {"train": 2, "model_from_experiment": 1, "eval_generate": 4, "grade": 4,
                    "figures": 1, "claims": 1, "all": 1}


def _override(tmp_path, name, extra: dict):
    """The small config deep-merged with ``extra``, as a file."""
    from opd.experiments import deep_merge
    path = tmp_path / name
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(SMALL.read_text()), extra)))
    return path


def test_switching_the_sft_backend_reruns_only_the_cold_start(run, tmp_path):
    wd, _ = run
    # a dry run never starts the stack; any existing file stands in for its CLI
    cfg = _override(tmp_path, "lf.yaml", {"backends": {"sft": "llamafactory"},
                                          "stacks": {"llamafactory": sys.executable}})
    jobs = planned_jobs(wd, configs=(cfg,))
    # every re-evaluated model belongs to an OPD experiment, so each is probed again too
    assert jobs.pop("probe", 0) == jobs.get("eval_generate")
    # opd_coldstart: its SFT, its training, and the evaluation of the SFT model and 2 checkpoints;
    # the figures and the claims read every grade
    assert jobs == {"sft_cold_start": 1, "train": 1, "eval_generate": 3, "grade": 3, "figures": 1, "claims": 1,
                    "all": 1}


def test_switching_the_generation_backend_reruns_generation_and_what_follows(run, tmp_path):
    wd, _ = run
    cfg = _override(tmp_path, "vllm.yaml", {"backends": {"generation": "vllm"},
                                            "stacks": {"vllm": sys.executable}})
    jobs = planned_jobs(wd, configs=(cfg,))
    n_models = len({p.parent.name for p in (wd / "results/eval").glob("*/tiny_eval.parquet")})
    # every generation job, and the cold start downstream of the new rollouts; no world, data,
    # or training of the experiments that do not use the rollouts
    n_probes = len(list((wd / "results/probe").glob("*/*/tiny_eval.json")))   # they read the generations
    assert jobs == {"teacher_rollout": 1, "sft_cold_start": 1, "train": 1, "eval_generate": n_models,
                    "grade": n_models, "probe": n_probes, "figures": 1, "claims": 1, "all": 1}


def test_rollout_resumes_after_a_killed_run(run, tmp_path):
    # on a copy: the resumed rollout is newer than what the shared run built from it, which
    # would make the later tests on that run retrain the cold start
    local_wd, _ = run
    wd = tmp_path / "resume"
    shutil.copytree(local_wd / "results", wd / "results")
    shutil.copytree(local_wd / ".snakemake" / "metadata", wd / ".snakemake" / "metadata")
    r = wd / "results"
    target = "results/rollout/teacher/rollouts.parquet"
    before = pd.read_parquet(r / "rollout/teacher/rollouts.parquet")
    (r / "rollout/teacher/rollouts.parquet").unlink()
    cfg = yaml.safe_load(SMALL.read_text())
    cfg["rollout"]["batch_size"] = 2  # small batches so the kill lands between checkpoints
    slow = wd / "slow.yaml"
    slow.write_text(yaml.safe_dump(cfg))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(wd), "--cores", "1",
           "--configfile", str(DEFAULT), str(slow), "--allowed-rules", "teacher_rollout", "--", target]
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


def _artifacts(workdir) -> set[str]:
    """Every result file of a run (logs and runtime benchmarks aside), relative to results/."""
    r = Path(workdir) / "results"
    return {str(p.relative_to(r)) for p in r.rglob("*") if p.is_file()
            and p.relative_to(r).parts[0] not in ("logs", "benchmarks")}


def _slurm_up() -> str | None:
    """Why SLURM cannot be used here, or None when a partition answers ``sinfo``."""
    import shutil
    if not shutil.which("sbatch"):
        return "no SLURM here: `.ci/slurm-up` (as root) installs and starts a one-node cluster"
    out = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or "up" not in out.stdout:
        return f"SLURM does not answer (`sinfo`: {out.stderr.strip() or out.stdout.strip()}); run `.ci/slurm-up`"
    return None


def test_slurm_profile_runs_every_job_through_sbatch(run, tmp_path):
    why = _slurm_up()
    if why:
        pytest.skip(why)
    local_wd, _ = run
    wd = tmp_path / "slurm"
    wd.mkdir()
    out = snakemake(wd, "--profile", str(ROOT / "profiles" / "slurm"),
                    "--slurm-init-seconds-before-status-checks", "5", timeout=2400)
    log = out.stdout + out.stderr
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    # every job but the target rule `all` (a local rule) went through sbatch, each with its own id
    total = int(re.search(r"(\d+) of (\d+) steps \(100%\) done", log).group(2))
    assert len(submitted) == total - 1 and len(set(submitted)) == len(submitted), log[-3000:]
    # the local run's extras: the one-experiment table and the report earlier tests asked for by name
    local = {a for a in _artifacts(local_wd) if not a.startswith("tables/experiments/") and a != "report.html"}
    assert _artifacts(wd) == local


def _schema(path: Path):
    """What a consumer of an artifact relies on: parquet columns and dtypes, JSON / JSONL keys."""
    if path.suffix == ".parquet":
        return {c: str(t) for c, t in pd.read_parquet(path).dtypes.items()}
    if path.suffix == ".jsonl":
        return sorted({k for row in read_jsonl(path) for k in row})
    return sorted(json.loads(path.read_text()))


def test_tool_backends_give_the_default_artifacts(run, tmp_path):
    """The whole small study again with vLLM generation and LLaMA-Factory SFT, for real."""
    vllm = ROOT / ".venv-vllm" / "bin" / "python"
    lf = ROOT / ".venv-llamafactory" / "bin" / "llamafactory-cli"
    missing = [f"`{t}`" for p, t in ((vllm, "make env-vllm"), (lf, "make env-llamafactory")) if not p.exists()]
    if missing:
        pytest.skip(f"tool stacks not built; run {' and '.join(missing)}")
    local_wd, _ = run
    wd = tmp_path / "tools"
    # start from the default-backend run (world, data, models, provenance) so only what the
    # backends change runs again
    shutil.copytree(local_wd / "results", wd / "results")
    shutil.copytree(local_wd / ".snakemake" / "metadata", wd / ".snakemake" / "metadata")
    cfg = _override(tmp_path, "tools.yaml", {"backends": {"generation": "vllm", "sft": "llamafactory"},
                                             "stacks": {"vllm": str(vllm), "llamafactory": str(lf)}})
    out = snakemake(wd, configs=(cfg,), timeout=2400)
    log = out.stdout + out.stderr
    # generation and the cold start ran again; the experiments that need neither did not train
    assert "rule teacher_rollout" in log and "rule sft_cold_start" in log
    # (probes of the other experiments do run again: they read the new generations)
    trained = re.findall(r"rule train:\n(?:[^\n]*\n){0,12}?\s*wildcards: exp=(\w+)", log)
    assert set(trained) == {"opd_coldstart"}
    r, ref = wd / "results", local_wd / "results"
    assert json.loads((r / "rollout/teacher/stats.json").read_text())["backend"] == "vllm"
    assert (r / "sft/opd_coldstart/llamafactory/train.yaml").exists()
    # the same artifacts (plus LLaMA-Factory's work folder), each with the default's schema
    tools = {a for a in _artifacts(wd) if not a.startswith("sft/opd_coldstart/llamafactory/")}
    assert tools == _artifacts(local_wd)
    checked = 0
    for rel in sorted(tools):
        if rel.endswith((".parquet", ".json", ".jsonl")) and rel != "sft/opd_coldstart/metrics.jsonl":
            assert _schema(r / rel) == _schema(ref / rel), rel
            checked += 1
    assert checked > 40
    # LLaMA-Factory logs no response-token count; every other SFT metric is there
    lf_keys, native_keys = _schema(r / "sft/opd_coldstart/metrics.jsonl"), _schema(ref / "sft/opd_coldstart/metrics.jsonl")
    assert set(lf_keys) == set(native_keys) - {"train/response_tokens"}
    gen = pd.read_parquet(r / "eval/opd_coldstart.sft/tiny_eval.parquet")
    assert len(gen) == 12 * 2 and gen["response"].str.len().gt(0).all()


def test_trl_backend_trains_one_experiment(run, tmp_path):
    """One experiment of the small study with TRL's trainer (reverse KL over the whole vocabulary),
    for real: only it trains again, and its checkpoints are evaluated, graded and probed."""
    trl = ROOT / ".venv-trl" / "bin" / "python"
    if not trl.exists():
        pytest.skip("TRL stack not built; run `make env-trl`")
    local_wd, _ = run
    wd = tmp_path / "trl"
    shutil.copytree(local_wd / "results", wd / "results")
    shutil.copytree(local_wd / ".snakemake" / "metadata", wd / ".snakemake" / "metadata")
    vocab = yaml.safe_load(SMALL.read_text())["world"]["tokenizer"]["vocab_size"]
    cfg = _override(tmp_path, "trl.yaml", {"experiments": {"opd": {"backends": {"train": "trl"},
                                                                   "train": {"objective": {"top_k": vocab, "tail_bucket": False}}}},
                                           "stacks": {"trl": str(trl)}})
    out = snakemake(wd, configs=(cfg,), timeout=1200)
    log = out.stdout + out.stderr
    trained = re.findall(r"rule train:\n(?:[^\n]*\n){0,12}?\s*wildcards: exp=(\w+)", log)
    assert set(trained) == {"opd"}, "\n".join(re.findall(r"reason: [^\n]*", log))
    r = wd / "results"
    assert json.loads((r / "train/opd/config.json").read_text())["backend"] == "trl"
    metrics = read_jsonl(r / "train/opd/metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all({"train/loss", "train/grad_norm", "rollout/accuracy", "opd/student_entropy"} <= set(m) for m in metrics)
    for m in ("opd.step0002", "opd.step0004"):
        assert len(pd.read_parquet(r / f"eval/{m}/tiny_eval.parquet")) == 12 * 2
        assert 0 <= json.loads((r / f"grades/{m}/tiny_eval.json").read_text())["mean_score"] <= 1
        assert json.loads((r / f"probe/opd/{m}/tiny_eval.json").read_text())["n_tokens"] > 0
    assert "opd.step0004" in set(pd.read_csv(r / "tables/summary.csv")["model"])
    assert planned_jobs(wd, configs=(cfg,)) == {}


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
    ({"backends": {"generation": "vllm"}, "stacks": {"vllm": "/nonexistent/python"}},
     "make env-vllm"),
    ({"backends": {"sft": "llamafactory"}, "stacks": {"llamafactory": "/nonexistent/cli"}},
     "make env-llamafactory"),
    ({"backends": {"train": "verl"}, "train_defaults": {"objective": {"strategy": "union"}}},
     "experiments.opd.backends.train"),
    ({"backends": {"train": "trl"}}, "experiments.opd.backends.train: trl: TRL backend: objective.top_k=16 "
     "is a top-k strategy"),
    ({"experiments": {"opd": {"method": "opd", "student": "student", "teacher": "teacher",
                              "backends": {"train": "deepspeed"}}}}, "deepspeed"),
    # issue 11: decided from cheap reads before any job (opd.checks, opd.config_files)
    ({"train_defaults": {"objective": {"top_k": 400}}},
     "train_defaults.objective.top_k: top_k 400 of experiment 'opd' exceeds the vocabulary"),
    ({"models": {"teacher": {"path": "/nonexistent/teacher"}}}, "models.teacher.path: no Hugging Face model"),
    ({"data": {"train": {"source": "/nonexistent/train.parquet"}}},
     "data.train.source: /nonexistent/train.parquet: file not found"),
    ({"data": {"benchmarks": {"aime": {"source": "/nonexistent/aime.parquet"}}}},
     "data.benchmarks.aime.source: /nonexistent/aime.parquet: file not found"),
    ({"data": {"dedup": {"encoder": "/nonexistent/encoder"}}},
     "data.dedup.encoder: /nonexistent/encoder: no local sentence-transformers model"),
    ({"data": {"selection": {"encoder": "/nonexistent/encoder"}}},
     "data.selection.encoder: /nonexistent/encoder: no local sentence-transformers model"),
    ({"sft": {"steps": 5, "epochs": 2}}, "sft: `epochs` and `steps` are both set in"),
    ({"data": {"selection": {"top_n": 5, "fraction": 0.5}}},
     "data.selection: `fraction` and `top_n` are both set in"),
    ({"sft": {"lr": "1e-4"}}, "sft.lr: '1e-4' is read by YAML as text, not a number"),
])
def test_invalid_config_names_the_key(tmp_path, override, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    out = snakemake(tmp_path, "-n", configs=(bad,), check=False, timeout=120)
    assert out.returncode != 0
    assert key in out.stdout + out.stderr
