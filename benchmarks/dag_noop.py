"""No-op rerun time: ``snakemake -n`` on a finished workflow, against the same call with torch.

A finished workflow has nothing to do, so this measures what every ``snakemake`` call pays
before any job: starting Python, importing the workflow's code (``opd.config``,
``opd.backends``, ...), validating the config and building the DAG. The second variant runs the
same command line after ``import torch``, what the DAG build cost when the configs lived inside
the trainer, and ``snakemake --version``, Snakemake's own start-up, which bounds what the
workflow can reach. Both run alternately in one process tree on the same machine, so load affects
both; the ratio is the number to trust. Target: a median under 2 s on 2 cores.

Needs a finished workflow in ``--workdir`` (``make run`` first for the default one)::

    .venv/bin/python benchmarks/dag_noop.py                    # the default workflow, 7 rounds
    .venv/bin/python benchmarks/dag_noop.py --rounds 3 --workdir /tmp/wf --configfile tests/configs/small.yaml

Writes ``benchmarks/results/dag_noop.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402

WITH_TORCH = "import torch, sys; from snakemake.cli import main; sys.argv[0] = 'snakemake'; main()"


def snakemake_args(workdir: Path, configfiles: list[str]) -> list[str]:
    args = ["-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "-n", "--cores", "2"]
    if configfiles:
        args += ["--configfile", *configfiles]
    return args


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    took = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return took, out.stdout + out.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=str(ROOT))
    ap.add_argument("--configfile", nargs="*", default=[])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dag_noop.json"))
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    sm_args = snakemake_args(Path(args.workdir), args.configfile)
    plain = [str(bindir / "snakemake"), *sm_args]
    heavy = [sys.executable, "-c", WITH_TORCH, *sm_args]
    _, text = timed(plain)
    if "Nothing to be done" not in text:
        raise SystemExit(f"the workflow in {args.workdir} is not finished (snakemake -n has jobs to run); "
                         "run `make run` (or the same config without -n) first")
    times = {"plain": [], "with_torch": [], "snakemake_version": []}
    for _ in range(args.rounds):
        times["plain"].append(timed(plain)[0])
        times["with_torch"].append(timed(heavy)[0])
        times["snakemake_version"].append(timed([str(bindir / "snakemake"), "--version"])[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "what": "snakemake -n on a finished workflow (nothing to do), vs the same after `import torch`",
        "workdir": args.workdir, "configfiles": args.configfile, "rounds": args.rounds,
        "median_s": med, "times_s": times, "ratio_with_torch_over_plain": med["with_torch"] / med["plain"],
        "workflow_share_s": med["plain"] - med["snakemake_version"],
        "note": "snakemake_version: `snakemake --version`, Snakemake's own start (imports, plugins) "
                "that every call pays before reading the workflow; workflow_share_s is the rest",
        "target_s": 2.0, "meets_target": med["plain"] < 2.0,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                    "python": platform.python_version()},
    }
    write_json(result, args.out)
    print(f"no-op snakemake -n: median {med['plain']:.2f} s (with torch {med['with_torch']:.2f} s, "
          f"x{result['ratio_with_torch_over_plain']:.2f}; `snakemake --version` alone "
          f"{med['snakemake_version']:.2f} s) -> {args.out}")


if __name__ == "__main__":
    main()
