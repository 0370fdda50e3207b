"""The claims table on three seeds: the default study run with ``seed: 0``, ``1`` and ``2``.

Issue #14's honesty rule: every claim must also hold on other seeds (issue #22: on 0, 1 and 2). The seed reaches every
stage (problems, tokenizer, pretraining, rollouts, training, evaluation sampling), so ``seed: 1``
is a new tiny world and a new study, not a resample of the evaluation. Seed 0 is the default
``make run`` in the repository's ``results/`` (run if not finished); every other seed runs in its
own working directory under ``benchmarks/tmp/claims_seed<N>/`` (about as long as ``make run``:
15-25 minutes on 2 cores). Not part of ``make run`` or ``make test``.

    .venv/bin/python benchmarks/claims_seeds.py                  # seeds 0, 1 and 2
    .venv/bin/python benchmarks/claims_seeds.py --seeds 2 --merge  # rerun one, keep the others

Writes ``benchmarks/results/claims_seeds.csv`` (one row per seed and claim, each naming the host's
CPU, ``torch.backends.cpu.get_cpu_capability()`` and the CPU kernel pins it ran with) and
``benchmarks/results/claims_seeds.json`` (wall times, machine load, which claims hold on every
seed).  Numbers move between hosts as they move between seeds (another CPU builds another tiny
world from the same seed); the verdicts are what should agree.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402
from study import run_study  # noqa: E402

TARGET = "results/tables/claims.csv"
PINS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_NUM_THREADS")


def host() -> dict:
    """The machine block of every recorded row."""
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "pins": " ".join(f"{k}={os.environ[k]}" for k in PINS if os.environ.get(k))}


def run_seed(seed: int, cores: int) -> tuple[Path, float]:
    """Run the study for ``seed``; return its working directory and the wall time in seconds."""
    workdir = ROOT if seed == 0 else ROOT / "benchmarks" / "tmp" / f"claims_seed{seed}"
    # seed 0 is the repository's own run (config.yaml's seed), with no overlay file in the root
    return run_study(workdir, ["all"], config={"seed": seed} if seed else None, cores=cores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--merge", action="store_true",
                    help="keep the recorded rows of the seeds not rerun (from --out.csv)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "claims_seeds"))
    args = ap.parse_args()
    tables, walls = [], {}
    for seed in args.seeds:
        print(f"== seed {seed}", flush=True)
        workdir, walls[str(seed)] = run_seed(seed, args.cores)
        table = pd.read_csv(workdir / TARGET, keep_default_na=False)
        table.insert(0, "seed", seed)
        for k, v in host().items():
            table[k] = v
        tables.append(table)
        print(table[["claim", "value", "se", "threshold", "holds"]].to_string(index=False), flush=True)
    if args.merge and Path(f"{args.out}.csv").exists():
        old = pd.read_csv(f"{args.out}.csv", keep_default_na=False)
        tables.insert(0, old[~old["seed"].isin(args.seeds)])
        walls = json.loads(Path(f"{args.out}.json").read_text()).get("wall_s", {}) | walls
    both = pd.concat(tables, ignore_index=True).sort_values(["seed", "claim"], kind="stable")
    both.to_csv(f"{args.out}.csv", index=False)
    holds = both.pivot(index="claim", columns="seed", values="holds").astype(str)
    every = [c for c in holds.index if (holds.loc[c] == "True").all()]
    write_json({"seeds": sorted(both["seed"].unique().tolist()), "wall_s": walls, "holds": holds.to_dict(orient="index"),
                "hold_on_every_seed": every, **host(), "cores": args.cores,
                "load_avg_after": os.getloadavg()}, f"{args.out}.json")
    print(f"hold on every seed: {every or 'none'} -> {args.out}.csv")


if __name__ == "__main__":
    main()
