"""Run the study (the Snakefile) in a working directory of its own, for benchmarks that rerun it
with other settings (``claims_seeds.py``, ``long_opd.py``).  Not a benchmark itself.

    workdir, wall_s = run_study(ROOT / "benchmarks" / "tmp" / "x", ["all"], config={"seed": 1})
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def seed_world(workdir: Path, parts: tuple[str, ...] = ("world", "data")) -> None:
    """Copy ``results/<part>`` of the repository's default run into ``workdir`` (timestamps kept),
    so a study that changes only training reuses the built tiny world instead of rebuilding it.
    The copy is replaced on every call: a world rebuilt since is newer, and snakemake then reruns
    what depends on it in ``workdir``; an unchanged one keeps its timestamps and reruns nothing."""
    for part in parts:
        src, dst = ROOT / "results" / part, workdir / "results" / part
        if not src.exists():
            continue
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, copy_function=shutil.copy2)


def run_study(workdir: Path, targets: list[str], config: dict | None = None, cores: int = 2,
              dry_run: bool = False) -> tuple[Path, float]:
    """Run snakemake on ``targets`` in ``workdir`` with config/config.yaml, overlaid by ``config``
    (nested keys merge; written to ``workdir/overlay.yaml``); ``dry_run``: only list the jobs.
    Jobs of a copied world (``seed_world``) have no provenance records in ``workdir``, so snakemake
    reruns them only if an input is newer.  Returns (workdir, wall seconds); exits naming the log
    folder if snakemake fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(ROOT / ".venv" / "bin" / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--cores", str(cores), "--configfile", str(ROOT / "config" / "config.yaml")]
    if config:
        overlay = workdir / "overlay.yaml"
        overlay.write_text(yaml.safe_dump(config))
        cmd.append(str(overlay))
    if dry_run:
        cmd.append("-n")
    start = time.perf_counter()
    out = subprocess.run(cmd + ["--", *targets], stdin=subprocess.DEVNULL, cwd=ROOT)
    took = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"snakemake failed (exit {out.returncode}) in {workdir}; see {workdir}/results/logs/")
    return workdir, took


def host_record(cores: int) -> dict:
    """Where a benchmark ran, for its JSON: the CPU, its native capability, the cores, the load,
    and the ``kernels`` mode of ``config/config.yaml`` (the study's jobs set their own pins,
    ``opd.kernels``; this process runs unpinned, so its environment is not recorded)."""
    import os

    import torch

    from opd.runlog import cpu_model

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    return {"cpu": cpu_model(), "native_capability": torch.backends.cpu.get_cpu_capability(), "cores": cores,
            "kernels": config.get("kernels", "reproducible"), "load_avg_after": os.getloadavg()}


def axes(size: tuple[float, float] = (5.5, 3.6)):
    """A matplotlib (figure, axes) on the Agg backend, for a benchmark's PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def best_within(rows: list[dict], score: str, tie: float, cheaper: tuple[str, ...]) -> dict:
    """A sweep's selection rule: the row with the highest ``score``; among the rows within ``tie``
    of it, the one that is smallest in the keys ``cheaper`` (in order: e.g. steps, then lr)."""
    best = max(r[score] for r in rows)
    return min((r for r in rows if r[score] >= best - tie), key=lambda r: tuple(r[k] for k in cheaper))
