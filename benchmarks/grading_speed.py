r"""Grading speed: ``opd.grading.grade`` vs a naive math-verify loop on 1,600 responses.

Builds 16 synthetic responses for each of the 100 problems of AIME24, AIME25 and AMC23
(real ground truths from ``../shared/data/benchmarks``): correct answers in equivalent forms
(``204``, ``204.0``, ``\frac{408}{2}``, ``\text{204}``), wrong answers, responses without a box,
long reasoning (1-3k characters, with an earlier wrong box) before the final box, and a few
pathological ones (``9^{9^{9^{9}}}``, 100k characters of garbage, an unbalanced box, a deep
fraction). Each response carries the verdict a careful human would give.

Then it times, end to end on the same responses:

* ``grade(..., workers=2)`` (pool start included), the paper's protocol;
* a naive loop ``verify(parse(gt), parse(response))`` in this process, math-verify's own
  extraction and timeouts on the full responses;

and writes ``benchmarks/results/grading_speed.json`` with both times, their ratio and the
agreement of each with the human labels. Run from the repository root::

    .venv/bin/python benchmarks/grading_speed.py            # about 30 s on 2 cores
    .venv/bin/python benchmarks/grading_speed.py --skip-naive
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402
from opd.grading.extract import answer_of, reference_of, unbox  # noqa: E402
from opd.grading.verify import _fast_verdict, grade  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "benchmarks"
OUT = ROOT / "benchmarks" / "results" / "grading_speed.json"
BENCHMARKS = ("AIME24", "AIME25", "AMC23")
PER_PROBLEM = 16

_FILLER = [
    "Let us set x = {a}. Then 3x + {b} = {c}, so we can substitute back.",
    "Checking the case n = {a}: the sum of the first n terms is {c}, which is too large.",
    "By the triangle inequality the side must be less than {c}, and at least {a}.",
    "Taking everything modulo {a} gives a remainder of {b}, consistent with the constraint.",
    "We count {c} configurations in total, but {b} of them are counted twice.",
]


def _reasoning(rng: random.Random, question: str, n_chars: int) -> str:
    parts = [f"We need to solve: {question[:300]}", "Let me think step by step."]
    while sum(len(p) for p in parts) < n_chars:
        a, b = rng.randint(2, 99), rng.randint(1, 50)
        parts.append(rng.choice(_FILLER).format(a=a, b=b, c=3 * a + b))
    return "\n\n".join(parts)


def _responses(question: str, gt: str, rng: random.Random) -> list[tuple[str, bool]]:
    """16 (response, human verdict) pairs for one problem with integer answer ``gt``."""
    g = int(gt)
    wrong = [g + 1, g - 7, 2 * g + 3, g + 100]
    short = "Working through the algebra carefully, we get"
    long_ = lambda: _reasoning(rng, question, rng.randint(1000, 3000))  # noqa: E731
    return [
        (f"{short} the final answer $\\boxed{{{g}}}$.", True),
        (f"{short} \\boxed{{{g}}}", True),
        (f"{long_()}\n\nTherefore the answer is \\boxed{{{g}}}.", True),
        (f"{long_()}\n\nA first guess was \\boxed{{{wrong[0]}}}, but rechecking the last step "
         f"the answer is \\boxed{{{g}}}.", True),
        (f"{long_()}\n\nSo the answer is \\boxed{{ {g} }}.", True),
        (f"{short} \\boxed{{{g}.0}}", True),
        (f"{short} \\boxed{{\\frac{{{2 * g}}}{{2}}}}", True),
        (f"{short} \\boxed{{\\text{{{g}}}}}", True),
        (f"{short} \\boxed{{{wrong[0]}}}", False),
        (f"{long_()}\n\nHence \\boxed{{{wrong[1]}}}.", False),
        (f"{long_()}\n\nEarlier I wrote \\boxed{{{g}}}, but that was wrong: the answer is "
         f"\\boxed{{{wrong[2]}}}.", False),
        (f"{short} \\boxed{{\\frac{{{g}}}{{7}}}}", False),
        (f"{short} \\boxed{{{wrong[3]}}}", False),
        (f"{short} {g}.", False),  # no box: a format error even though the number is right
        (f"{long_()}\n\nThe answer is {g}.", False),
        (f"{short} \\boxed{{{g}}}", True),
    ]


_PATHOLOGICAL = [
    "So the answer is \\boxed{9^{9^{9^{9}}}}.",
    "".join(random.Random(1).choice("abc{}\\^_ 0123456789+-*/()") for _ in range(100_000)),
    "\\boxed{" + "x+" * 50_000 + "1}",
    "The answer is \\boxed{\\frac{",
    "\\boxed{" + "\\frac{1}{" * 100 + "2" + "}" * 100 + "}",
]


def build() -> pd.DataFrame:
    rng = random.Random(0)
    rows = []
    for name in BENCHMARKS:
        df = pd.read_parquet(DATA / f"{name}.parquet")
        for i, row in df.iterrows():
            gt = row["reward_model"]["ground_truth"]
            question = row["prompt"][0]["content"]
            for j, (resp, label) in enumerate(_responses(question, unbox(gt), rng)):
                rows.append({"problem_id": f"{name}-{i}", "sample_idx": j, "ground_truth": gt,
                             "response": resp, "label": label, "kind": "normal"})
    for k, text in enumerate(_PATHOLOGICAL):  # replace one slot in a few problems
        idx = 16 * (7 + 19 * k) + 15
        rows[idx].update(response=text, label=False, kind="pathological")
    return pd.DataFrame(rows)


def _pool_items(responses: list[str], gts: list[str]) -> int:
    """Distinct (answer, ground truth) pairs the fast path leaves to the worker pool."""
    pairs = set()
    for r, g in zip(responses, gts):
        answer = answer_of(r)[1]
        if answer is not None and _fast_verdict(answer, reference_of(g)) is None:
            pairs.add((answer, reference_of(g)))
    return len(pairs)


def naive(responses: list[str], gts: list[str]) -> tuple[list[bool], float]:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    start = time.perf_counter()
    out = [bool(verify(parse(g), parse(r))) for r, g in zip(responses, gts)]
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=5.0)
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"benchmark data not found at {DATA}")

    df = build()
    responses, gts = df["response"].tolist(), df["ground_truth"].tolist()
    start = time.perf_counter()
    verdicts = grade(responses, gts, workers=args.workers, timeout_s=args.timeout_s)
    protocol_s = time.perf_counter() - start
    df["correct"] = [v["correct"] for v in verdicts]
    result = {
        "n_problems": int(df["problem_id"].nunique()),
        "n_responses": len(df),
        "n_pathological": int((df["kind"] == "pathological").sum()),
        "mean_response_chars": round(float(df["response"].str.len().mean()), 1),
        "workers": args.workers,
        "timeout_s": args.timeout_s,
        "protocol_wall_s": round(protocol_s, 2),
        "protocol_agreement_with_labels": float((df["correct"] == df["label"]).mean()),
        "protocol_format_errors": int(sum(v["format_error"] for v in verdicts)),
        "protocol_timed_out": int(sum(v["timed_out"] for v in verdicts)),
        "protocol_pool_items": _pool_items(responses, gts),
        "target_wall_s": 60,
    }
    if not args.skip_naive:
        naive_correct, naive_s = naive(responses, gts)
        result.update({
            "naive_wall_s": round(naive_s, 2),
            "naive_over_protocol": round(naive_s / protocol_s, 2),
            "naive_agreement_with_labels": float((pd.Series(naive_correct) == df["label"]).mean()),
            "naive_vs_protocol_agreement": float((pd.Series(naive_correct)
                                                  == df["correct"]).mean()),
        })
    result["environment"] = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                             "machine": platform.machine()}
    write_json(result, OUT)
    width = max(len(k) for k in result)
    print(f"\n{'metric':<{width}}  value")
    for k, v in result.items():
        if k != "environment":
            print(f"{k:<{width}}  {v}")
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
