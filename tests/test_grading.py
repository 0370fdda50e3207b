r"""Grading protocol: last-box extraction, math-verify equivalence, bounded time, summaries.

Real ground truths come from ``../shared/data/benchmarks`` (skipped when absent); the
held-out table of tricky cases carries verdicts decided by hand, not by running the grader.
"""
from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest

from opd.grading import extract, numeric, verify
from opd.grading import pool as grading_pool
from opd.grading.extract import last_boxed, unbox
from opd.grading.metrics import summarize
from opd.grading.pool import GraderPool
from opd.grading.judge import judge_prompt, model_verify, parse_judge_answer
from opd.grading.verify import grade, is_correct

from conftest import SHARED_DATA

DATA = SHARED_DATA


def _bench(name: str) -> pd.DataFrame:
    path = DATA / "benchmarks" / f"{name}.parquet"
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (expected ../shared/data "
                    "next to the repository)")
    return pd.read_parquet(path)


def _box(answer: str) -> str:
    return f"Some reasoning first. So the answer is \\boxed{{{answer}}}."


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("text,expected", [
    (r"\boxed{5}", "5"),
    (r"first \boxed{3} then \boxed{5}.", "5"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left(3, \frac{\pi}{2}\right)}", r"\left(3, \frac{\pi}{2}\right)"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),              # escaped braces do not count
    (r"\boxed {7}", "7"),                          # space before the brace
    (r"\fbox{7}", "7"),
    (r"$\boxed{ 42 }$.", "42"),
    (r"\boxed{}", ""),
    ("no box here, the answer is 5", None),
    (r"\boxed{3} and then \boxed{\frac{", None),   # last box never closes: no answer
    (r"\boxed 5", "5"),                            # no brace: one token (issue 11, item 3)
    (r"\boxed{\boxed{5}}", "5"),
    (r"First \boxed{3}. Final: \boxed 5", "5"),     # the last box, braced or not
    (r"First \boxed 3. Final: \boxed{5}", "5"),
    (r"\boxed{3} then \boxed 5 and \boxed{4}", "4"),
    (r"\boxed5", "5"),                             # a control word ends at a non-letter
    (r"\fbox 7", "7"),
    (r"\boxed -3$.", "-3"),                        # the token stops at $
    (r"\boxed 12, so we are done", "12"),          # ... at whitespace; a trailing comma goes
    (r"\[\boxed 5\]", "5"),                        # ... at the end of display math
    (r"\text{is \boxed 5}", "5"),                  # ... at an unmatched closing brace
    (r"\boxed 5\\ next line", "5"),                # ... at a LaTeX line break
    (r"\boxed \frac{1}{2}.", r"\frac{1}{2}."),      # braces inside the token are kept whole
    (r"\boxed \frac{1}{2", None),                   # ... and must close
    (r"\boxed{3} and finally \boxed", None),        # nothing after the last box
    ("\\boxed\n5", None),                          # ... on its line
    (r"\boxedx 5", None),                           # another command, not a box
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_non_string():
    assert last_boxed(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("gt,expected", [
    (r"\boxed{204}", "204"),
    (r" \boxed{\frac{1}{2}} ", r"\frac{1}{2}"),
    (r"$\boxed{5}$", "5"),
    (r"\boxed{\boxed{5}}", "5"),
    ("70", "70"),
    (r"\frac{14}{3}", r"\frac{14}{3}"),
    (r"\boxed{1}, \boxed{2}", r"\boxed{1}, \boxed{2}"),  # not one box around everything
])
def test_unbox(gt, expected):
    assert unbox(gt) == expected


# --------------------------------------------------------------------------- tricky cases

# (response, ground truth, verdict decided by a careful human)
TRICKY = [
    (r"I first thought \boxed{3}. Actually, rechecking, it is \boxed{5}.", "5", True),
    (r"I first thought \boxed{3}. Actually, rechecking, it is \boxed{5}.", "3", False),
    ("The answer is 5.", "5", False),                            # no box
    ("$5$", "5", False),
    (r"\boxed{}", "5", False),
    (r"\boxed{\dfrac{3}{4}}", r"\frac34", True),
    (r"\boxed{0.75}", r"\frac34", True),
    (r"\boxed{3/4}", r"\frac{3}{4}", True),
    (r"\boxed{\frac{4}{3}}", r"\frac34", False),
    (r"\boxed{\frac{1}{2}}", "0.5", True),
    (r"\boxed{(1, 2)}", "(1,2)", True),
    (r"\boxed{(2, 1)}", "(1,2)", False),                          # order matters
    (r"\boxed{(6, 31, -1)}", "(6,31,-1)", True),
    (r"\boxed{(31, 6, -1)}", "(6,31,-1)", False),
    (r"\boxed{(3, 4]}", "(3,4]", True),
    (r"\boxed{[3,4]}", "(3,4]", False),                           # closed vs half-open
    (r"\boxed{(3,4)}", "(3,4]", False),
    (r"\boxed{[0, \infty)}", r"[0,\infty)", True),
    (r"\boxed{(0,\infty)}", r"[0,\infty)", False),
    (r"\boxed{\sqrt{117}}", r"3\sqrt{13}", True),
    (r"\boxed{3\sqrt{12}}", r"3\sqrt{13}", False),
    (r"\boxed{90}", r"90^\circ", True),
    (r"\boxed{45^\circ}", r"90^\circ", False),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True),
    (r"\boxed{\text{Bob}}", r"\text{Evelyn}", False),
    (r"\boxed{\boxed{5}}", "5", True),
    (r"\boxed {5}", "5", True),
    (r"\fbox{5}", "5", True),
    (r"$\boxed{204}$.", r"\boxed{204}", True),
    (r"\boxed{205}", r"\boxed{204}", False),
    (r"\boxed{204.0}", "204", True),
    (r"\boxed{5.}", "5", True),                                   # trailing period
    (r"\boxed{1\,000}", "1000", True),                            # thin-space separator
    (r"\boxed{1,000}", "1000", True),
    (r"\boxed{\frac{408}{2}}", "204", True),
    (r"\boxed{-2, 1}", "1,-2", True),                             # unordered list of roots
    (r"\boxed{5}", "x=5", True),
    (r"\boxed{\{2,1\}}", r"\{1,2\}", True),                       # sets are unordered
    (r"\boxed{10^{10}}", "10000000000", True),
    (r"\boxed{26! \cdot 2^{25}}", r"2^{25} \cdot 26!", True),
    (r"\boxed{-\frac{\pi}{6}}", r"-\frac{\pi}{6}", True),
    (r"\boxed{\frac{\pi}{6}}", r"-\frac{\pi}{6}", False),
    (r"\boxed{6-5i}", "6 - 5i", True),
    (r"\boxed{6+5i}", "6 - 5i", False),
    (r"\boxed{\begin{pmatrix} -\frac13 \\ \frac23 \\ \frac53 \end{pmatrix}}",
     r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}", True),
    (r"\boxed{\begin{pmatrix} \frac13 \\ \frac23 \\ \frac53 \end{pmatrix}}",
     r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}", False),
    # issue 11, items 1-3
    (r"\boxed{\frac{1}{2^{98}}}", r"\frac{1}{2^{99}}", False),  # distinct small numbers
    (r"\boxed{0.0000012}", "0.000001", False),
    (r"\boxed{0.5}", r"\frac12", True),                          # equivalences kept
    (r"\boxed{28\%}", "28", True),
    (r"\boxed{115,000}", "115000", True),
    (r"\boxed{0 < x < 12.5}", "(0, 12.5)", True),                # relation vs interval
    (r"First \boxed{3}. Final: \boxed 5", "5", True),             # brace-less last box
    (r"First \boxed{3}. Final: \boxed 5", "3", False),
]


@pytest.mark.parametrize("response,gt,expected", TRICKY)
def test_tricky_cases(response, gt, expected):
    assert is_correct(response, gt) is expected


def test_is_correct_never_raises_on_odd_input():
    assert is_correct(None, "5") is False  # type: ignore[arg-type]
    assert is_correct(r"\boxed{5}", 5) is True  # type: ignore[arg-type]
    assert is_correct(r"\boxed{5}", None) is False  # type: ignore[arg-type]
    assert is_correct("", "") is False


# Distinct small numbers (issue 11, item 1): every kind of place where math-verify compares
# numbers with its absolute tolerance, and the equivalences that must stay (hand-decided).
SCALE = [
    (r"\frac{1}{2^{98}}", r"\frac{1}{2^{99}}", False),   # exact rationals: exactly
    (r"2^{-98}", r"\frac{1}{2^{98}}", True),
    (r"\frac{1}{2^{98}}", "0", False),
    ("0.0000012", "0.000001", False),                    # plain decimals: exactly
    ("1.0000001", "1", False),
    ("0.000001", "0.0000010", True),
    (r"1.2 \times 10^{-6}", "0.000001", False),          # scientific notation
    (r"1.2 \times 10^{-6}", r"\frac{6}{5000000}", True),
    ("0.0000012", r"\frac{3}{2500000}", True),
    ("(0.0000012, 1)", "(0.000001, 1)", False),           # interval / tuple endpoints
    ("[0.0000012, 1]", "[0.000001, 1]", False),
    (r"\{0.0000012, 3\}", r"\{3, 0.000001\}", False),     # set elements
    (r"\{0.000001, 3\}", r"\{3, 0.000001\}", True),
    (r"\begin{pmatrix} 0.0000012 \\ 1 \end{pmatrix}",    # matrix elements
     r"\begin{pmatrix} 0.000001 \\ 1 \end{pmatrix}", False),
    (r"\begin{pmatrix} 0.5 \\ 1 \end{pmatrix}", r"\begin{pmatrix} \frac12 \\ 1 \end{pmatrix}", True),
    ("x=0.0000012", "0.000001", False),                  # assignment
    (r"0.0000012\%", r"0.000001\%", False),              # percentages
    (r"e^{-40}", r"e^{-41}", False),                     # exact irrationals: effectively exactly
    (r"\pi + 10^{-20}", r"\pi", False),
    (r"x + \pi + 10^{-20}", r"x + \pi", False),           # with a free symbol
    (r"x + 0.5", r"x + \frac12", True),
    ("0.000333", r"\frac{1}{3000}", False),              # a rounded decimal needs 6 digits
    ("0.012346", r"\frac{1}{81}", False),
    ("0.0123457", r"\frac{1}{81}", True),
    ("0.1250001", r"\frac18", False),                    # ... and must be correctly rounded
    ("0.333333", r"\frac13", True),
    ("0.3333333", r"\frac13", True),
    ("0.33", r"\frac13", False),
    (r"\sqrt{2}", "1.414214", True),
    ("1.414214", r"\sqrt{2}", True),
    ("3.141593", r"\pi", True),
    ("0.7071068", r"\frac{\sqrt{2}}{2}", True),
    (r"\frac12", "0.5", True),
    ("0.28", r"28\%", True),
    (r"50\%", r"\frac12", True),
    ("0.1+0.2", "0.3", True),
    ("204.0", "204", True),
]


@pytest.mark.parametrize("answer,gt,expected", SCALE)
def test_numbers_agree_at_their_scale(answer, gt, expected):
    assert is_correct(_box(answer), gt) is expected


def test_numbers_agree_pure():
    from sympy import Float, Integer, Mul, Rational, Symbol, UnevaluatedExpr, pi, sqrt

    pct = lambda v: Mul(v, UnevaluatedExpr(Rational(1, 100)), evaluate=False)  # noqa: E731
    assert numeric.numbers_agree(Float("0.0000012"), Float("0.000001")) is False
    assert numeric.numbers_agree(Rational(1, 2 ** 98), Rational(1, 2 ** 99)) is False
    assert numeric.numbers_agree(Float("0.5"), Rational(1, 2)) is True
    assert numeric.numbers_agree(Float("0.333333"), Rational(1, 3)) is True
    assert numeric.numbers_agree(Float("0.000333"), Rational(1, 3000)) is False
    assert numeric.numbers_agree(sqrt(2), Float("1.414214")) is True
    assert numeric.numbers_agree(sqrt(2), Float("1.414213")) is False
    assert numeric.numbers_agree(pi, pi + Rational(1, 10 ** 20)) is False
    assert numeric.numbers_agree(pct(Integer(28)), Integer(28)) is True
    assert numeric.numbers_agree(pct(Integer(28)), Float("0.28")) is True
    assert numeric.numbers_agree(pct(Integer(28)), Float("0.29")) is False
    x = Symbol("x")
    assert numeric.numbers_agree(x / 2 ** 98, x / 2 ** 99) is False
    assert numeric.numbers_agree(x + Float("0.5"), x + Rational(1, 2)) is True
    assert numeric.numbers_agree(Integer(0), Integer(0)) is True


def test_numeric_install_is_idempotent():
    from math_verify import grader

    numeric.install()
    wrapped = grader.sympy_numeric_eq
    numeric.install()
    assert grader.sympy_numeric_eq is wrapped and wrapped._opd_relative


# Relations and intervals compare in either order (issue 11, item 2).
RELATIONS = [
    ("0 < x < 12.5", "(0, 12.5)", True),
    ("(0, 12.5)", "0 < x < 12.5", True),
    ("12.5 > x > 0", "(0, 12.5)", True),
    (r"x \ge 3", r"[3, \infty)", True),
    (r"[3, \infty)", r"x \ge 3", True),
    (r"x > 0", r"(0, \infty)", True),
    (r"0 \le x < 12.5", "(0, 12.5)", False),
    ("(0, 12.5)", r"0 \le x < 12.5", False),
    (r"x > 0", r"[0, \infty)", False),
    (r"[0, \infty)", "x > 0", False),
    ("0 < x < 12", "(0, 12.5)", False),
]


@pytest.mark.parametrize("answer,gt,expected", RELATIONS)
def test_relations_and_intervals_are_symmetric(answer, gt, expected):
    assert is_correct(_box(answer), gt) is expected


def test_fast_path_decimals_agree_with_workers():
    numbers = ["0.0000012", "0.000001", "0.0000010", "1.0000001", "1", "1.0", "0.5", ".5",
               "-0.000001", "12.5", "12.50"]
    pairs = [(a, g) for a in numbers for g in numbers]
    decided = [(a, g, verify._fast_verdict(a, g)) for a, g in pairs]
    assert all(v is not None for _, _, v in decided)    # two plain decimals: always decided
    assert verify._fast_verdict("0.0000012", "0.000001") is False
    with GraderPool(workers=2) as pool:
        slow = pool.run(pairs)
    assert [(a, g, v) for (a, g, v), (ok, _) in zip(decided, slow) if ok != v] == []


def test_braceless_box_through_grade():
    responses = [r"First \boxed{3}. Final: \boxed 5", r"\boxed 5.", r"\boxed{}", r"\boxed",
                 r"\boxed{5} then \boxed 6"]
    verdicts = grade(responses, ["5"] * len(responses), progress=False)
    assert [v["correct"] for v in verdicts] == [True, True, False, False, False]
    assert [v["format_error"] for v in verdicts] == [False, False, True, True, False]
    assert [v["extracted"] for v in verdicts] == ["5", "5.", "", None, "6"]


PATHOLOGICAL = [
    r"So the answer is \boxed{9^{9^{9^{9}}}}.",
    r"The answer is \boxed{\frac{",
    "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}",
    "\\boxed{" + "\\frac{1}{" * 60 + "2" + "}" * 60 + "}",
    "".join("{}\\^_ab01+-"[i * 7919 % 13 % 11] for i in range(100_000)),
    "\\boxed{" + "x^" * 50_000 + "1}",
    "\\boxed{" + "{" * 50_000,
    r"\boxed{(10^{10})!}",
]


def test_pathological_answers_are_wrong_and_bounded():
    start = time.monotonic()
    for text in PATHOLOGICAL:
        t0 = time.monotonic()
        assert is_correct(text, "5") is False
        assert time.monotonic() - t0 < grading_pool.DEFAULT_TIMEOUT_S + grading_pool.KILL_GRACE_S + 1.5
    assert time.monotonic() - start < 20.0


def test_pathological_through_grade_are_bounded():
    start = time.monotonic()
    verdicts = grade(PATHOLOGICAL, ["5"] * len(PATHOLOGICAL), timeout_s=1.0, progress=False)
    assert time.monotonic() - start < 15.0
    assert not any(v["correct"] for v in verdicts)
    assert verdicts[1]["format_error"] and verdicts[4]["format_error"]


def test_fast_path_agrees_with_math_verify():
    numbers = ["204", "204.0", "0204", "+204", "205", "-0", "0", "1.5", "1.50", "3", "-3"]
    pairs = [(a, g) for a in numbers for g in numbers]
    pairs += [(r"\left(1,2\right)", "(1,2)"), (r"\dfrac{3}{4}", r"\frac{3}{4}"),
              (r"\cot x", r"\cot  x"), ("5.", "5"), (r"1\,000", "1000"), (r"\{1,2\}", r"\{1, 2\}"),
              (r"\tfrac12", r"\frac12"), (r"x \in [-2,7]", r"x\in[-2,7]")]
    pairs += [("1 000", "1000"), (r"\frac{1}{2}", "0.5"), ("1,000", "1000")]
    pairs = [(extract._clean(a), extract._clean(g)) for a, g in pairs]  # as the grader does
    decided = [(a, g, verify._fast_verdict(a, g)) for a, g in pairs]
    decided = [(a, g, v) for a, g, v in decided if v is not None]
    assert len(decided) > 60
    with GraderPool(workers=2) as pool:
        slow = pool.run([(a, g) for a, g, _ in decided])
    assert [(a, g, v) for (a, g, v), (ok, _) in zip(decided, slow) if ok != v] == []


def test_pool_kills_a_worker_that_stops_answering():
    with GraderPool(workers=1, timeout_s=1.0) as pool:
        assert pool.run([(r"\frac{1}{2}", "0.5")]) == [(True, False)]  # worker is up
        os.kill(pool._workers[0].proc.pid, signal.SIGSTOP)   # deaf to its soft timer
        start = time.monotonic()
        assert pool.run([(r"\frac{1}{2}", "0.5")]) == [(False, True)]
        assert time.monotonic() - start < 1.0 + grading_pool.KILL_GRACE_S + 1.0
        assert pool.restarts == 1
        assert pool.run([(r"\frac{1}{2}", "0.5"), ("(1,2)", "(2,1)")]) == [(True, False),
                                                                           (False, False)]


def test_pool_survives_a_crashed_worker():
    with GraderPool(workers=1, timeout_s=5.0) as pool:
        assert pool.run([("3", "3")]) == [(True, False)]
        pool._workers[0].proc.kill()
        pool._workers[0].proc.wait()
        assert pool.run([(r"\sqrt{4}", "2")]) == [(True, False)]
        assert pool.restarts == 1


# --------------------------------------------------------------------------- real data


def test_aime24_boxed_ground_truths():
    df = _bench("AIME24")
    gts = [r["ground_truth"] for r in df["reward_model"]]
    assert all(gt.startswith("\\boxed{") for gt in gts)
    for gt in gts:
        value = int(unbox(gt))
        assert is_correct(_box(str(value)), gt)
        assert is_correct(f"long reasoning... $\\boxed{{{value}}}$", gt)
        assert is_correct(_box(rf"\frac{{{2 * value}}}{{2}}"), gt)
        assert not is_correct(_box(str(value + 1)), gt)
        assert not is_correct(f"The answer is {value}.", gt)   # right number, no box
        assert not is_correct(f"\\boxed{{{value}}} no wait \\boxed{{{value + 3}}}", gt)


# (ground truth as stored in MATH-500, equivalent answer, wrong answer)
MATH500_CASES = [
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)", r"(3, \pi)"),
    (r"\frac{14}{3}", "14/3", r"\frac{3}{14}"),
    (r"\frac{3}{56}", r"\dfrac{3}{56}", r"\frac{56}{3}"),
    ("(6,31,-1)", "(6, 31, -1)", "(31, 6, -1)"),
    ("(3,4]", "(3, 4]", "[3,4]"),
    (r"(2,\infty)", r"(2, \infty)", r"[2,\infty)"),
    (r"(-\infty, 0]", r"(-\infty,0]", r"(-\infty,0)"),
    (r"(0,9) \cup (9,36)", r"(0,9)\cup(9,36)", "(0,36)"),
    (r"\left(\frac{3}{5},\frac{8}{3}\right]", r"(0.6, \frac{8}{3}]", r"[\frac35, \frac83]"),
    (r"3\sqrt{13}", r"\sqrt{117}", r"3\sqrt{31}"),
    (r"\frac{3\sqrt{3}}{4}", r"\frac{3}{4}\sqrt{3}", r"\frac{3\sqrt{2}}{4}"),
    (r"90^\circ", "90", r"45^\circ"),
    (r"\text{Evelyn}", r"\text{Evelyn}", r"\text{Bob}"),
    (r"1 \pm \sqrt{19}", r"1+\sqrt{19}, 1-\sqrt{19}", r"1+\sqrt{19}"),
    (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}", r"\frac{7}{270}"),
    (r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}",
     r"\begin{pmatrix} -\frac13 \\ \frac23 \\ \frac53 \end{pmatrix}",
     r"\begin{pmatrix} \frac13 \\ \frac23 \\ \frac53 \end{pmatrix}"),
    (r"x \in [-2,7]", "[-2,7]", "[-2,7)"),
    ("6 - 5i", "6-5i", "6+5i"),
    (r"\text{(C)}", "C", r"\text{(D)}"),
    ("1.25", r"\frac54", "1.52"),
]


def test_math500_real_answers():
    df = _bench("MATH-500")
    stored = {r["ground_truth"] for r in df["reward_model"]}
    for gt, good, bad in MATH500_CASES:
        assert gt in stored, f"{gt!r} is not a MATH-500 ground truth"
        assert is_correct(_box(good), gt), (gt, good)
        assert not is_correct(_box(bad), gt), (gt, bad)
        assert is_correct(_box(gt), gt)
        assert not is_correct(f"The answer is ${good}$.", gt)   # unboxed


def test_math500_every_ground_truth_matches_itself():
    df = _bench("MATH-500")
    gts = [r["ground_truth"] for r in df["reward_model"]]
    verdicts = grade([_box(g) for g in gts], gts, progress=False)
    assert all(v["correct"] for v in verdicts), [g for g, v in zip(gts, verdicts)
                                                 if not v["correct"]]


HMMT_FORMS = {  # ground truth -> an equivalent form a model might write
    r"\frac{1}{576}": "1/576",
    r"\frac{9 \sqrt{23}}{23}": r"\frac{9}{\sqrt{23}}",
    r"1-\frac{2}{\pi}": r"\frac{\pi-2}{\pi}",
    r"\frac{-1+\sqrt{17}}{2}, \frac{-1-\sqrt{17}}{2}":
        r"\frac{-1-\sqrt{17}}{2}, \frac{-1+\sqrt{17}}{2}",
    r"2^{25} \cdot 26!": r"26! \cdot 2^{25}",
    r"\sqrt{23}-2 \sqrt{3}": r"-2\sqrt{3}+\sqrt{23}",
    r"14+4\sqrt{37}": r"4\sqrt{37}+14",
    r"\sqrt{\frac{95}{24}}": r"\frac{\sqrt{570}}{12}",
}


def test_hmmt25_real_answers():
    df = _bench("HMMT25")
    gts = df["answer"].astype(str).tolist()
    assert set(HMMT_FORMS) <= set(gts)
    for gt in gts:
        assert is_correct(_box(gt), gt), gt
        assert not is_correct(_box(gt + " + 1"), gt), gt
        assert not is_correct(f"The final answer is {gt}.", gt)
    for gt, form in HMMT_FORMS.items():
        assert is_correct(_box(form), gt), (gt, form)
    both_roots = r"\frac{-1+\sqrt{17}}{2}, \frac{-1-\sqrt{17}}{2}"
    assert not is_correct(_box(r"\frac{-1+\sqrt{17}}{2}"), both_roots)  # one root only


def test_grade_matches_is_correct_on_hundreds_of_items():
    df = _bench("MATH-500").head(80)
    responses, gts = [], []
    for r in df["reward_model"]:
        gt = r["ground_truth"]
        responses += [_box(gt), _box(f"{gt}+1"), f"The answer is {gt}", _box(f"2({gt})")]
        gts += [gt] * 4
    for response, gt, _ in TRICKY:
        responses.append(response)
        gts.append(gt)
    assert len(responses) > 300
    verdicts = grade(responses, gts, workers=2, progress=False)
    assert [v["correct"] for v in verdicts] == [is_correct(r, g) for r, g in zip(responses, gts)]
    assert [v["correct"] for v in verdicts[-len(TRICKY):]] == [e for _, _, e in TRICKY]
    for v, r in zip(verdicts, responses):
        assert set(v) == {"correct", "format_error", "extracted", "timed_out"}
        assert v["extracted"] == last_boxed(r)
        assert v["format_error"] == (not v["extracted"])
        assert not v["timed_out"]


def test_grade_input_checks():
    assert grade([], [], progress=False) == []
    with pytest.raises(ValueError):
        grade(["a"], [], progress=False)


def test_grade_reports_format_errors_and_extraction():
    verdicts = grade([r"\boxed{5}", "5", r"\boxed{}", r"\boxed{\frac{"], ["5"] * 4,
                     progress=False)
    assert [v["correct"] for v in verdicts] == [True, False, False, False]
    assert [v["format_error"] for v in verdicts] == [False, True, True, True]
    assert [v["extracted"] for v in verdicts] == ["5", None, "", None]


# --------------------------------------------------------------------------- model verifier


def test_judge_prompt_contents():
    prompt = judge_prompt("What is 1/2 + 1/4?", r"\frac{3}{4}", "0.75")
    assert "What is 1/2 + 1/4?" in prompt
    assert r"Reference answer: \frac{3}{4}" in prompt
    assert "final answer: 0.75" in prompt
    assert prompt.rstrip().endswith("Answer YES or NO.")


@pytest.mark.parametrize("reply,expected", [
    ("YES", True),
    ("NO", False),
    ("Yes.", True),
    ("**No**, they differ.", False),
    ("no", False),
    ("Comparing 0.75 and 3/4, they are equal. YES", True),
    ("They are different values. Final: NO", False),
    ("<think>maybe yes, maybe no</think>\nNO", False),
    ("<think>they look different... no</think> YES", True),
    ("I cannot tell.", None),
    ("", None),
    ("Yesterday I noticed nothing", None),   # no standalone yes/no word
])
def test_parse_judge_answer(reply, expected):
    assert parse_judge_answer(reply) is expected


def test_model_verify_flips_only_on_yes():
    items = [
        {"question": "q0", "ground_truth": r"\boxed{5}", "extracted": "five", "correct": False,
         "format_error": False, "timed_out": False},
        {"question": "q1", "ground_truth": "7", "extracted": "8", "correct": False,
         "format_error": False, "timed_out": False},
        {"question": "q2", "ground_truth": "3", "extracted": "3", "correct": True,
         "format_error": False, "timed_out": False},
        {"question": "q3", "ground_truth": "3", "extracted": None, "correct": False,
         "format_error": True, "timed_out": False},
        {"question": "q4", "ground_truth": "9", "extracted": "nine?", "correct": False,
         "format_error": False, "timed_out": False},
    ]
    seen: list[list[str]] = []

    def judge(prompts: list[str]) -> list[str]:
        seen.append(prompts)
        return ["YES", "NO", "I am not sure"][:len(prompts)]

    out = model_verify(items, judge)
    assert len(seen) == 1 and len(seen[0]) == 3           # only rule-failed with an answer
    assert "Reference answer: 5" in seen[0][0]              # boxed ground truth unboxed
    assert [o["correct"] for o in out] == [True, False, True, False, False]
    assert [o["judge_verdict"] for o in out] == [True, False, None, None, None]
    assert [o["rule_correct"] for o in out] == [False, False, True, False, False]
    assert items[0]["correct"] is False                     # inputs untouched
    with pytest.raises(ValueError):
        model_verify(items, lambda prompts: [])


# --------------------------------------------------------------------------- summary


def _frame() -> pd.DataFrame:
    rows = []
    correct = {"p1": [1, 0, 0, 0], "p2": [1, 1, 1, 1], "p3": [0, 0, 0, 0]}
    texts = {("p1", 0): "a b c d e", ("p1", 1): "a b c d"}
    for pid, flags in correct.items():
        for j, c in enumerate(flags):
            rows.append({"problem_id": pid, "sample_idx": j,
                         "response": texts.get((pid, j), "x"), "correct": bool(c),
                         "format_error": pid == "p3" and j < 2, "n_tokens": 10 + (j == 0) * 12})
    return pd.DataFrame(rows)


def test_summarize_hand_built():
    s = summarize(_frame())
    assert s["n_problems"] == 3 and s["n_samples"] == 4 and s["n_rollouts"] == 12
    assert s["n_samples_varies"] is False
    assert s["mean_score"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert s["best_score"] == pytest.approx(2 / 3)
    assert s["solve_none"] == pytest.approx(1 / 3)
    assert s["solve_all"] == pytest.approx(1 / 3)
    assert s["avg_output_length"] == pytest.approx((12 * 10 + 3 * 12) / 12)
    assert s["format_error_rollouts"] == 2
    assert s["format_error_rate"] == pytest.approx(2 / 12)
    assert s["distinct_4gram"] == pytest.approx(2 / 3)
    assert s["pass@1"] == pytest.approx(s["mean_score"])
    assert s["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert s["pass@4"] == pytest.approx(2 / 3)
    assert "pass@3" not in s and "pass@8" not in s


def test_summarize_uneven_samples_and_pass_at_n():
    df = _frame()
    df = df[~((df.problem_id == "p2") & (df.sample_idx >= 3))]   # p2 keeps 3 samples
    s = summarize(df)
    assert s["n_samples"] == 3 and s["n_samples_varies"] is True
    assert sorted(k for k in s if k.startswith("pass@")) == ["pass@1", "pass@2", "pass@3"]
    # p1: n=4, c=1, k=3 -> 1 - C(3,3)/C(4,3) = 0.75; p2: 1; p3: 0
    assert s["pass@3"] == pytest.approx((0.75 + 1 + 0) / 3)


def test_summarize_rejects_missing_columns():
    with pytest.raises(ValueError, match="n_tokens"):
        summarize(_frame().drop(columns="n_tokens"))
