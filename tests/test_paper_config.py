"""config/paper.yaml: it validates, and its dry run is the paper's full DAG with the right resources.

A fixture fills the user-supplied values: placeholder model folders (a config.json and a
tokenizer.json shared within each tokenizer family), a placeholder encoder folder, the real
datasets from ../shared/data (or small stand-ins when that folder is absent, and for the
authors' OpenThoughts3 cold-start prompts, which it does not hold), and existing executables for
the tool stacks, which a dry run never starts. The verl commands of every paper experiment are
composed against the installed verl 0.9.1 when ``.venv-verl`` exists.
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
        "OpenThoughts3_opd.parquet": None,            # the authors' file; not in ../shared/data
        **{f"{b}.parquet": f"benchmarks/{b}.parquet" for b in (
            "AIME24", "AIME25", "AMC23", "MATH-500", "Minerva", "Olympiad-Bench", "BRUMO25",
            "CMIMC25", "HMMT25")}}
BENCHMARKS = {"aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench", "brumo25",
              "cmimc25", "hmmt25"}
STRATEGIES = {"only_stu", "only_tch", "intersection", "union", "union-intersection"}


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """(workdir, filled config path, config dict) with every placeholder pointing at real files."""
    root = tmp_path_factory.mktemp("paper")
    text = (ROOT / "config" / "paper.yaml").read_text()
    assert text.count("# USER") >= 10, "paper.yaml marks its user-supplied values with `# USER`"
    text = text.replace("/data/opd/", f"{root}/")
    cfg = yaml.safe_load(text)
    for name, spec in cfg["models"].items():
        if "path" not in spec:
            continue
        d = Path(spec["path"])
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
        (d / "model.safetensors").touch()   # weights present: the DAG-time check looks for the file
        family = "qwen3" if "Qwen3" in d.name else "deepseek"   # one vocabulary per family
        (d / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {family: 0, "x": 1}}}))
    encoder = Path(cfg["data"]["selection"]["dedup"]["encoder"])
    encoder.mkdir(parents=True)
    (encoder / "modules.json").write_text("[]")
    (root / "data").mkdir()
    for name, rel in DATA.items():
        if rel and (SHARED_DATA / rel).exists():
            (root / "data" / name).symlink_to(SHARED_DATA / rel)
        else:
            questions_frame(name, ["What is 1?"]).to_parquet(root / "data" / name)
    cfg["stacks"] = {k: sys.executable for k in choice.stacks()}
    path = root / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path, cfg


def snakemake(paper, *args) -> str:
    root, path, _ = paper
    # as on a cluster: no local core count caps the threads a job asks for
    out = subprocess.run([SNAKEMAKE, "--cores", "1024", "-s", str(ROOT / "Snakefile"), "--directory", str(root),
                          "--configfile", str(path), *args], capture_output=True, text=True, timeout=600,
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


def dag_edges(dot: str) -> set[tuple[str, str]]:
    """(upstream, downstream) job labels of ``snakemake --dag``, e.g. ("train exp: x", ...)."""
    labels = {i: label.replace("\\n", " ") for i, label in re.findall(r"^\s*(\d+)\[label = \"([^\"]*)\"", dot, re.M)}
    return {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}


@pytest.fixture(scope="module")
def paper_jobs(paper):
    return jobs(snakemake(paper, "-n"))


def test_paper_dag_has_every_job(paper, paper_jobs):
    _, _, cfg = paper
    counts: dict[str, int] = {}
    for j in paper_jobs:
        counts[j["rule"]] = counts.get(j["rule"], 0) + 1
    exps = cfg["experiments"]
    assert len(exps) == 20
    checkpoints = 280 // 20                          # steps / save_every, the last step included
    # students and teachers evaluated as they are: 5 students, 4 teachers (Qwen3-4B non-thinking;
    # the thinking-mode run needs teacher_prompt: own, native only, and is left out), one of them
    # the final checkpoint of the GRPO run on Qwen3-4B-Base
    base_models = {m for e in exps.values() for m in (e["student"], e.get("teacher")) if m}
    assert len(base_models) == 9 and "qwen3_4b_base_grpo" in base_models
    models = len(base_models) + 1 + len(exps) * checkpoints   # + the cold start's SFT model
    n_opd = sum(e["method"] == "opd" for e in exps.values())
    assert n_opd == 17
    probes = n_opd * (1 + checkpoints) + 1            # student + checkpoints, + the cold start's SFT model
    benches = len(BENCHMARKS)
    assert counts == {"prepare_benchmark": benches, "dedup_train": 1, "dedup_rollout_prompts": 1,
                      "dedup_reference": 1, "select_prompts": 1, "teacher_rollout": 1,
                      "sft_cold_start": 1, "model_from_experiment": 1, "train": len(exps),
                      "eval_generate": models * benches, "grade": models * benches, "probe": probes,
                      "figures": 1, "claims": 1, "all": 1}
    assert {j["wildcards"]["bench"] for j in paper_jobs if j["rule"] == "prepare_benchmark"} == BENCHMARKS
    assert {j["wildcards"]["bench"] for j in paper_jobs if j["rule"] == "probe"} == {"aime24"}
    rollouts = [j for j in paper_jobs if j["rule"] == "teacher_rollout"]
    assert rollouts[0]["wildcards"] == {"teacher": "qwen3_4b_nonthinking"}
    exported = [j for j in paper_jobs if j["rule"] == "model_from_experiment"]
    assert exported[0]["wildcards"] == {"from_model": "qwen3_4b_base_grpo"}


def test_paper_experiments_cover_the_papers_results(paper):
    _, _, cfg = paper
    exps = cfg["experiments"]
    pairs = {(e["student"], e.get("teacher")) for e in exps.values()}
    # first law, second law, reverse distillation
    assert {("qwen3_1p7b_base", "qwen3_4b_nonthinking"), ("qwen3_1p7b_base", "qwen3_4b_base_grpo"),
            ("r1_distill_1p5b", "skywork_or1_math_7b"), ("r1_distill_1p5b", "r1_distill_7b"),
            ("justrl_1p5b", "r1_distill_1p5b"), ("justrl_1p5b", "r1_distill_7b")} <= pairs
    assert cfg["models"]["qwen3_4b_base_grpo"] == {"from_experiment": "grpo_qwen3_4b_base", "step": "final"}
    assert exps["grpo_qwen3_4b_base"]["student"] == "qwen3_4b_base"
    # the ablations: every strategy, and top_k including sampled-token OPD, on one pair
    from opd.experiments import experiment_config
    ablation = {n: experiment_config(cfg, n)["objective"] for n, e in exps.items()
                if (e["student"], e.get("teacher")) == ("r1_distill_1p5b", "justrl_1p5b")}
    assert {o["strategy"] for o in ablation.values() if o["top_k"] == 16} == STRATEGIES
    assert {o["top_k"] for o in ablation.values() if o["strategy"] == "only_stu"} >= {0, 4, 16, 32}
    # the cold start: a prompt set of its own, the authors' rollout sampling
    assert cfg["rollout"]["source"]["source"].endswith("OpenThoughts3_opd.parquet")
    assert (cfg["rollout"]["top_p"], cfg["rollout"]["temperature"], cfg["rollout"]["max_new_tokens"]) == (0.95, 1.0, 7168)
    assert cfg["data"]["selection"]["dedup"]["threshold"] == 0.6
    assert set(cfg["data"]["benchmarks"]) == BENCHMARKS
    # every experiment carries a comment naming the result it stands for
    text = (ROOT / "config" / "paper.yaml").read_text()
    for name in exps:
        line = re.search(rf"^  {re.escape(name)}:(.*)$", text, re.M).group(1)
        assert re.search(r"#\s*\S.{10,}", line), f"experiment {name} has no comment naming its paper result"


def test_paper_from_experiment_edges(paper):
    """The GRPO teacher trains first: train(grpo) -> model_from_experiment -> the OPD run, its
    evaluation and probes."""
    edges = dag_edges(snakemake(paper, "--dag"))
    assert ("train exp: grpo_qwen3_4b_base", "model_from_experiment from_model: qwen3_4b_base_grpo") in edges
    assert ("model_from_experiment from_model: qwen3_4b_base_grpo",
            "train exp: opd_qwen3_1p7b_base_from_4b_base_grpo") in edges
    downstream = {b for a, b in edges if a == "model_from_experiment from_model: qwen3_4b_base_grpo"}
    assert {"train exp: opd_qwen3_1p7b_base_from_4b_base_grpo",
            "eval_generate model: qwen3_4b_base_grpo"} <= downstream
    # no other experiment waits for a training run
    trains_after_train = {b for a, b in edges if a.startswith("model_from_experiment")}
    assert {b for b in trains_after_train if b.startswith("train ")} == {
        "train exp: opd_qwen3_1p7b_base_from_4b_base_grpo"}


def test_paper_jobs_request_their_resources(paper_jobs):
    def res(job, key, default="0"):
        return job["resources"].get(key, default)

    embedding = {"dedup_train", "dedup_rollout_prompts", "dedup_reference", "select_prompts"}
    seen = set()
    for j in paper_jobs:
        rule = j["rule"]
        seen.add(rule)
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
        elif rule in embedding:
            assert res(j, "gpu") == "0" and j["threads"] == 8
            assert (res(j, "mem_mb"), res(j, "runtime")) == ("32000", "120"), rule
        elif rule == "model_from_experiment":                # hard links: no GPU, little memory
            assert res(j, "gpu") == "0" and j["threads"] == 1
            assert (res(j, "mem_mb"), res(j, "runtime")) == ("4000", "30")
        elif rule in ("grade", "prepare_benchmark", "figures", "claims"):
            assert res(j, "gpu") == "0", rule
            assert j["threads"] == {"grade": 8}.get(rule, 1)
        else:
            assert rule == "all", rule
    assert embedding | {"model_from_experiment", "train", "probe"} <= seen


def test_paper_backends_are_the_gpu_tools(paper):
    _, _, cfg = paper
    for exp, spec in cfg["experiments"].items():
        assert choice.backend(cfg, "train", exp) == "verl"
        assert choice.env_file(cfg, "train", exp) == "../envs/verl.yaml"
    assert choice.env_file(cfg, "generation") == "../envs/vllm.yaml"
    assert choice.env_file(cfg, "sft", "opd_coldstart_qwen3_1p7b_base") == "../envs/llamafactory.yaml"


def test_paper_sft_maps_onto_llamafactory(paper, tmp_path):
    """The authors' qwen3_base_full_sft.yaml: full, lr 1e-5, 2 epochs, cosine with 5% warm-up,
    8 GPUs x 8 = 64 sequences per step, cutoff 14,336, template qwen3, a 5% validation split."""
    from opd.sft.llamafactory import train_yaml

    _, _, cfg = paper
    y = train_yaml(cfg["sft"], "/m", tmp_path, tmp_path / "out", 0, cfg["backends"]["llamafactory"],
                   n_examples=64 * 100)
    assert (y["finetuning_type"], y["learning_rate"], y["num_train_epochs"], y["cutoff_len"], y["bf16"]) == (
        "full", 1e-5, 2.0, 14336, True)
    assert (y["lr_scheduler_type"], y["lr_scheduler_kwargs"], y["warmup_steps"]) == ("cosine", {}, 10)  # 5% of 200
    assert y["per_device_train_batch_size"] * y["gradient_accumulation_steps"] * cfg["backends"]["llamafactory"]["gpus"] == 64
    assert (y["template"], y["val_size"], y["enable_thinking"], y["adam_beta2"]) == ("qwen3", 0.05, True, 0.999)


@pytest.mark.skipif(not VERL_PY.exists(), reason="verl env missing: run `make env-verl` to build .venv-verl")
def test_paper_verl_commands_compose(paper):
    """Every experiment's verl command composes against the installed verl (one process for all)."""
    from opd.experiments import experiment_config
    from opd.train.config import TrainConfig
    from opd.train.verl.command import is_approximate, topk_loss_name, verl_command
    from opd.train.verl.run import verl_paths

    root, _, cfg = paper
    cluster = cfg["backends"]["verl"]

    def model_dir(name):
        spec = cfg["models"][name]
        return spec["path"] if "path" in spec else root / "results/models" / name

    select = ["distillation.distillation_loss.loss_mode", "data.max_response_length",
              "actor_rollout_ref.actor.optim.lr", "data.apply_chat_template_kwargs",
              "distillation.teacher_models.teacher_model.model_path", "actor_rollout_ref.model.path"]
    requests, trains = {}, {}
    for exp, spec in cfg["experiments"].items():
        trains[exp] = train = TrainConfig.from_dict(experiment_config(cfg, exp) | {"seed": 0})
        teacher = model_dir(spec["teacher"]) if spec.get("teacher") else None
        paths = verl_paths(model_dir(spec["student"]), teacher, root / "train.parquet",
                           root / "aime24.parquet", root / "results/train" / exp)
        requests[exp] = verl_command(exp, train, paths, cluster)[3:]
    script = ("import json, sys; sys.path.insert(0, 'tests'); import verl_compose_check as v\n"
              "import opd.train.verl.ext\nfrom omegaconf import OmegaConf\nout = {}\n"
              "for exp, overrides in json.load(sys.stdin)['requests'].items():\n"
              "    try:\n        cfg = v.compose(overrides); OmegaConf.resolve(cfg); v.convert(cfg)\n"
              "        out[exp] = {'ok': True, 'values': {k: OmegaConf.to_container(x) if OmegaConf.is_config("
              "x := OmegaConf.select(cfg, k)) else x for k in json.load(open(sys.argv[1]))}}\n"
              "    except Exception as e:\n        out[exp] = {'ok': False, 'error': f'{type(e).__name__}: {e}'}\n"
              "print(json.dumps(out, default=str))\n")
    keys = root / "select.json"
    keys.write_text(json.dumps(select))
    p = subprocess.run([str(VERL_PY), "-c", script, str(keys)], input=json.dumps({"requests": requests}),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(results) == set(cfg["experiments"])
    for exp, spec in cfg["experiments"].items():
        out = results[exp]
        assert out["ok"], (exp, out)
        v, o = out["values"], trains[exp].objective
        assert v["data.max_response_length"] == 7168 and v["actor_rollout_ref.actor.optim.lr"] == 1e-6
        assert v["actor_rollout_ref.model.path"] == str(model_dir(spec["student"]))
        if spec["method"] != "opd":
            if spec["student"] in ("qwen3_1p7b", "qwen3_4b_base"):
                assert v["data.apply_chat_template_kwargs"] == {"enable_thinking": False}
            continue
        # a teacher from an experiment is its exported checkpoint folder
        assert v["distillation.teacher_models.teacher_model.model_path"] == str(model_dir(spec["teacher"]))
        if o.top_k == 0:                               # sampled-token OPD: verl's own k1 estimator
            assert v["distillation.distillation_loss.loss_mode"] == "k1"
        else:
            approx = is_approximate(trains[exp], cluster)
            assert approx == (o.strategy in ("only_stu", "union", "union-intersection")), exp
            assert v["distillation.distillation_loss.loss_mode"] == topk_loss_name(
                o.strategy, o.weight_mode, o.top_k if approx else None)
        if spec["student"] in ("qwen3_1p7b", "qwen3_4b_base"):     # non-thinking, as the authors' scripts
            assert v["data.apply_chat_template_kwargs"] == {"enable_thinking": False}
