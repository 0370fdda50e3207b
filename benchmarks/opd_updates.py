"""Iteration 11: two ways to give C1's run more learning, each paired against iteration 10's
default on three fresh seeds' validation splits (issue 22).

Iteration 10's claims put C1 at its threshold (0.52 / 0.43 / 0.51), and its `tiny_val` runs on
seeds 0-2 were still rising at step 480 (``opd_sweep_long*``: mean gap 0.65 at 240, 0.86 at 480).
Iteration 9 found that "the pace is set by the number of updates more than by the prompts in
each".  Doubling the steps does not fit ``make run``'s 25 minutes; doubling the updates of a step
costs almost nothing (8 steps each on seed 0's world, measured beside a world build: update phase
0.51 s with mini-batches of 8 against 0.49 s with 16; the update is compute-bound).

**Rule (written and committed before any run of seeds 6-8 was started):** on each fresh seed s
in 6, 7, 8 (worlds built with ``study.run_study(dir, ["results/fingerprint.json"], {"seed": s})``;
no sweep has touched them), graded on that seed's ``tiny_val`` (100 problems x 4 samples):

* baseline B: ``opd`` at iteration 10's ``train_defaults`` (4 updates a step, lr 1e-4, 10-step
  warm-up), the step-240 checkpoint of a 480-step run (the rate is constant after the warm-up, so
  its first 240 steps are the default run);
* candidate M, more updates: ``train.mini_batch_size: 8`` (8 updates a step), everything else B's,
  lr 1e-4 unchanged (no sweep), its step-240 checkpoint;
* candidate L, longer: B's run at step 480.

Per seed, ``paired_gap(M, B)`` and ``paired_gap(L, B)`` (``opd_paired.paired_gap``: the per-problem
difference of mean correctness over the seed's teacher-student gap); the seeds pooled as
independent (``opd_paired.pool``).  **M is adopted** into ``train_defaults``
(``mini_batch_size: 8``, every OPD experiment) if its pooled difference exceeds twice its SE; then
the claims of seeds 0, 1 and 2 run again before any is read.  Otherwise iteration 10 stays.
**L is recorded, never adopted here**, whatever it reads: above 2 SE it confirms steps as a lever
for a later iteration that finds their budget.

**Addendum: how L would be applied (written after seed 6's arms were read, before seeds 7's and
8's were; L's criterion above is unchanged).** 480 steps for all four runs of C1's chain (``opd``,
``opd_think``, ``opd_grpo_teacher``, ``opd_coldstart``) add about 940 s of training on one core,
about 8 minutes of ``make run``: they do not fit.  If L's pooled difference exceeds 2 SE,
iteration 12 gives the 480 steps to C1's run alone (``experiments.opd.train``: ``steps: 480``,
``save_every: 120``, as many evaluation points as today), and the claims that compare another run
with C1 (C2, C3, and C4's comparison with C2) read C1 at that run's budget: its checkpoint and
training metrics up to the other run's last step (``opd.claims``).  Then the claims of seeds 0-2
run again before any is read.

    .venv/bin/python benchmarks/opd_sweep.py --seed 6 --world benchmarks/tmp/world_seed6/results --lrs 1e-4 --steps 480 --every 240 --mini-batch-size 16 --name opd_sweep_it11base
    .venv/bin/python benchmarks/opd_sweep.py --seed 6 --world benchmarks/tmp/world_seed6/results --lrs 1e-4 --steps 240 --every 240 --mini-batch-size 8 --name opd_sweep_it11mb8
    (the same for seeds 7 and 8)
    .venv/bin/python benchmarks/opd_updates.py

Writes ``benchmarks/results/opd_updates.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402
from opd_paired import base_accuracies, paired_gap, per_problem, pool, sweep_results  # noqa: E402

SEEDS = (6, 7, 8)
EXP = "opd_lr1e-04"
#: arm -> (sweep workdir stem, checkpoint step)
ARMS = {"B": ("opd_sweep_mb16", 240), "M": ("opd_sweep_mb8", 240), "L": ("opd_sweep_mb16", 480)}
CANDIDATES = ("M", "L")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = ap.parse_args()
    rows = {}
    for s in args.seeds:
        acc = {arm: per_problem(sweep_results(stem, s), f"{EXP}.step{step:04d}") for arm, (stem, step) in ARMS.items()}
        student, teacher = base_accuracies(sweep_results(ARMS["B"][0], s))
        row = {"student": student, "teacher": teacher, **{arm: float(a.mean()) for arm, a in acc.items()}}
        for c in CANDIDATES:
            d, se = paired_gap(acc[c], acc["B"], student, teacher)
            row[c + "-B"] = {"difference": d, "se": se}
        rows[str(s)] = row
        print(f"seed {s}: student {student:.3f}, teacher {teacher:.3f}, B {row['B']:.3f}, M {row['M']:.3f}, "
              f"L {row['L']:.3f}; M-B {row['M-B']['difference']:+.3f} ± {row['M-B']['se']:.3f}, "
              f"L-B {row['L-B']['difference']:+.3f} ± {row['L-B']['se']:.3f}")
    pooled = {}
    for c in CANDIDATES:
        d, se = pool([(r[c + "-B"]["difference"], r[c + "-B"]["se"]) for r in rows.values()])
        pooled[c + "-B"] = {"difference": d, "se": se, "above_2se": d > 2 * se}
        print(f"pooled {c}-B: {d:+.3f} ± {se:.3f}")
    adopt = pooled["M-B"]["above_2se"]
    print("M (mini_batch_size 8): " + ("adopt" if adopt else "keep iteration 10")
          + f"; L (480 steps): {'a lever' if pooled['L-B']['above_2se'] else 'not shown'} (recorded only)")
    write_json({"rule": "adopt M if its pooled paired gap difference against B exceeds 2 SE; L recorded only",
                "arms": ARMS, "experiment": EXP, "seeds": rows, "pooled": pooled, "adopt_M": adopt},
               ROOT / "benchmarks" / "results" / "opd_updates.json")


if __name__ == "__main__":
    main()
