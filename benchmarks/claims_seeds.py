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
CPU, the capability its jobs' kernels ran at and the host's native one, the kernels mode and the world's
fingerprint, all read from the run's ``results/fingerprint.json``) and
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


from opd.io import write_json  # noqa: E402
from study import run_study  # noqa: E402

TARGET = "results/tables/claims.csv"


def host(workdir: Path) -> dict:
    """The machine block of every recorded row, from the run's own ``results/fingerprint.json``
    (written by a job, so with the kernels the jobs ran with, not this process's)."""
    fp = json.loads((workdir / "results" / "fingerprint.json").read_text())
    k = fp["kernels"]
    return {"cpu": fp["host"]["cpu"], "cpu_capability": k["aten_capability"],
            "native_capability": fp["host"]["native_capability"],
            "kernels": f"{k['mode']} (ATen {k['aten_capability']}, oneDNN {k['onednn_max_cpu_isa']}, "
                       f"MKL_CBWR {k['mkl_cbwr']}, {k['torch_threads']} torch thread(s))",
            "world_sha256": fp["world_sha256"]}


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
    ap.add_argument("--record-only", action="store_true",
                    help="run nothing: record the finished runs' tables (wall times kept from --out.json)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "claims_seeds"))
    args = ap.parse_args()
    tables, walls = [], {}
    for seed in args.seeds:
        print(f"== seed {seed}", flush=True)
        if args.record_only:
            workdir = ROOT if seed == 0 else ROOT / "benchmarks" / "tmp" / f"claims_seed{seed}"
            walls[str(seed)] = json.loads(Path(f"{args.out}.json").read_text())["wall_s"].get(str(seed))
        else:
            workdir, walls[str(seed)] = run_seed(seed, args.cores)
        table = pd.read_csv(workdir / TARGET, keep_default_na=False)
        table.insert(0, "seed", seed)
        for k, v in host(workdir).items():
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
                "hold_on_every_seed": every, "cores": args.cores,
                "load_avg_after": os.getloadavg()}, f"{args.out}.json")
    print(f"hold on every seed: {every or 'none'} -> {args.out}.csv")


if __name__ == "__main__":
    main()
