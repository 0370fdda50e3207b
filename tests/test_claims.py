"""The claims table (opd.claims) on hand-built grades and metrics, including claims that fail."""
from __future__ import annotations

import math

import pytest

from opd.claims import at_budget, evaluate_claims, gap, ols_slope, rise, tenths

EXPERIMENTS = {
    "opd": {"student": "student", "teacher": "teacher"},
    "mismatch": {"student": "student", "teacher": "thinker"},
    "reverse": {"student": "student", "teacher": "same"},
    "cold": {"student": "student", "teacher": "thinker", "cold_start": True},
    "aligned": {"student": "student", "teacher": "teacher"},
    "random": {"student": "student", "teacher": "teacher"},
}


def g(v, se=0.01):
    return {"mean_score": v, "mean_score_se": se}


def grades(opd=0.7, mismatch=0.35, reverse=0.32, cold=0.6, aligned=0.75, random=0.6):
    return {"student": g(0.3), "teacher": g(0.9), "thinker": g(0.92), "same": g(0.5),
            "opd.step0010": g(0.5), "opd.step0020": g(opd), "mismatch.step0020": g(mismatch),
            "reverse.step0020": g(reverse), "cold.step0020": g(cold), "aligned.step0020": g(aligned),
            "random.step0020": g(random)}


def metrics(start, step, n=20, chunks=(0.6, 0.5, 0.4)):
    return [{"opd/overlap_ratio": start + step * i, "opd/student_mass_shared": 0.98,
             **{f"opd/overlap_ratio_chunk{j}": c + 0.001 * (i % 3) for j, c in enumerate(chunks)}}
            for i in range(n)]


SPEC = {"C1": {"experiment": "opd"}, "C2": {"experiment": "mismatch"}, "C3": {"experiment": "reverse"},
        "C4": {"experiment": "opd"}, "C5": {"experiment": "cold"},
        "C6": {"experiment": "aligned", "random": "random"}, "C7": {"experiment": "opd"}}


def by_claim(rows):
    return {r["claim"]: r for r in rows}


def test_every_claim_holds_on_a_world_that_shows_them():
    rows = by_claim(evaluate_claims(SPEC, EXPERIMENTS, grades(),
                                    {"opd": metrics(0.5, 0.01), "mismatch": metrics(0.3, 0.002)}))
    assert [rows[c]["holds"] for c in sorted(rows)] == [True] * 7
    assert rows["C1"]["value"] == pytest.approx((0.7 - 0.3) / (0.9 - 0.3))   # hand-worked: 2/3


def test_claims_that_do_not_hold_are_reported_as_not_holding():
    rows = by_claim(evaluate_claims(SPEC, EXPERIMENTS, grades(opd=0.45, mismatch=0.4, cold=0.35, aligned=0.61),
                                    {"opd": metrics(0.5, -0.001, chunks=(0.4, 0.5, 0.6)),
                                     "mismatch": metrics(0.6, 0.0)}))
    assert rows["C1"]["holds"] is False                  # gap 0.25 < 0.5
    assert rows["C2"]["holds"] is False                  # 0.1667 > 0.25 / 3, and starts higher
    assert rows["C4"]["holds"] is False                  # overlap falls
    assert rows["C5"]["holds"] is False                  # 0.0833 < 0.25
    assert rows["C6"]["holds"] is False                  # 0.01 difference, SE about 0.03
    assert rows["C7"]["holds"] is False                  # overlap rises with position


def test_comparisons_with_a_failed_c1_never_hold():
    # OPD with C1's teacher lost accuracy: "a third of C1's gap" is negative, and a mismatched run
    # that collapsed (gap -1) or a reverse run that gained a little would "pass" a bare comparison
    rows = by_claim(evaluate_claims(SPEC, EXPERIMENTS, grades(opd=0.28, mismatch=0.0, reverse=0.32),
                                    {"opd": metrics(0.5, 0.01), "mismatch": metrics(0.3, 0.002)}))
    assert rows["C1"]["value"] == pytest.approx(-0.02 / 0.6)
    assert rows["C2"]["value"] == pytest.approx(-0.3 / 0.62) and rows["C2"]["value"] <= rows["C1"]["value"] / 3
    assert rows["C2"]["holds"] is False and "void" in rows["C2"]["detail"]
    assert rows["C3"]["holds"] is False and "void" in rows["C3"]["detail"]   # gain 0.02 > -0.02 / 3


def test_missing_experiments_are_not_run_never_holding():
    rows = by_claim(evaluate_claims({"C1": {"experiment": "opd"}}, EXPERIMENTS, grades(), {}))
    for c in ("C2", "C3", "C5", "C6", "C7"):
        assert rows[c]["holds"] == "" and rows[c]["detail"].startswith("not run")
    assert rows["C4"]["holds"] == ""   # no training metrics


def test_gap_standard_error_by_the_delta_method():
    """a 0.6 +- 0.02, s 0.3 +- 0.01, t 0.9 +- 0.01: gap 0.5; var = (4e-4 + 1e-4)/0.36 + 0.09 * 2e-4 / 0.1296."""
    gr = {"student": g(0.3, 0.01), "teacher": g(0.9, 0.01), "x.step0005": g(0.6, 0.02)}
    value, se = gap(gr, {"x": {"student": "student", "teacher": "teacher"}}, "x")
    assert value == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(5e-4 / 0.36 + 0.09 * 2e-4 / 0.1296))


def test_tenths_rise_and_ols_slope_by_hand():
    assert tenths(list(range(20))) == ([0, 1], [18, 19])
    d, se, first = rise([{"opd/overlap_ratio": v} for v in [1, 3] + [0] * 16 + [5, 7]])
    assert (d, first) == (4.0, 2.0) and se == pytest.approx(math.sqrt(2 / 2 + 2 / 2))
    slope, se = ols_slope([0, 1, 2, 3], [1, 3, 5, 7])
    assert slope == pytest.approx(2.0) and se == pytest.approx(0.0)
    assert ols_slope([0, 0, 0], [1, 2, 3]) is None


def stepped(rows):
    return [dict(r, step=i + 1) for i, r in enumerate(rows)]


def test_at_budget_cuts_c1_to_the_other_runs_last_step_and_nothing_else():
    gr = {"student": g(0.3), "opd.step0010": g(0.4), "opd.step0020": g(0.5), "opd.step0040": g(0.8),
          "other.step0020": g(0.6)}
    mets = {"opd": stepped([{"x": 1.0}] * 40), "other": stepped([{"x": 2.0}] * 20)}
    kept, rows, step = at_budget(gr, mets, "opd", "other")
    assert step == 20 and set(kept) == set(gr) - {"opd.step0040"}
    assert [r["step"] for r in rows["opd"]] == list(range(1, 21)) and rows["other"] is mets["other"]
    assert "opd.step0040" in gr and len(mets["opd"]) == 40            # the inputs are untouched
    same = at_budget(gr, mets, "other", "opd")                         # other ran no longer: unchanged
    assert same == (gr, mets, None)
    assert at_budget(gr, mets, "opd", "missing") == (gr, mets, None)   # no graded checkpoint to match


def test_comparisons_with_c1_read_c1_at_the_other_runs_budget():
    # C1 ran 40 steps (gap 1.0 at its end, 0.2 at step 20); the runs compared with it ran 20. Against
    # C1's end, C2 (gap 0.15 < 1/3) and C3 (gain 0.06 < 0.2) would hold; at an equal budget they do not
    gr = dict(grades(opd=0.42, mismatch=0.3 + 0.15 * 0.62, reverse=0.36), **{"opd.step0040": g(0.9)})
    mets = {"opd": stepped(metrics(0.5, 0.01, n=40)), "mismatch": stepped(metrics(0.3, 0.002))}
    rows = by_claim(evaluate_claims(SPEC, EXPERIMENTS, gr, mets))
    assert rows["C1"]["value"] == pytest.approx(1.0) and rows["C1"]["holds"] is True   # its own end
    assert rows["C2"]["threshold"] == pytest.approx(0.2 / 3) and rows["C2"]["holds"] is False
    assert rows["C3"]["threshold"] == pytest.approx(0.12 / 3) and rows["C3"]["holds"] is False
    assert "read at step 20" in rows["C2"]["detail"] and "read at step 20" in rows["C3"]["detail"]
    assert "to step 20" in rows["C4"]["detail"]
    equal = by_claim(evaluate_claims(SPEC, EXPERIMENTS, grades(), {"opd": stepped(metrics(0.5, 0.01)),
                                                                   "mismatch": stepped(metrics(0.3, 0.002))}))
    assert "read at step" not in equal["C2"]["detail"] + equal["C3"]["detail"]   # equal budgets: no note
