"""config/paper.yaml: it validates, and its dry run is the paper's full DAG with the right resources.

A fixture fills the user-supplied values: placeholder model folders (a config.json and a
tokenizer.json shared within each tokenizer family), the real datasets from ../shared/data (or
small stand-ins when that folder is absent), and existing executables for the tool stacks, which
a dry run never starts. The verl commands of every paper experiment are composed against the
installed verl 0.9.1 when ``.venv-verl`` exists.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHARED_DATA, questions_frame
from opd import backends as choice

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
VERL_PY = ROOT / ".venv-verl" / "bin" / "python"
DATA = {"dapo-math-17k.parquet": "train/dapo-math-17k.parquet",
        "deepmath-14k.parquet": "train/deepmath-14k.parquet",
        "AIME24.parquet": "benchmarks/AIME24.parquet", "AIME25.parquet": "benchmarks/AIME25.parquet",
        "AMC23.parquet": "benchmarks/AMC23.parquet"}


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """(workdir, filled config path, config dict) with every placeholder pointing at real files."""
    root = tmp_path_factory.mktemp("paper")
    text = (ROOT / "config" / "paper.yaml").read_text()
    assert text.count("# USER") >= 10, "paper.yaml marks its user-supplied values with `# USER`"
    text = text.replace("/data/opd/", f"{root}/")
    cfg = yaml.safe_load(text)
    for name, spec in cfg["models"].items():
        d = Path(spec["path"])
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
        (d / "model.safetensors").touch()   # weights present: the DAG-time check looks for the file
        family = "qwen3" if "Qwen3" in d.name else "deepseek"   # one vocabulary per family
        (d / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {family: 0, "x": 1}}}))
    (root / "data").mkdir()
    for name, rel in DATA.items():
        if (SHARED_DATA / rel).exists():
            (root / "data" / name).symlink_to(SHARED_DATA / rel)
        else:
            questions_frame(name, ["What is 1?"]).to_parquet(root / "data" / name)
    cfg["stacks"] = {k: sys.executable for k in choice.stacks()}
    path = root / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path, cfg


def dry_run(paper) -> str:
    root, path, _ = paper
    # as on a cluster: no local core count caps the threads a job asks for
    out = subprocess.run([SNAKEMAKE, "-n", "--cores", "1024", "-s", str(ROOT / "Snakefile"), "--directory", str(root),
                          "--configfile", str(path)], capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def jobs(text: str) -> list[dict]:
    """Each job block of a dry run: rule, wildcards, threads and resources."""
    found = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", text):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m:
            continue
        job = {"rule": m.group(1), "threads": 1, "resources": {}}
        if w := re.search(r"^\s+wildcards: (.*)$", block, re.M):
            job["wildcards"] = dict(kv.split("=", 1) for kv in w.group(1).split(", "))
        if t := re.search(r"^\s+threads: (\d+)$", block, re.M):
            job["threads"] = int(t.group(1))
        if r := re.search(r"^\s+resources: (.*)$", block, re.M):
            job["resources"] = dict(kv.split("=", 1) for kv in r.group(1).split(", "))
        found.append(job)
    return found


@pytest.fixture(scope="module")
def paper_jobs(paper):
    return jobs(dry_run(paper))


def test_paper_dag_has_every_job(paper, paper_jobs):
    _, _, cfg = paper
    counts: dict[str, int] = {}
    for j in paper_jobs:
        counts[j["rule"]] = counts.get(j["rule"], 0) + 1
    n_exp = len(cfg["experiments"])
    assert n_exp == 9
    checkpoints = 280 // 20                          # steps / save_every, the last step included
    base_models = 7                                  # 3 students, 4 teachers (one checkpoint twice)
    models = base_models + 1 + n_exp * checkpoints   # + the cold start's SFT model
    n_opd = sum(e["method"] == "opd" for e in cfg["experiments"].values())
    probes = n_opd * (1 + checkpoints) + 1            # student + checkpoints, + the cold start's SFT model
    assert counts == {"prepare_benchmark": 3, "dedup_train": 1, "select_prompts": 1,
                      "teacher_rollout": 1, "sft_cold_start": 1, "train": n_exp,
                      "eval_generate": models * 3, "grade": models * 3, "probe": probes,
                      "figures": 1, "all": 1}
    assert {j["wildcards"]["bench"] for j in paper_jobs if j["rule"] == "probe"} == {"aime24"}
    rollouts = [j for j in paper_jobs if j["rule"] == "teacher_rollout"]
    assert rollouts[0]["wildcards"] == {"teacher": "qwen3_4b_nonthinking"}


def test_paper_jobs_request_their_resources(paper_jobs):
    def res(job, key, default="0"):
        return job["resources"].get(key, default)

    for j in paper_jobs:
        rule = j["rule"]
        if rule == "train":
            grpo = j["wildcards"]["exp"].startswith("grpo")
            assert res(j, "gpu") == ("4" if grpo else "8")   # actor (+ the teacher's 4 for OPD)
            assert (res(j, "runtime"), res(j, "mem_mb"), j["threads"]) == ("4320", "1000000", 64)
        elif rule in ("eval_generate", "teacher_rollout"):
            assert res(j, "gpu") == "1" and j["threads"] == 8   # one vLLM engine, tensor parallel 1
        elif rule == "probe":                                # both models forward on one GPU
            assert res(j, "gpu") == "1" and j["threads"] == 8 and res(j, "runtime") == "120"
        elif rule == "sft_cold_start":
            assert res(j, "gpu") == "8" and j["threads"] == 32 and res(j, "runtime") == "1440"
        elif rule in ("grade", "dedup_train", "select_prompts", "prepare_benchmark", "figures"):
            assert res(j, "gpu") == "0", rule
            assert j["threads"] == {"grade": 8, "dedup_train": 8, "select_prompts": 8}.get(rule, 1)
        else:
            assert rule == "all", rule


def test_paper_backends_are_the_gpu_tools(paper):


    _, _, cfg = paper
    for exp, spec in cfg["experiments"].items():
        assert choice.backend(cfg, "train", exp) == "verl"
        assert choice.env_file(cfg, "train", exp) == "../envs/verl.yaml"
    assert choice.env_file(cfg, "generation") == "../envs/vllm.yaml"
    assert choice.env_file(cfg, "sft", "opd_coldstart_qwen3_1p7b_base") == "../envs/llamafactory.yaml"


def test_paper_sft_maps_onto_llamafactory(paper, tmp_path):
    from opd.sft.llamafactory import train_yaml

    _, _, cfg = paper
    y = train_yaml(cfg["sft"], "/m", tmp_path, tmp_path / "out", 0, cfg["backends"]["llamafactory"])
    assert (y["finetuning_type"], y["learning_rate"], y["cutoff_len"], y["bf16"]) == ("full", 1e-5, 8192, True)


@pytest.mark.skipif(not VERL_PY.exists(), reason="verl env missing: run `make env-verl` to build .venv-verl")
def test_paper_verl_commands_compose(paper):
    from opd.train.config import TrainConfig
    from opd.train.verl.command import is_approximate, verl_command
    from opd.train.verl.run import verl_paths
    from opd.config import experiment_config

    root, _, cfg = paper
    cluster = cfg["backends"]["verl"]
    for exp, spec in cfg["experiments"].items():
        train = experiment_config(cfg, exp)
        teacher = cfg["models"][spec["teacher"]]["path"] if spec.get("teacher") else None
        paths = verl_paths(cfg["models"][spec["student"]]["path"], teacher, root / "train.parquet",
                           root / "aime24.parquet", root / "results/train" / exp)
        argv = verl_command(exp, TrainConfig.from_dict(train | {"seed": 0}), paths, cluster)
        req = {"overrides": argv[3:], "select": ["distillation.distillation_loss.loss_mode",
                                                 "data.max_response_length", "actor_rollout_ref.actor.optim.lr",
                                                 "data.apply_chat_template_kwargs"]}
        p = subprocess.run([str(VERL_PY), str(ROOT / "tests" / "verl_compose_check.py")], input=json.dumps(req),
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["ok"], (exp, out)
        v = out["values"]
        assert v["data.max_response_length"] == 7168 and v["actor_rollout_ref.actor.optim.lr"] == 1e-6
        if spec["method"] == "opd":
            # the paper's only_stu top-16 runs on verl through the documented approximation
            assert is_approximate(TrainConfig.from_dict(train), cluster)
            assert v["distillation.distillation_loss.loss_mode"] == "opd_only_stu_student_p_approx_k16"
        if spec["student"] == "qwen3_1p7b":
            assert v["data.apply_chat_template_kwargs"] == {"enable_thinking": False}
