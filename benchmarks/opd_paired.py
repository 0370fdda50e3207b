"""Iteration 10: iteration 9's mini-batch candidate against iteration 8's default, paired, on
three fresh seeds' validation splits (issue 22).

Iteration 9 compared the two as independent means over seeds 0-2 (``opd_sweep_seeds.py``) and
did not adopt the candidate (+0.12, one SE 0.15). Both arms are graded on the same problems of
the same worlds, so their difference is paired; those seeds' numbers have been read, so this
test runs on seeds 3, 4 and 5, whose worlds no sweep has touched.

**Rule (written and committed before any run of seeds 3-5 was read):** on each fresh seed s,
arm A is ``opd`` with ``train.mini_batch_size: 16`` at lr 1e-4 (iteration 9's pick) and arm B is
iteration 8's default (one update a step, lr 5e-4), both with the 10-step warm-up, at step 240,
graded on that seed's ``tiny_val`` (100 problems x 4 samples). Per problem, the difference of
the two arms' mean correctness, divided by the seed's teacher-student accuracy gap, gives the
seed's paired gap difference and its SE (``paired_gap``); the three seeds are averaged, their
SEs combined as independent (``pool``). The candidate is adopted into ``train_defaults``
(``mini_batch_size: 16``, ``lr: 1.0e-4``) if the pooled difference exceeds twice its SE, and
then the claims of seeds 0, 1 and 2 run again before any is read; otherwise iteration 8 stays.

    .venv/bin/python benchmarks/opd_sweep.py --seed 3 --world benchmarks/tmp/world_seed3/results --lrs 5e-4 --steps 240 --every 240 --name opd_sweep_it8arm
    .venv/bin/python benchmarks/opd_sweep.py --seed 3 --world benchmarks/tmp/world_seed3/results --lrs 1e-4 --steps 240 --every 240 --mini-batch-size 16 --name opd_sweep_mb16arm
    (the same for seeds 4 and 5; the worlds: ``study.run_study(dir, ["results/fingerprint.json"], {"seed": N})``)
    .venv/bin/python benchmarks/opd_paired.py

Writes ``benchmarks/results/opd_paired.json``.

Outcome (2026-12-05): +0.20 ± 0.08, +0.19 ± 0.10, +0.10 ± 0.08 on seeds 3, 4, 5; pooled
+0.165 ± 0.049, above 2 SE: adopted. Applied in ``config/config.yaml`` the next session, then
the claims of seeds 0-2 ran before any was read: C1 0.52 / 0.43 / 0.51 (``docs/world.md``,
iteration 10 and "What the default run shows").
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402

VAL = "tiny_val"
SEEDS = (3, 4, 5)
ARMS = {"A": ("opd_sweep_mb16", "opd_lr1e-04"), "B": ("opd_sweep", "opd_lr5e-04")}   # workdir stem, experiment
STEP = 240


def paired_gap(a: pd.Series, b: pd.Series, student: float, teacher: float) -> tuple[float, float]:
    """The paired difference of two models' gap recovered, and its standard error.

    ``a``, ``b``: mean correctness per problem (0..1), indexed by problem id, over the same
    problems; ``student``, ``teacher``: the base accuracies on them. Returns
    ``(mean(a - b) / (teacher - student), sd(a - b) / sqrt(n) / (teacher - student))``: the gap
    of ``opd.claims.gap`` differenced problem by problem, the denominator taken as fixed.
    Raises ``ValueError`` when the problems differ or the teacher does not beat the student.
    """
    if set(a.index) != set(b.index):
        raise ValueError("paired_gap: the two models were graded on different problems")
    span = teacher - student
    if span <= 0:
        raise ValueError(f"paired_gap: teacher {teacher:.3f} does not beat student {student:.3f}")
    d = a - b.reindex(a.index)
    return float(d.mean() / span), float(d.std(ddof=1) / math.sqrt(len(d)) / span)


def pool(per_seed: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean of the seeds' differences and its SE, the seeds independent."""
    n = len(per_seed)
    return sum(d for d, _ in per_seed) / n, math.sqrt(sum(se ** 2 for _, se in per_seed)) / n


def per_problem(results: Path, key: str) -> pd.Series:
    """Mean correctness per problem of model ``key`` on ``tiny_val``."""
    v = pd.read_parquet(results / "grades" / key / f"{VAL}.verdicts.parquet")
    return v.groupby("problem_id")["correct"].mean()


def sweep_results(stem: str, seed: int) -> Path:
    """``results/`` of the ``opd_sweep.py`` working directory ``<stem>_seed<seed>``."""
    return ROOT / "benchmarks" / "tmp" / f"{stem}_seed{seed}" / "results"


def base_accuracies(results: Path) -> tuple[float, float]:
    """Mean correctness on ``tiny_val`` of the initial student and of the teacher."""
    student, teacher = (float(per_problem(results, m).mean()) for m in ("student", "teacher"))
    return student, teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = ap.parse_args()
    rows = {}
    for s in args.seeds:
        res = {arm: sweep_results(stem, s) for arm, (stem, _) in ARMS.items()}
        a, b = (per_problem(res[arm], f"{ARMS[arm][1]}.step{STEP:04d}") for arm in ("A", "B"))
        student, teacher = base_accuracies(res["B"])
        d, se = paired_gap(a, b, student, teacher)
        rows[str(s)] = {"difference": d, "se": se, "student": student, "teacher": teacher,
                        "A": float(a.mean()), "B": float(b.mean())}
        print(f"seed {s}: A {a.mean():.3f}, B {b.mean():.3f}, paired gap difference {d:+.3f} ± {se:.3f}")
    d, se = pool([(r["difference"], r["se"]) for r in rows.values()])
    adopt = d > 2 * se
    print(f"pooled: {d:+.3f} ± {se:.3f}: {'adopt' if adopt else 'keep iteration 8'}")
    write_json({"rule": "adopt A if the pooled paired gap difference exceeds 2 SE", "arms": ARMS, "step": STEP,
                "seeds": rows, "pooled": {"difference": d, "se": se}, "adopt": adopt},
               ROOT / "benchmarks" / "results" / "opd_paired.json")


if __name__ == "__main__":
    main()
