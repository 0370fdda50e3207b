"""Atomic writers under real kills, and the permissions of what they write (issue #11, 12-13).

A writer is SIGKILLed inside ``atomic_path`` / ``atomic_dir`` (a subprocess, and a real Snakemake
job through the stage adapter); the rerun must leave a complete output and no hidden temporary.
Outputs must get ``0o666 & ~umask`` (files) and ``0o777 & ~umask`` (folders), checked in
subprocesses that set their own umask.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT
from opd.checkpoint import atomic_dir
from opd.io import atomic_path, remove_stale_temporaries, temporary_prefix, write_text

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
MB = 1 << 20

# A writer that fills the temporary, says so, then waits to be killed while `hold` exists.
WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from opd.checkpoint import atomic_dir
    from opd.io import atomic_path
    kind, target, hold, tag = sys.argv[1:]
    def wait():
        print("inside", flush=True)
        while Path(hold).exists():
            time.sleep(0.05)
    if kind == "file":
        with atomic_path(target, ".bin") as tmp:
            with open(tmp, "wb") as fh:
                for _ in range(8):
                    fh.write(os.urandom(1 << 20))
                fh.flush()
                wait()
                fh.write(tag.encode())
    else:
        with atomic_dir(target) as tmp:
            for i in range(3):
                (tmp / f"model-{i}.safetensors").write_bytes(os.urandom(1 << 21))
            wait()
            (tmp / "config.json").write_text(tag)
""")


def hidden(folder: Path) -> list[str]:
    """Names of the hidden entries of ``folder`` (where temporaries live)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def start_writer(kind: str, target: Path, hold: Path, tag: str) -> subprocess.Popen:
    """Start the writer and return once it is inside the atomic block."""
    hold.touch()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target), str(hold), tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    assert line.strip() == "inside", proc.stderr.read()
    return proc


def finish_writer(kind: str, target: Path, hold: Path, tag: str) -> None:
    """A complete run of the writer (the rerun after a kill)."""
    hold.unlink(missing_ok=True)
    out = subprocess.run([sys.executable, "-c", WRITER, kind, str(target), str(hold), tag],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_killed_write_leaves_its_temporary_and_the_rerun_removes_it(tmp_path, kind):
    out = tmp_path / "results"
    target, hold = out / ("rollouts.bin" if kind == "file" else "model"), tmp_path / "hold"
    finish_writer(kind, target, hold, "v1")  # an earlier, complete output
    proc = start_writer(kind, target, hold, "v2")
    kill(proc)
    left = hidden(out)
    assert len(left) == 1 and left[0].startswith(f".{target.name}.tmp-")
    assert f"-{proc.pid}-" in left[0]  # named after the killed writer
    big = out / left[0]
    size = big.stat().st_size if kind == "file" else sum(f.stat().st_size for f in big.iterdir())
    assert size >= 6 * MB  # the gigabytes-per-kill the rerun has to reclaim
    # the earlier output is untouched and complete: a kill never leaves one that only looks so
    if kind == "file":
        assert target.stat().st_size == 8 * MB + 2 and target.read_bytes().endswith(b"v1")
    else:
        assert (target / "config.json").read_text() == "v1"
    finish_writer(kind, target, hold, "v2")
    assert hidden(out) == []
    if kind == "file":
        assert target.stat().st_size == 8 * MB + 2 and target.read_bytes().endswith(b"v2")
    else:
        assert sorted(p.name for p in target.iterdir()) == [
            "config.json", "model-0.safetensors", "model-1.safetensors", "model-2.safetensors"]
        assert (target / "config.json").read_text() == "v2"


def test_a_writer_keeps_the_temporary_of_a_live_writer(tmp_path):
    target, hold = tmp_path / "out" / "table.bin", tmp_path / "hold"
    proc = start_writer("file", target, hold, "slow")
    try:
        live = hidden(target.parent)
        with atomic_path(target, ".bin") as tmp:  # a second writer of the same target
            tmp.write_bytes(b"fast")
        assert target.read_bytes() == b"fast"
        assert hidden(target.parent) == live  # the live writer's temporary is not pulled away
    finally:
        kill(proc)
    assert remove_stale_temporaries(target, keep_live=True) == [target.parent / live[0]]
    assert hidden(target.parent) == []


def test_removal_touches_only_the_targets_temporaries(tmp_path):
    target = tmp_path / "x.parquet"
    stale = [".x.parquet.tmp-node-17-42-abc_1234.parquet", ".x.parquet.tmp-other-7-zz9"]
    keep = ["x.parquet", "x.parquet.progress.jsonl", ".x.parquet.orig", ".y.parquet.tmp-h-1-abc",
            ".x.parquet.tmp-h-1-abc.tmp-h-2-def", ".xx.parquet.tmp-h-1-abc", ".x.parquet.tmp-h-a-b"]
    for name in stale[:1] + keep:
        (tmp_path / name).write_text("data")
    (tmp_path / stale[1]).mkdir()
    (tmp_path / stale[1] / "model.safetensors").write_bytes(b"w" * 100)
    mine = tmp_path / (temporary_prefix(target) + "abc123.parquet")  # a live process: this one
    mine.write_text("mine")
    # a writer: other hosts' leftovers go (Snakemake runs one job per output), a live one stays
    removed = remove_stale_temporaries(target, keep_live=True)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + [mine.name])
    # a job start: everything of this target goes, nothing else
    assert remove_stale_temporaries(target) == [mine]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temporaries(tmp_path / "missing" / "x.parquet") == []


def test_a_failed_block_leaves_nothing_and_bad_suffixes_are_refused(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "w").write_text("x")
            raise RuntimeError("save failed")
    with pytest.raises(RuntimeError):
        with atomic_path(target, ".json") as tmp:
            tmp.write_text("{")
            raise RuntimeError("serialisation failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="plain extension"):
        with atomic_path(target, ".tmp-1-2"):
            pass
    write_text("ok", target)
    assert target.read_text() == "ok" and hidden(tmp_path) == []


# Writes every kind of output under each umask and reports the modes it finds.
MODES = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import pandas as pd
    from opd.checkpoint import copy_checkpoint, save_hf
    from opd.io import write_json, write_parquet, write_text
    from opd.world.models import ModelSpec, init_model, train_tokenizer
    tok = train_tokenizer(["<|im_start|>user\\n1+1<|im_end|>\\n<|im_start|>assistant\\n2<|im_end|>"] * 20, 300)
    net = init_model(ModelSpec(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                               intermediate_size=32), tok)
    root, report = Path(sys.argv[1]), {}
    src = root / "foreign"  # another tool's export, private to its owner
    save_hf(net, tok, src)
    os.chmod(src, 0o700)
    os.chmod(src / "config.json", 0o600)
    for umask in (0o022, 0o027, 0o002):
        os.umask(umask)
        d = root / oct(umask)
        write_parquet(pd.DataFrame({"a": [1]}), d / "x.parquet")
        write_json({"a": 1}, d / "x.json")
        write_text("a", d / "x.txt")
        save_hf(net, tok, d / "checkpoints" / "step_0001")
        copy_checkpoint(src, d / "copied", tokenizer_from=src)
        report[oct(umask)] = {str(p.relative_to(d)): os.stat(p).st_mode & 0o777
                              for p in sorted(d.rglob("*"))}
    print(json.dumps(report))
""")


def test_outputs_follow_the_umask(tmp_path):
    out = subprocess.run([sys.executable, "-c", MODES, str(tmp_path)], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) == {"0o22", "0o27", "0o2"}
    for umask, modes in report.items():
        u = int(umask, 8)
        file_mode, dir_mode = 0o666 & ~u, 0o777 & ~u
        assert modes["x.parquet"] == modes["x.json"] == modes["x.txt"] == file_mode, (umask, modes)
        assert modes["checkpoints"] == modes["checkpoints/step_0001"] == dir_mode, (umask, modes)
        saved = {k: v for k, v in modes.items() if k.startswith("checkpoints/step_0001/")}
        assert {"checkpoints/step_0001/config.json", "checkpoints/step_0001/model.safetensors",
                "checkpoints/step_0001/tokenizer.json"} <= set(saved)
        assert set(saved.values()) == {file_mode}, (umask, saved)  # files our code creates
        copied = {k: v for k, v in modes.items() if k.startswith("copied/")}
        assert "copied/config.json" in copied  # 0600 in the source folder
        assert modes["copied"] == dir_mode and set(copied.values()) == {file_mode}, (umask, copied)
    assert report["0o22"]["x.json"] == 0o644 and report["0o22"]["checkpoints/step_0001"] == 0o755
    assert report["0o27"]["x.json"] == 0o640 and report["0o27"]["checkpoints/step_0001"] == 0o750


# A stage, registered under opd.stages for this test only, whose save is slow while `hold` exists.
STAGE = textwrap.dedent("""
    import json, os, sys, time, types
    from pathlib import Path
    import opd.stages

    def slow_save(*, model, hold):
        from opd.checkpoint import atomic_dir  # here: numpy must load after the kernel pins
        out = Path(model)
        seen = sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))
        with atomic_dir(out) as tmp:
            (tmp / "seen_at_start.json").write_text(json.dumps(seen))
            for i in range(3):
                (tmp / f"model-{i}.safetensors").write_bytes(os.urandom(1 << 21))
            (tmp / "inside").touch()
            while Path(hold).exists():
                time.sleep(0.05)
            (tmp / "config.json").write_text("{}")

    stages = types.ModuleType("opd.stages.killtest")
    stages.slow_save = slow_save
    sys.modules["opd.stages.killtest"] = stages
    opd.stages.RULES["slow_save"] = "killtest"
    opd.stages.run(snakemake)
""")

SNAKEFILE = textwrap.dedent("""
    rule slow_save:
        output:
            model=directory("results/model"),
        params:
            hold=config["hold"],
        log:
            "results/logs/slow_save.log",
        script:
            "stage_script.py"
""")


def test_a_killed_snakemake_job_leaves_no_temporary_after_the_rerun(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "stage_script.py").write_text(STAGE)
    hold = tmp_path / "hold"
    hold.touch()
    cmd = [SNAKEMAKE, "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), "--cores",
           "1", "--config", f"hold={hold}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    results, deadline = tmp_path / "results", time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if results.is_dir() and any((p / "inside").exists() for p in results.glob(".model.tmp-*")):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and the job's script, inside save
    proc.wait()
    time.sleep(0.5)
    left = hidden(results)
    assert len(left) == 1 and left[0].startswith(".model.tmp-"), "the kill should land inside the save"
    assert not (results / "model").exists()
    hold.unlink()
    for extra in (["--unlock"], ["--rerun-incomplete"]):
        out = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr[-3000:]
    model = results / "model"
    assert json.loads((model / "seen_at_start.json").read_text()) == []  # gone before the stage ran
    assert (model / "config.json").exists() and len(list(model.glob("*.safetensors"))) == 3
    assert hidden(results) == []
    log = (results / "logs" / "slow_save.log").read_text()
    assert f"removed results/{left[0]}, left by a killed run of this job" in log
