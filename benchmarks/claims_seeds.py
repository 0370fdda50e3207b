"""The claims table on two seeds: the default study run with ``seed: 0`` and again with ``seed: 1``.

Issue #14's honesty rule: every claim must also hold on a second seed. The seed reaches every
stage (problems, tokenizer, pretraining, rollouts, training, evaluation sampling), so ``seed: 1``
is a new tiny world and a new study, not a resample of the evaluation. Seed 0 is the default
``make run`` in the repository's ``results/`` (run if not finished); every other seed runs in its
own working directory under ``benchmarks/tmp/claims_seed<N>/`` (about as long as ``make run``:
15-25 minutes on 2 cores). Not part of ``make run`` or ``make test``.

    .venv/bin/python benchmarks/claims_seeds.py              # seeds 0 and 1
    .venv/bin/python benchmarks/claims_seeds.py --seeds 1 2  # other seeds

Writes ``benchmarks/results/claims_seeds.csv`` (one row per seed and claim) and
``benchmarks/results/claims_seeds.json`` (wall times, machine load, which claims hold on every seed).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402
from study import run_study  # noqa: E402

TARGET = "results/tables/claims.csv"


def run_seed(seed: int, cores: int) -> tuple[Path, float]:
    """Run the study for ``seed``; return its working directory and the wall time in seconds."""
    workdir = ROOT if seed == 0 else ROOT / "benchmarks" / "tmp" / f"claims_seed{seed}"
    # seed 0 is the repository's own run (config.yaml's seed), with no overlay file in the root
    return run_study(workdir, ["all"], config={"seed": seed} if seed else None, cores=cores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "claims_seeds"))
    args = ap.parse_args()
    tables, walls = [], {}
    for seed in args.seeds:
        print(f"== seed {seed}", flush=True)
        workdir, walls[seed] = run_seed(seed, args.cores)
        table = pd.read_csv(workdir / TARGET, keep_default_na=False)
        table.insert(0, "seed", seed)
        tables.append(table)
        print(table[["claim", "value", "se", "threshold", "holds"]].to_string(index=False), flush=True)
    both = pd.concat(tables, ignore_index=True)
    both.to_csv(f"{args.out}.csv", index=False)
    holds = both.pivot(index="claim", columns="seed", values="holds").astype(str)
    every = [c for c in holds.index if (holds.loc[c] == "True").all()]
    write_json({"seeds": args.seeds, "wall_s": walls, "holds": holds.to_dict(orient="index"),
                "hold_on_every_seed": every, "cpu": cpu_model(), "cores": args.cores,
                "load_avg_after": os.getloadavg()}, f"{args.out}.json")
    print(f"hold on every seed: {every or 'none'} -> {args.out}.csv")


if __name__ == "__main__":
    main()
