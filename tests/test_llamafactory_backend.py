"""The LLaMA-Factory SFT backend: dataset and YAML generation, log parsing, checkpoint assembly.

Pure-Python tests run in the core venv. One real run shells out to
``.venv-llamafactory/bin/llamafactory-cli`` (built by ``make env-llamafactory``) on a tiny model
and is skipped when it is missing; it also checks, from LLaMA-Factory's own tokenized dataset,
that the ids it trains on are exactly ``opd.sft.encode_examples``'s.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from opd.sft.llamafactory import (STUDENT_TEMPLATE, dataset_info, finalize_checkpoint, llamafactory_command,
                                       llamafactory_env, read_trainer_log, render_rows, run_sft, train_yaml,
                                       write_dataset)

ROOT = Path(__file__).resolve().parents[1]
LF_CLI = ROOT / ".venv-llamafactory" / "bin" / "llamafactory-cli"
CFG = {"lr": 1e-4, "epochs": 1, "batch_size": 32, "max_len": 160}
CPU = {"use_cpu": True, "bf16": False}

needs_lf = pytest.mark.skipif(not LF_CLI.exists(),
                              reason="LLaMA-Factory env missing: run `make env-llamafactory` to build "
                                     ".venv-llamafactory")


def rows_from(problems, n):
    return [{"prompt": [{"role": "user", "content": p.prompt}], "response": p.solution} for p in problems[:n]]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ----------------------------------------------------------------------------- dataset
def test_write_dataset_sharegpt_with_system(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}],
             "response": "2"},
            {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}], "response": "d"}]
    write_dataset(rows, tmp_path, name="x")
    recs = read_jsonl(tmp_path / "x.jsonl")
    assert recs[0] == {"conversations": [{"from": "human", "value": "1+1?"}, {"from": "gpt", "value": "2"}],
                       "system": "Be brief."}
    assert [t["from"] for t in recs[1]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert recs[1]["system"] == ""
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info == dataset_info("x")
    assert info["x"]["file_name"] == "x.jsonl" and info["x"]["formatting"] == "sharegpt"
    assert info["x"]["columns"] == {"messages": "conversations", "system": "system"}
    assert info["x"]["tags"]["user_tag"] == "human" and info["x"]["tags"]["assistant_tag"] == "gpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json", "x.jsonl"]  # no temp files


def test_write_dataset_rendered_prompt_and_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"prompt": ["<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"],
                       "response": ["r<|im_end|>"], "extra": [1]})
    write_dataset(df, tmp_path)
    (rec,) = read_jsonl(tmp_path / "opd_rollouts.jsonl")
    assert rec["conversations"] == [{"from": "human", "value": df["prompt"][0]},
                                    {"from": "gpt", "value": "r<|im_end|>"}]


@pytest.mark.parametrize("prompt", [[{"role": "assistant", "content": "x"}],
                                    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                    [{"role": "tool", "content": "x"}], []])
def test_write_dataset_rejects_bad_turns(tmp_path, prompt):
    with pytest.raises(ValueError, match="turn|role"):
        write_dataset([{"prompt": prompt, "response": "r"}], tmp_path)


def test_write_dataset_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="no SFT rows"):
        write_dataset([], tmp_path)


def test_render_rows_gives_native_ids(tiny_tokenizer, tiny_problems):
    """LLaMA-Factory's `empty` template tokenizes each part alone: that must equal encode_examples."""
    from opd.sft.native import encode_examples
    rows = rows_from(tiny_problems["train"], 5)
    rows[0]["prompt"] = [{"role": "system", "content": "Be brief."}] + rows[0]["prompt"]
    native = encode_examples(tiny_tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows], 160)
    for r, (ids, labels) in zip(render_rows(tiny_tokenizer, rows), native):
        p = tiny_tokenizer.encode(r["prompt"], add_special_tokens=False)
        q = tiny_tokenizer.encode(r["response"], add_special_tokens=False)
        assert p + q == ids and [-100] * len(p) + q == labels
        assert q[-1] == tiny_tokenizer.eos_token_id


# ----------------------------------------------------------------------------- YAML
def test_train_yaml_maps_native_config():
    cfg = CFG | {"warmup_ratio": 0.2, "weight_decay": 0.01, "grad_clip": 0.5, "log_every": 5, "backend": "x"}
    y = train_yaml(cfg, "/m", "/d", "/o", 7, CPU, n_examples=200)
    assert y["stage"] == "sft" and y["do_train"] is True and y["finetuning_type"] == "full"
    assert y["model_name_or_path"] == "/m" and y["dataset_dir"] == "/d" and y["output_dir"] == "/o"
    assert y["dataset"] == "opd_rollouts" and y["template"] == "empty"      # the `student` default
    assert y["learning_rate"] == 1e-4 and y["num_train_epochs"] == 1.0 and "max_steps" not in y
    assert y["per_device_train_batch_size"] == 32 and y["gradient_accumulation_steps"] == 1
    assert y["cutoff_len"] == 160 and y["weight_decay"] == 0.01 and y["max_grad_norm"] == 0.5
    assert y["warmup_steps"] == 1                         # int(0.2 * ceil(200 / 32)) as native
    assert y["lr_scheduler_type"] == "cosine_with_min_lr" and y["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1}
    assert (y["adam_beta1"], y["adam_beta2"]) == (0.9, 0.95)
    assert y["seed"] == 7 and y["use_cpu"] is True and y["bf16"] is False
    assert y["report_to"] == "none" and y["logging_steps"] == 1 and y["save_strategy"] == "no"
    assert y["trust_remote_code"] is False and y["overwrite_output_dir"] is True and y["plot_loss"] is False
    assert y["mask_history"] is True


def test_train_yaml_steps_templates_and_extra():
    y = train_yaml({"lr": 1e-3, "steps": 40, "batch_size": 16, "max_len": 64}, "/m", "/d", "/o", 0,
                   {"template": "qwen3_nothink", "extra": {"learning_rate": 5e-5, "flash_attn": "sdpa"}})
    assert y["max_steps"] == 40 and "num_train_epochs" not in y and y["warmup_steps"] == 2
    assert y["template"] == "qwen3_nothink" and y["learning_rate"] == 5e-5 and y["flash_attn"] == "sdpa"
    assert y["use_cpu"] is False and y["bf16"] is True                      # schema defaults (GPU)
    y = train_yaml(CFG, "/m", "/d", "/o", 0, CPU)                           # no row count: a fraction
    assert y["warmup_steps"] == 0.05


def test_train_yaml_batch_split():
    y = train_yaml(CFG, "/m", "/d", "/o", 0, {"gpus": 4})
    assert (y["per_device_train_batch_size"], y["gradient_accumulation_steps"]) == (8, 1)
    y = train_yaml(CFG, "/m", "/d", "/o", 0, {"gpus": 2, "extra": {"per_device_train_batch_size": 4}})
    assert (y["per_device_train_batch_size"], y["gradient_accumulation_steps"]) == (4, 4)
    with pytest.raises(ValueError, match="batch_size 32"):
        train_yaml(CFG, "/m", "/d", "/o", 0, {"extra": {"per_device_train_batch_size": 5}})


@pytest.mark.parametrize("key", ["lr_decay", "mini_batch_size"])
def test_train_yaml_rejects_unknown_sft_keys(key):
    with pytest.raises(ValueError, match=key):
        train_yaml(CFG | {key: 1}, "/m", "/d", "/o", 0, CPU)


def test_train_yaml_rejects_bad_options_and_config():
    with pytest.raises(ValueError, match="templat"):
        train_yaml(CFG, "/m", "/d", "/o", 0, {"templat": "x"})
    with pytest.raises(ValueError, match="exactly one"):
        train_yaml(CFG | {"steps": 3}, "/m", "/d", "/o", 0, CPU)


def test_command_and_env():
    assert llamafactory_command("/v/bin/llamafactory-cli", Path("/w/t.yaml")) == \
        ["/v/bin/llamafactory-cli", "train", "/w/t.yaml"]
    env = llamafactory_env(CPU, base={"PATH": "/bin", "PYTHONPATH": "/core"}, cache_dir="/c")
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert "PYTHONPATH" not in env and env["PATH"] == "/bin" and env["HF_DATASETS_CACHE"] == "/c"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    env = llamafactory_env({"gpus": 2}, base={})
    assert env["FORCE_TORCHRUN"] == "1" and env["NPROC_PER_NODE"] == "2" and "CUDA_VISIBLE_DEVICES" not in env


# ----------------------------------------------------------------------------- outputs
def test_read_trainer_log(tmp_path):
    lines = [{"current_steps": 1, "total_steps": 2, "loss": 2.5, "lr": 1e-4, "epoch": 0.5},
             {"current_steps": 2, "total_steps": 2, "loss": 2.0, "lr": 5e-5, "epoch": 1.0},
             {"current_steps": 2, "total_steps": 2, "epoch": 1.0}]                 # end-of-train summary
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"current_st')
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": 1, "loss": 2.5, "grad_norm": 3.0, "learning_rate": 1e-4},
        {"step": 2, "loss": 2.0, "grad_norm": 1.5, "learning_rate": 5e-5},
        {"step": 2, "train_loss": 2.25, "train_runtime": 1.0}]}))
    assert read_trainer_log(tmp_path) == [
        {"step": 1, "train/loss": 2.5, "train/lr": 1e-4, "train/grad_norm": 3.0},
        {"step": 2, "train/loss": 2.0, "train/lr": 5e-5, "train/grad_norm": 1.5}]
    (tmp_path / "trainer_state.json").unlink()
    assert [sorted(r) for r in read_trainer_log(tmp_path)] == [["step", "train/loss", "train/lr"]] * 2
    assert read_trainer_log(tmp_path / "missing") == []


def fake_dirs(tmp_path):
    out, student = tmp_path / "output", tmp_path / "student"
    out.mkdir()
    student.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "qwen3", "use_cache": False}))
    (out / "model.safetensors").write_bytes(b"weights")
    (out / "tokenizer_config.json").write_text("{\"changed\": true}")
    (out / "training_args.bin").write_bytes(b"x")
    (student / "config.json").write_text(json.dumps({"model_type": "qwen3", "use_cache": True}))
    (student / "tokenizer.json").write_text("{\"tok\": 1}")
    (student / "tokenizer_config.json").write_text("{\"orig\": true}")
    (student / "chat_template.jinja").write_text("{{ messages }}")
    return out, student


def test_finalize_checkpoint(tmp_path):
    out, student = fake_dirs(tmp_path)
    model = tmp_path / "sft" / "model"
    model.mkdir(parents=True)
    (model / "stale.txt").write_text("old")
    finalize_checkpoint(out, student, model)
    assert sorted(p.name for p in model.iterdir()) == ["chat_template.jinja", "config.json", "model.safetensors",
                                                       "tokenizer.json", "tokenizer_config.json"]
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (model / name).read_bytes() == (student / name).read_bytes()
    assert (model / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((model / "config.json").read_text()) == {"model_type": "qwen3", "use_cache": True}
    assert [p.name for p in model.parent.iterdir()] == ["model"]          # no temp folder left


def test_finalize_checkpoint_refuses_incomplete_output(tmp_path):
    out, student = fake_dirs(tmp_path)
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        finalize_checkpoint(out, student, tmp_path / "model")
    (out / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="adapter"):
        finalize_checkpoint(out, student, tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("cli", [None, "/nonexistent/llamafactory-cli"])
def test_run_sft_missing_cli(tmp_path, cli):
    with pytest.raises(FileNotFoundError, match="make env-llamafactory") as e:
        run_sft(cli, [{"prompt": [{"role": "user", "content": "q"}], "response": "r"}], CFG, CPU,
                tmp_path / "student", tmp_path / "work", tmp_path / "model", tmp_path / "m.jsonl", 0)
    assert "--sdm conda" in str(e.value) and "envs/llamafactory.yaml" in str(e.value)


# ----------------------------------------------------------------------------- real run
@needs_lf
def test_run_sft_real(tmp_path, tiny_tokenizer, tiny_models, tiny_problems):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from opd.checkpoint import save_hf
    from opd.generation.config import SamplingParams
    from opd.generation.hf import generate, load_model, load_tokenizer
    from opd.sft.native import encode_examples

    student_dir, model_dir, work = tmp_path / "student", tmp_path / "sft" / "model", tmp_path / "work"
    save_hf(tiny_models[0], tiny_tokenizer, student_dir)
    rows = rows_from(tiny_problems["train"], 24)
    cfg = {"lr": 1e-3, "steps": 3, "batch_size": 8, "max_len": 96}
    options = CPU | {"template": STUDENT_TEMPLATE, "extra": {"tokenized_path": str(tmp_path / "tokenized")}}
    log = tmp_path / "lf.log"
    history = run_sft(LF_CLI, rows, cfg, options, student_dir, work, model_dir, tmp_path / "metrics.jsonl",
                      seed=0, log=log)

    # metrics: one row per step, finite losses, the names the native loop uses
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert metrics == history and [m["step"] for m in metrics] == [1, 2, 3]
    assert all(math.isfinite(m["train/loss"]) and m["train/lr"] > 0 and math.isfinite(m["train/grad_norm"])
               for m in metrics)
    assert "Running training" in log.read_text() and (work / "llamafactory.log").exists()
    assert not list((work / "output").glob("*.safetensors")) and (work / "output" / "trainer_log.jsonl").exists()

    # the checkpoint: the student's own tokenizer files, loadable by the core venv, generates
    names = [n for n in os.listdir(student_dir) if n.startswith(("tokenizer", "chat_template", "special_tokens"))]
    assert names and all((model_dir / n).read_bytes() == (student_dir / n).read_bytes() for n in names)
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    assert model.config.use_cache is True
    out = generate(model, tok, [rows[0]["prompt"]], SamplingParams(max_new_tokens=4), show_progress=False)
    assert len(out) == 1 and out[0]["n_tokens"] >= 1

    # what LLaMA-Factory tokenized is exactly what the native SFT trains on
    arrows = sorted((tmp_path / "tokenized" / "train").glob("*.arrow"))
    table = pa.concat_tables([ipc.open_stream(pa.memory_map(str(a))).read_all() for a in arrows])
    native = encode_examples(tiny_tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows], 96)
    assert table["input_ids"].to_pylist() == [ids for ids, _ in native]
    assert table["labels"].to_pylist() == [labels for _, labels in native]
