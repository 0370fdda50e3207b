"""Bad input stops the DAG build, before any job, with the key or file and the fix (issue 11).

Unit tests call the checks of ``opd.checks`` and ``opd.config_files`` on real files written to
``tmp_path`` (model folders with config.json / tokenizer.json / weight files, parquet datasets,
YAML files); a few real ``snakemake -n`` runs show the same messages from the Snakefile.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, SHARED_DATA
from opd.checks import (check_data, check_model_folder, check_models, check_pair, check_parquet,
                        check_top_k, config_warnings)
from opd.config import ConfigError
from opd.config_files import load_config_file, number_strings, prepare_config, resolve_alternatives
from opd.io import make_row, write_parquet

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
QWEN_VOCAB = {"a": 0, "b": 1, "c": 2}


def model_dir(root: Path, name: str, vocab_size: int | None = 151936, vocab=QWEN_VOCAB,
              weights: str | None = "model.safetensors") -> str:
    """A Hugging Face folder with config.json, tokenizer.json and (the name of) a weight file."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"model_type": "qwen2"} | ({"vocab_size": vocab_size} if vocab_size else {})
    (d / "config.json").write_text(json.dumps(cfg))
    if vocab is not None:
        (d / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}, "added_tokens": []}))
    if weights:
        (d / weights).touch()
    return str(d)


def config(**models) -> dict:
    """The default config with some models replaced by ``{"path": ...}`` specs."""
    cfg = copy.deepcopy(BASE)
    for name, path in models.items():
        cfg["models"][name] = {"path": path}
    return cfg


def verl(n: int = 3, name: str = "x") -> pd.DataFrame:
    return pd.DataFrame([make_row(name, f"{name}-{i}", f"q{i}?", f"q{i}?", str(i), i, "test")
                         for i in range(n)])


# ------------------------------------------------------------------------ model folders


@pytest.mark.parametrize("weights", ["model.safetensors", "model-00001-of-00002.safetensors",
                                     "model.safetensors.index.json", "pytorch_model.bin",
                                     "pytorch_model-00001-of-00003.bin"])
def test_model_folder_with_weights_passes(tmp_path, weights):
    check_model_folder("teacher", model_dir(tmp_path, "m", weights=weights))


def test_model_folder_without_weights_names_the_folder(tmp_path):
    path = model_dir(tmp_path, "m", weights=None)
    (Path(path) / "generation_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=rf"models\.teacher\.path: {re.escape(path)} has config.json but no "
                                          r"weights .*copy the checkpoint's weight files"):
        check_model_folder("teacher", path)
    with pytest.raises(ConfigError, match=r"models\.teacher\.path: no Hugging Face model"):
        check_model_folder("teacher", str(tmp_path / "nope"))
    (Path(path) / "config.json").write_text("{not json")
    (Path(path) / "model.safetensors").touch()
    with pytest.raises(ConfigError, match=r"config.json is not valid JSON"):
        check_model_folder("teacher", path)


# ------------------------------------------------------------------------ OPD pairs


def test_same_tokenizer_and_head_passes(tmp_path):
    cfg = config(student=model_dir(tmp_path, "s"), teacher=model_dir(tmp_path, "t"),
                 teacher_think=model_dir(tmp_path, "tt"))
    check_models(cfg)


def test_same_tokenizer_other_head_size_is_refused_saying_so(tmp_path):
    cfg = config(student=model_dir(tmp_path, "s", 151936), teacher=model_dir(tmp_path, "t", 152064))
    with pytest.raises(ConfigError) as err:
        check_pair(cfg, "opd")
    msg = str(err.value)
    assert msg.startswith("experiments.opd.teacher: teacher 'teacher' and student 'student' have the "
                          "same tokenizer but LM heads of different sizes (config.json vocab_size "
                          "152064 for the teacher, 151936 for the student)")
    assert "resize_token_embeddings(151936)" in msg
    # GRPO never scores with the teacher: no pair to check
    check_pair(cfg, "grpo")


def test_other_tokenizer_is_refused(tmp_path):
    cfg = config(student=model_dir(tmp_path, "s"),
                 teacher=model_dir(tmp_path, "t", vocab={"a": 0, "c": 1, "b": 2}))
    with pytest.raises(ConfigError, match=r"experiments\.opd\.teacher: .*do not share a vocabulary "
                                          r"\(their tokenizer.json files differ\)"):
        check_pair(cfg, "opd")


@pytest.mark.parametrize("path_model", ["teacher", "student"])
def test_world_model_against_path_model_compares_vocabulary_sizes(tmp_path, path_model):
    cfg = config(**{path_model: model_dir(tmp_path, "m", 151936)})
    with pytest.raises(ConfigError, match=r"experiments\.opd\.teacher: .*tiny-world model .*"
                                          r"world.tokenizer.vocab_size 384.* = 151936: the "
                                          r"tokenizers differ"):
        check_pair(cfg, "opd")
    same = config(**{path_model: model_dir(tmp_path, "same", 384)})
    check_pair(same, "opd")


def test_top_k_above_the_vocabulary_names_the_key(tmp_path):
    cfg = copy.deepcopy(BASE)
    cfg["train_defaults"]["objective"]["top_k"] = 385
    with pytest.raises(ConfigError, match=r"^train_defaults\.objective\.top_k: top_k 385 of "
                                          r"experiment 'opd' exceeds the vocabulary of 'student' "
                                          r"\(384 tokens, world.tokenizer.vocab_size\).*top_k <= 384"):
        check_models(cfg)
    cfg["train_defaults"]["objective"]["top_k"] = 384
    check_models(cfg)
    cfg["experiments"]["opd_aligned"]["train"] = {"objective": {"top_k": 500}}
    with pytest.raises(ConfigError, match=r"^experiments\.opd_aligned\.train\.objective\.top_k: "
                                          r"top_k 500"):
        check_models(cfg)
    # a path model's LM head; metrics_k stands in for top_k 0 (sampled-token OPD)
    small = config(student=model_dir(tmp_path, "s", 12), teacher=model_dir(tmp_path, "t", 12))
    with pytest.raises(ConfigError, match=r"top_k 16 .*\(12 tokens, vocab_size in .*/s/config.json\)"):
        check_top_k(small, "opd")
    small["train_defaults"]["objective"]["top_k"] = 0
    with pytest.raises(ConfigError, match=r"train_defaults\.objective\.metrics_k: metrics_k 16"):
        check_top_k(small, "opd")
    check_top_k(small, "grpo")                  # GRPO uses no top-k sets


# ------------------------------------------------------------------------ data files


def test_real_datasets_pass():
    files = sorted(SHARED_DATA.glob("*/*.parquet")) if SHARED_DATA.is_dir() else []
    if not files:
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    for f in files:
        check_parquet("data.train.source", str(f))


def _bad_frames():
    no_gt = verl()
    no_gt["reward_model"] = [{"ground_truth": "1", "style": "rule"}, {"ground_truth": " ", "style": "rule"},
                             {"ground_truth": None, "style": "rule"}]
    no_field = verl()
    no_field["reward_model"] = [{"style": "rule"}] * 3
    dup = verl()
    dup["extra_info"] = [{"index": 1}, {"index": 2}, {"index": 1}]
    return [
        (verl().drop(columns=["reward_model"]), r"missing column\(s\) \['reward_model'\]"),
        (pd.DataFrame({"problem_idx": [1], "problem": ["a?"]}), r"missing column\(s\) \['answer'\]"),
        (pd.DataFrame({"text": ["a"]}), "unknown dataset format"),
        (verl().head(0), r"the dataset is empty \(0 rows\)"),
        (no_gt, r"empty ground truth \(reward_model.ground_truth\) in 2 of 3 rows, e.g. row\(s\) \[1, 2\]"),
        (no_field, "reward_model has no ground_truth field"),
        (pd.DataFrame({"problem_idx": [1, 2], "problem": ["a?", "b?"], "answer": ["1", None]}),
         r"empty ground truth \(answer\) in 1 of 2 rows, e.g. row\(s\) \[1\]"),
        (dup, r"problem ids repeated in extra_info.index: '1'"),
        (pd.DataFrame({"problem_idx": [4, 4], "problem": ["a?", "b?"], "answer": ["1", "2"]}),
         r"problem ids repeated in problem_idx: '4'"),
    ]


@pytest.mark.parametrize("frame, message", _bad_frames())
def test_bad_parquet_names_key_file_and_problem(tmp_path, frame, message):
    path = tmp_path / "bench.parquet"
    write_parquet(frame, path)
    with pytest.raises(ConfigError, match=rf"^data\.benchmarks\.b\.source: {re.escape(str(path))}.*{message}"):
        check_parquet("data.benchmarks.b.source", str(path))


def test_missing_or_unreadable_parquet(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.train\.source: .*nope.parquet: file not found"):
        check_parquet("data.train.source", str(tmp_path / "nope.parquet"))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="junk.parquet: not a readable parquet file"):
        check_parquet("data.train.source", str(tmp_path / "junk.parquet"))


def test_check_data_covers_train_benchmarks_reference_and_encoders(tmp_path):
    good, empty = tmp_path / "good.parquet", tmp_path / "empty.parquet"
    write_parquet(verl(), good)
    write_parquet(verl().head(0), empty)
    cfg = copy.deepcopy(BASE)
    check_data(cfg)                              # world sources: nothing to read
    for where in (("train",), ("benchmarks", "tiny_eval"), ("selection", "reference")):
        bad = copy.deepcopy(cfg)
        spec = bad["data"]
        for k in where:
            spec = spec[k]
        spec["source"] = str(empty)
        with pytest.raises(ConfigError, match=rf"^data\.{'.'.join(where)}\.source: .*0 rows"):
            check_data(bad)
    # the reference is read only when an experiment selects prompts
    unused = copy.deepcopy(cfg)
    unused["data"]["selection"]["reference"]["source"] = str(empty)
    unused["experiments"]["opd_aligned"]["prompts"] = "all"
    unused["experiments"]["opd_random"]["prompts"] = "all"
    check_data(unused)
    for section in ("dedup", "selection"):
        bad = copy.deepcopy(cfg)
        bad["data"][section]["encoder"] = str(tmp_path / "no-encoder")
        with pytest.raises(ConfigError, match=rf"^data\.{section}\.encoder: .*no-encoder: no local "
                                              r"sentence-transformers model"):
            check_data(bad)
    off = copy.deepcopy(cfg)
    off["data"]["dedup"] = {"enabled": False, "encoder": str(tmp_path / "no-encoder")}
    check_data(off)


# ------------------------------------------------------------------------ warnings


def test_warnings_for_greedy_sampling_and_capped_rollouts(tmp_path):
    assert config_warnings(BASE) == []
    cfg = copy.deepcopy(BASE)
    cfg["eval"]["temperature"] = 0
    cfg["rollout"]["temperature"] = 0.0
    cfg["rollout"]["prompts"] = 1201            # the world's train split has 1200 problems
    found = config_warnings(cfg)
    assert len(found) == 3
    assert found[0].startswith("eval.temperature is 0 with eval.n = 4") and "avg@4 then equals pass@1" in found[0]
    assert found[1].startswith("rollout.temperature is 0 with rollout.n = 2")
    assert found[2].startswith("rollout.prompts = 1201 exceeds the 1200 training prompts of data.train")
    cfg["eval"]["n"] = cfg["rollout"]["n"] = 1
    assert len(config_warnings(cfg)) == 1
    path = tmp_path / "train.parquet"
    write_parquet(verl(5), path)
    cfg["data"]["train"]["source"] = str(path)
    assert "exceeds the 5 training prompts" in config_warnings(cfg)[0]
    for exp in cfg["experiments"].values():      # no cold start: no rollout
        exp["cold_start"] = False
    assert config_warnings(cfg) == []


# ------------------------------------------------------------------------ config files


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("eval:\n  n: [1, 2\nrollout: {n: 2}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}, line 3, column 8: invalid YAML: expected ',' "
                                          r"or '\]', but got ':' \(while parsing a flow sequence at "
                                          r"line 2, column 6\)"):
        load_config_file(bad)
    bad.write_text("eval:\n\tn: 2\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}, line 2, column 1: .*'\\t'"):
        load_config_file(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config_file(bad)
    bad.write_text('{"eval": {"n": 2}}')
    assert load_config_file(bad) == {"eval": {"n": 2}}


def _merged(*layers: dict) -> dict:
    from opd.experiments import deep_merge
    out = {}
    for layer in layers:
        out = deep_merge(out, layer)
    return out


@pytest.mark.parametrize("section, default, override, expected", [
    ("sft", {"lr": 1e-4, "epochs": 1}, {"steps": 50}, {"lr": 1e-4, "steps": 50}),
    ("sft", {"lr": 1e-4, "steps": 50}, {"epochs": 2}, {"lr": 1e-4, "epochs": 2}),
    ("sft", {"lr": 1e-4, "epochs": 1}, {"epochs": None, "steps": 50}, {"lr": 1e-4, "steps": 50}),
    ("selection", {"fraction": 0.5, "score": "max"}, {"top_n": 10}, {"top_n": 10, "score": "max"}),
    ("teacher", {"world": {"size": 1}}, {"path": "/m"}, {"path": "/m"}),
])
def test_an_override_switches_between_alternatives(section, default, override, expected):
    where = {"sft": ("sft",), "selection": ("data", "selection"), "teacher": ("models", "teacher")}[section]

    def nest(d):
        for k in reversed(where):
            d = {k: d}
        return d
    cfg = _merged(nest(default), nest(override))
    resolve_alternatives(cfg, SCHEMA, [("config.yaml", nest(default)), ("mine.yaml", nest(override))])
    for k in where:
        cfg = cfg[k]
    assert cfg == expected


def test_alternatives_both_set_or_none_set_name_both_keys():
    cfg = {"sft": {"epochs": 1, "steps": 5}}
    with pytest.raises(ConfigError, match=r"^sft: `epochs` and `steps` are both set in mine.yaml, but "
                                          r"they are alternatives: keep one of them"):
        resolve_alternatives(copy.deepcopy(cfg), SCHEMA, [("mine.yaml", cfg)])
    with pytest.raises(ConfigError, match=r"^sft: `epochs` and `steps` are both set"):
        resolve_alternatives(copy.deepcopy(cfg), SCHEMA)
    with pytest.raises(ConfigError, match=r"^data\.selection: set one of `fraction` or `top_n`"):
        resolve_alternatives({"data": {"selection": {"fraction": None}}}, SCHEMA)


def test_numbers_from_the_command_line_name_the_configfile():
    """snakemake's --config reads nested values as text (``train_defaults='{lr_warmup_steps: 5}'``
    gives '5'): the spelling is right, so the message points at --configfile instead."""
    cfg = {"train_defaults": {"lr_warmup_steps": "5", "lr": "-1.0e-3"}, "sft": {"lr": "1e-4"}}
    got = number_strings(cfg, SCHEMA)
    assert got[:2] == [f"train_defaults.{k}: {v!r} is text, not a number: snakemake's --config reads values "
                       f"nested in a section as text; set train_defaults.{k} in a --configfile instead"
                       for k, v in (("lr_warmup_steps", "5"), ("lr", "-1.0e-3"))]
    assert got[2].startswith("sft.lr: '1e-4' is read by YAML as text")   # a file's spelling


def test_numbers_written_as_text_get_the_yaml_spelling():
    cfg = yaml.safe_load("sft: {lr: 1e-4, steps: 1e3}\nexperiments: {x: {train: {lr: 5E-5}}}\n"
                         "train_defaults: {objective: {kl_loss_coef: 2e3}}\nmodels: {m: {path: 1e5}}\n")
    assert cfg["sft"]["lr"] == "1e-4"            # YAML 1.1 without a decimal point: text
    assert number_strings(cfg, SCHEMA) == [
        "sft.lr: '1e-4' is read by YAML as text, not a number (YAML wants a decimal point and a "
        "signed exponent); write 1.0e-4",
        "sft.steps: '1e3' is read by YAML as text, not a number (YAML wants a decimal point and a "
        "signed exponent); write 1000",
        "experiments.x.train.lr: '5E-5' is read by YAML as text, not a number (YAML wants a "
        "decimal point and a signed exponent); write 5.0E-5",
        "train_defaults.objective.kl_loss_coef: '2e3' is read by YAML as text, not a number (YAML "
        "wants a decimal point and a signed exponent); write 2.0e+3",
    ]
    assert yaml.safe_load("x: 1.0e-4\ny: 2.0e+3")["x"] == 1e-4      # the advice parses
    with pytest.raises(ConfigError, match=r"^sft\.lr: '1e-4' .*write 1.0e-4"):
        prepare_config(cfg, ROOT / "config" / "schema.yaml")


# ------------------------------------------------------------------------ real dry runs


def dry_run(workdir: Path, *configs, snakefile: Path = ROOT / "Snakefile"):
    args = ["--configfile", *map(str, configs)] if configs else []
    return subprocess.run([SNAKEMAKE, "-n", "-s", str(snakefile), "--directory", str(workdir),
                           "--cores", "2", *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def _override(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_dry_run_stops_on_a_model_without_weights_and_a_bad_benchmark(tmp_path):
    teacher = model_dir(tmp_path, "teacher", 384, weights=None)
    out = dry_run(tmp_path, ROOT / "config" / "config.yaml",
                  _override(tmp_path, {"models": {"teacher": {"path": teacher}}}))
    text = out.stdout + out.stderr
    assert out.returncode != 0 and f"models.teacher.path: {teacher} has config.json but no weights" in text
    assert "rule " not in text                   # stopped before any job was planned
    bench = tmp_path / "aime.parquet"
    write_parquet(pd.DataFrame({"problem_idx": [1, 1], "problem": ["a?", "b?"], "answer": ["1", "2"]}), bench)
    out = dry_run(tmp_path, ROOT / "config" / "config.yaml",
                  _override(tmp_path, {"data": {"benchmarks": {"aime": {"source": str(bench)}}}}))
    assert out.returncode != 0
    assert f"data.benchmarks.aime.source: {bench}: problem ids repeated in problem_idx: '1'" in out.stdout + out.stderr


def test_dry_run_switches_alternatives_and_warns(tmp_path):
    out = dry_run(tmp_path, ROOT / "config" / "config.yaml", _override(
        tmp_path, {"sft": {"steps": 3}, "data": {"selection": {"top_n": 10}}, "eval": {"temperature": 0}}))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Warning: eval.temperature is 0 with eval.n = 4" in out.stdout + out.stderr


def test_dry_run_names_the_line_of_a_broken_default_config(tmp_path):
    """The default config is read by the Snakefile, which parses it first (a copy of the
    workflow whose config/config.yaml has a syntax error)."""
    wf = tmp_path / "wf"
    (wf / "config").mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", wf / "Snakefile")
    shutil.copy(ROOT / "config" / "schema.yaml", wf / "config" / "schema.yaml")
    lines = (ROOT / "config" / "config.yaml").read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if line.startswith("eval:")) + 2
    lines[n - 1] = "  n: [4"                     # an unclosed flow sequence on line n
    (wf / "config" / "config.yaml").write_text("\n".join(lines) + "\n")
    out = dry_run(tmp_path, snakefile=wf / "Snakefile")
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"{wf}/config/config.yaml, line " in text and "invalid YAML" in text
    assert f"at line {n}, column 6" in text, text[-2000:]
