"""Experiment trackers of ``MetricsWriter``: TensorBoard events read back, and W&B in offline mode."""
from __future__ import annotations

import json
import struct
import time

import pytest

from opd.io import read_jsonl
from opd.runlog import MetricsWriter

ROWS = [{"train/loss": 1.5, "opd/overlap_ratio": 0.25, "rollout/accuracy": 0.5, "note": "text"},
        {"train/loss": 0.5, "opd/overlap_ratio": 0.75, "rollout/accuracy": 1, "note": "text"}]


def test_tensorboard_events_hold_every_numeric_metric(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard missing: `make` installs the core extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    w = MetricsWriter(tmp_path / "metrics.jsonl", tensorboard=True)
    for step, row in enumerate(ROWS, start=1):
        w.log(step, row)
    w.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]   # the jsonl is unchanged
    acc = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "opd/overlap_ratio", "rollout/accuracy"}
    for key in ("train/loss", "opd/overlap_ratio", "rollout/accuracy"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([float(r[key]) for r in ROWS])
    # a fresh writer starts new event files
    MetricsWriter(tmp_path / "metrics.jsonl", tensorboard=True).close()
    assert EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["scalars"] == []


def wandb_records(raw: bytes):
    """The records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then LevelDB
    log blocks of 32 KiB holding chunks with a 7-byte header (crc32, length, type: 1 full,
    2 first, 3 middle, 4 last); a block tail shorter than a header is padding."""
    assert raw[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        chunk = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            yield buf


def test_wandb_offline_run_records_every_step(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb missing: `make` installs the core extra")
    monkeypatch.setenv("WANDB_SILENT", "true")
    w = MetricsWriter(tmp_path / "metrics.jsonl", wandb={"mode": "offline", "project": "opd-test"},
                      config={"lr": 0.1})
    run_dir = w._wandb.dir
    for step, row in enumerate(ROWS, start=1):
        w.log(step, row)
    w.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))          # a syncable offline run
    assert run_dir.startswith(str(runs[0]))
    # every step is in the run's transaction log (what `wandb sync` uploads), read back as
    # wandb's protobuf records
    from wandb.proto import wandb_internal_pb2

    def history() -> dict:
        steps = {}
        for data in wandb_records(next(runs[0].glob("*.wandb")).read_bytes()):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            if rec.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                steps[items["_step"]] = items
        return steps

    # wandb's core service writes the log in its own process: under load (once in a full
    # `make test`, 2026-12-05) the file was read before its history landed, so read it again
    # for up to 20 s before failing
    deadline = time.monotonic() + 20
    while sorted(steps := history()) != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(steps) == [1, 2] and steps[1]["opd/overlap_ratio"] == 0.25
    assert steps[2]["train/loss"] == 0.5 and steps[2]["rollout/accuracy"] == 1 and "note" not in steps[2]
    with pytest.raises(ValueError, match="mode"):
        MetricsWriter(tmp_path / "m2.jsonl", wandb={"mode": "sometimes", "project": "p"})
    assert wandb.run is None


def test_verl_maps_the_same_switches_to_its_trackers(tmp_path):
    """On verl, ``logging`` becomes ``trainer.logger`` (and the project / environment of its
    TensorBoard and W&B loggers); the composed command is checked against verl in
    tests/test_verl_backend.py's composition test."""
    from opd.train.config import TrainConfig
    from opd.train.verl.command import tracker_env, verl_overrides

    paths = {"student": "/m/s", "teacher": "/m/t", "train_parquet": "/d/t.parquet", "val_parquet": "/d/v.parquet",
             "output_dir": str(tmp_path / "verl"), "reward_fn_file": "/r.py"}
    plain = TrainConfig.from_dict({"method": "opd", "objective": {"strategy": "only_tch"}})
    assert verl_overrides("e", plain, paths)["trainer.logger"] == ["console", "file"]
    logging = {"tensorboard": True, "wandb": {"mode": "offline", "project": "study", "entity": "lab"}}
    cfg = TrainConfig.from_dict({"method": "opd", "objective": {"strategy": "only_tch"}, "logging": logging})
    ov = verl_overrides("e", cfg, paths)
    assert ov["trainer.logger"] == ["console", "file", "tensorboard", "wandb"]
    assert ov["trainer.project_name"] == "study"
    assert tracker_env(logging, tmp_path) == {"TENSORBOARD_DIR": str(tmp_path / "tensorboard"),
                                              "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                                              "WANDB_ENTITY": "lab"}
    with pytest.raises(ValueError, match="logging"):
        TrainConfig.from_dict({"method": "opd", "logging": {"mlflow": True}})
