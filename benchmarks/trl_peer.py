"""The peer check of issue 22: C1's pair trained by the native trainer and by TRL's
``DistillationTrainer``, with the one objective both can run (full-vocabulary reverse KL), on the
same prompts, budget and seed (``benchmarks/configs/trl_peer.yaml`` over ``config/config.yaml``).

Runs in ``benchmarks/tmp/trl_peer/`` on a copy of the repository's built world (``results/world``,
so the pair is the default run's), grades both runs' checkpoints on ``figures.benchmark``
(``tiny_eval``) and writes the difference of the final accuracies with its standard error.
Needs the TRL stack (``make env-trl``). Not part of ``make run``.

    .venv/bin/python benchmarks/trl_peer.py

Writes ``benchmarks/results/trl_peer.json``.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from opd.claims import gap  # noqa: E402
from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402
from study import run_study, seed_world  # noqa: E402

PEER = ROOT / "benchmarks" / "configs" / "trl_peer.yaml"
NATIVE, TRL = "opd_fullkl", "opd_fullkl_trl"


def main() -> None:
    if not (ROOT / ".venv-trl" / "bin" / "python").exists():
        raise SystemExit("the TRL stack is missing: run `make env-trl` first")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    peer = yaml.safe_load(PEER.read_text())
    bench = config["figures"]["benchmark"]
    workdir = ROOT / "benchmarks" / "tmp" / "trl_peer"
    seed_world(workdir, ("world",))
    # stacks are relative to the working directory: point at the repository's TRL stack
    overlay = peer | {"stacks": {"trl": str(ROOT / ".venv-trl" / "bin" / "python")}}
    _, wall = run_study(workdir, [f"results/tables/experiments/{e}.csv" for e in (NATIVE, TRL)], config=overlay)
    grades_dir = workdir / "results" / "grades"
    grades = {d.name: json.loads((d / f"{bench}.json").read_text())
              for d in grades_dir.iterdir() if (d / f"{bench}.json").exists()}
    exps = peer["experiments"]
    runs = {}
    for e in (NATIVE, TRL):
        steps = sorted(int(k.split(".step")[1]) for k in grades if k.startswith(f"{e}.step"))
        final = grades[f"{e}.step{steps[-1]:04d}"]
        g = gap(grades, exps, e)
        runs[e] = {"avg4_by_step": {s: grades[f"{e}.step{s:04d}"]["mean_score"] for s in steps},
                   "final_step": steps[-1], "final_avg4": final["mean_score"], "se": final["mean_score_se"],
                   "gap_recovered": g[0], "gap_recovered_se": g[1]}
        print(f"{e}: {bench} {final['mean_score']:.3f} ± {final['mean_score_se']:.3f} at step {steps[-1]}, "
              f"gap {g[0]:.2f} ± {g[1]:.2f}", flush=True)
    diff = runs[NATIVE]["final_avg4"] - runs[TRL]["final_avg4"]
    se = math.hypot(runs[NATIVE]["se"], runs[TRL]["se"])
    fingerprint = json.loads((ROOT / "results" / "fingerprint.json").read_text())
    write_json({"benchmark": bench, "config": "config/config.yaml + benchmarks/configs/trl_peer.yaml",
                "world_sha256": fingerprint.get("world_sha256"),
                "student": config["experiments"]["opd"]["student"], "teacher": config["experiments"]["opd"]["teacher"],
                "base": {k: {"avg4": grades[k]["mean_score"], "se": grades[k]["mean_score_se"]}
                         for k in (exps[NATIVE]["student"], exps[NATIVE]["teacher"])},
                "runs": runs, "native_minus_trl": diff, "se_of_difference": se, "within_2_se": abs(diff) <= 2 * se,
                "wall_s": wall, "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "kernels": config.get("kernels", "reproducible"), "load_avg_after": os.getloadavg()},
               ROOT / "benchmarks" / "results" / "trl_peer.json")
    print(f"native - TRL: {diff:+.3f} ± {se:.3f} ({'within' if abs(diff) <= 2 * se else 'beyond'} 2 SE)")


if __name__ == "__main__":
    main()
