r"""The paper's claims as measured rows: value, standard error, a threshold fixed in advance, verdict.

``evaluate_claims`` is a pure function from grades and training metrics to the table
``results/tables/claims.csv``; the config's ``claims:`` section names which experiment stands
for which claim. A claim whose experiments are not in the config is reported as ``not run``
(``holds`` empty), never as holding. The thresholds are the ones issue #14 fixed before any run:

* C1 OPD works: the student recovers at least half of the teacher-student gap,
  ``gap = (acc - acc_student) / (acc_teacher - acc_student) >= 0.5`` at the last checkpoint.
* C2 thinking-pattern mismatch: with a teacher scoring at least as high as C1's, ``gap <= gap_C1 / 3``,
  and the overlap ratio starts lower than C1's (never holding where C1's gap is not positive).
* C3 no new knowledge: a higher-scoring teacher that knows only what the student saw gives
  ``gain = acc - acc_student <= gain_C1 / 3`` (never holding where C1's gain is not positive).
* C4 mechanism: in C4's experiment (the default config names C1's) the overlap ratio's mean over
  the last tenth of steps exceeds the first tenth's by more than twice its standard error, and
  the shared set carries >= 97% of the student's mass; with a C2 experiment, its overlap starts
  lower and rises less.
* C5 cold start recovers C2: ``gap >= 2 gap_C2`` and ``gap >= 0.25``.
* C6 teacher-aligned prompts: ``gap_aligned - gap_random > 2 SE`` of the difference.
* C7 position: the overlap ratio falls with absolute response position: the OLS slope over
  ``opd/overlap_ratio_chunk{j}`` (every step of C7's experiment) is below ``-2 SE``.

**Equal budgets.** A claim that compares another run X with C1 (C2, C3, and C4's comparison
with C2) reads C1 at X's budget: C1's last checkpoint at or before X's last graded step, and its
training metrics up to that step (``at_budget``), so that a longer C1 run neither loosens nor
tightens the other run's bar. Where every run has the same steps this is C1's last checkpoint.

Standard errors: avg@n has its clustered SE (``mean_score_se``, samples grouped by problem);
a gap ratio's SE is the delta method with the three accuracies taken as independent (an
approximation: the initial student's accuracy enters numerator and denominator).

    rows = evaluate_claims(spec, experiments, grades, metrics)   # -> list of dicts
"""
from __future__ import annotations

import math
import re
from statistics import mean, variance

CLAIMS = ("C1", "C2", "C3", "C4", "C5", "C6", "C7")
STATEMENTS = {
    "C1": "OPD works when the teacher thinks like the student and knows more",
    "C2": "a teacher that thinks differently helps far less",
    "C3": "no new knowledge, no gain (weak-to-strong reverse distillation)",
    "C4": "the top-k overlap rises during OPD; the shared set carries the student's mass",
    "C5": "an off-policy SFT cold start recovers the mismatched pair",
    "C6": "teacher-aligned prompt selection helps",
    "C7": "the dense reward degrades with absolute response position",
}
# C2 and C3 compare with C1: where OPD with C1's teacher gained nothing, "far less than C1" is void
_VOID = "; void: C1's gain is not positive, so there is nothing to fall short of"
COLUMNS = ("claim", "statement", "experiments", "metric", "value", "se", "threshold", "holds", "detail")


class Acc:
    """An accuracy with its standard error."""

    def __init__(self, value: float, se: float):
        self.value, self.se = float(value), float(se)


def _acc(grades: dict, key: str) -> Acc | None:
    g = grades.get(key)
    return None if g is None else Acc(g["mean_score"], g.get("mean_score_se", 0.0))


def _steps(grades: dict, exp: str) -> list[int]:
    return [int(m.group(1)) for k in grades if (m := re.fullmatch(rf"{re.escape(exp)}\.step(\d+)", k))]


def final_key(grades: dict, exp: str) -> str | None:
    """The model key of ``exp``'s last graded checkpoint (``<exp>.stepNNNN``)."""
    steps = _steps(grades, exp)
    return f"{exp}.step{max(steps):04d}" if steps else None


def at_budget(grades: dict, metrics: dict, exp: str, other: str | None) -> tuple[dict, dict, int | None]:
    """``exp`` as it stood at ``other``'s budget: ``(grades, metrics, step)`` without ``exp``'s
    checkpoints after ``other``'s last graded step and with ``exp``'s ``metrics.jsonl`` rows up
    to it; ``step`` is ``exp``'s last checkpoint left where anything was cut, else None (``other``
    has no graded checkpoint, or ``exp`` ran no longer). Pure: the inputs are not modified."""
    last = max(_steps(grades, other), default=None) if other else None
    if last is None:
        return grades, metrics, None
    later = {f"{exp}.step{s:04d}" for s in _steps(grades, exp) if s > last}
    kept = {k: v for k, v in grades.items() if k not in later}
    rows = dict(metrics)
    rows[exp] = [r for r in metrics.get(exp, []) if r.get("step", 0) <= last]
    if not later and len(rows[exp]) == len(metrics.get(exp, [])):
        return grades, metrics, None
    return kept, rows, max(_steps(kept, exp), default=None)


def gap(grades: dict, experiments: dict, exp: str) -> tuple[float, float] | None:
    """(gap recovered, SE) of ``exp`` at its last checkpoint, against its base student and teacher."""
    spec = experiments.get(exp)
    if spec is None or not spec.get("teacher"):
        return None
    a, s, t = _acc(grades, final_key(grades, exp) or ""), _acc(grades, spec["student"]), _acc(grades, spec["teacher"])
    if None in (a, s, t) or t.value == s.value:
        return None
    num, den = a.value - s.value, t.value - s.value
    var = (a.se ** 2 + s.se ** 2) / den ** 2 + num ** 2 * (t.se ** 2 + s.se ** 2) / den ** 4
    return num / den, math.sqrt(var)


def gain(grades: dict, experiments: dict, exp: str) -> tuple[float, float] | None:
    """(accuracy gain over the base student, SE) of ``exp`` at its last checkpoint."""
    spec = experiments.get(exp)
    a = _acc(grades, final_key(grades, exp) or "")
    s = _acc(grades, spec["student"]) if spec else None
    if a is None or s is None:
        return None
    return a.value - s.value, math.hypot(a.se, s.se)


def tenths(values: list[float]) -> tuple[list[float], list[float]]:
    """The first and last tenth (at least two values each where there are four or more)."""
    n = max(2 if len(values) >= 4 else 1, len(values) // 10)
    return values[:n], values[-n:]


def rise(rows: list[dict], key: str = "opd/overlap_ratio") -> tuple[float, float, float] | None:
    """(last-tenth mean - first-tenth mean, its SE, first-tenth mean) of ``key`` over steps."""
    values = [r[key] for r in rows if key in r and r[key] is not None and math.isfinite(r[key])]
    if len(values) < 2:
        return None
    first, last = tenths(values)
    se = math.sqrt(sum(variance(x) / len(x) for x in (first, last) if len(x) > 1))
    return mean(last) - mean(first), se, mean(first)


def ols_slope(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """(slope, standard error) of the least-squares line through (xs, ys)."""
    n = len(xs)
    if n < 3 or len(set(xs)) < 2:
        return None
    mx, my = mean(xs), mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return slope, math.sqrt(resid / (n - 2) / sxx)


def _budget(c1: str, step: int | None) -> str:
    """The detail's note of where C1 was read, when ``at_budget`` cut it short."""
    return "" if step is None else f"; C1 ({c1}) read at step {step}"


def _row(claim, exps, metric, value, se, threshold, holds, detail=""):
    return {"claim": claim, "statement": STATEMENTS[claim], "experiments": " ".join(e for e in exps if e),
            "metric": metric, "value": value, "se": se, "threshold": threshold,
            "holds": "" if holds is None else bool(holds), "detail": detail}


def _not_run(claim, exps, metric, threshold, why):
    return _row(claim, exps, metric, float("nan"), float("nan"), threshold, None, f"not run: {why}")


def evaluate_claims(spec: dict, experiments: dict, grades: dict, metrics: dict) -> list[dict]:
    """One row per claim (``COLUMNS``).

    ``spec``: the config's ``claims`` section (``C1: {experiment}``, ``C2: {experiment}``, ...,
    ``C6: {experiment, random}``; a claim left out is ``not run``). ``experiments``: the
    config's ``experiments`` (student and teacher names). ``grades``: model key -> the grade
    summary on the claims benchmark (``mean_score``, ``mean_score_se``). ``metrics``: experiment
    -> its ``metrics.jsonl`` rows.
    """
    e = {c: (spec.get(c) or {}).get("experiment") for c in CLAIMS}
    c1 = e["C1"]
    rows = []
    g1 = gap(grades, experiments, c1) if c1 else None
    rows.append(_row("C1", [c1], "gap recovered", *g1, 0.5, g1[0] >= 0.5) if g1
                else _not_run("C1", [c1], "gap recovered", 0.5, "no C1 experiment with grades"))

    g2 = gap(grades, experiments, e["C2"]) if e["C2"] else None
    b_grades, b_metrics, b_step = at_budget(grades, metrics, c1, e["C2"]) if c1 else (grades, metrics, None)
    b1 = gap(b_grades, experiments, c1) if c1 else None
    if b1 and g2:
        t1 = _acc(grades, experiments[c1]["teacher"]).value
        t2 = _acc(grades, experiments[e["C2"]]["teacher"]).value
        r1, r2 = rise(b_metrics.get(c1, [])), rise(metrics.get(e["C2"], []))
        lower = r1 is not None and r2 is not None and r2[2] < r1[2]
        holds = g2[0] <= b1[0] / 3 and t2 >= t1 and lower and b1[0] > 0
        rows.append(_row("C2", [e["C2"], c1], "gap recovered", *g2, b1[0] / 3, holds,
                         f"teacher acc {t2:.3f} vs C1's {t1:.3f}; overlap starts "
                         f"{'lower' if lower else 'not lower'} than C1's" + _budget(c1, b_step)
                         + _VOID * (b1[0] <= 0)))
    else:
        rows.append(_not_run("C2", [e["C2"], c1], "gap recovered", "gap_C1 / 3", "needs C1 and C2 experiments"))

    b_grades, _, b_step = at_budget(grades, metrics, c1, e["C3"]) if c1 else (grades, metrics, None)
    a1 = gain(b_grades, experiments, c1) if c1 else None
    a3 = gain(grades, experiments, e["C3"]) if e["C3"] else None
    if a1 and a3:
        ts = [_acc(grades, experiments[x]["teacher"]) for x in (e["C3"],)]
        st = _acc(grades, experiments[e["C3"]]["student"])
        higher = ts[0] is not None and st is not None and ts[0].value > st.value
        rows.append(_row("C3", [e["C3"], c1], "accuracy gain", *a3, a1[0] / 3,
                         a3[0] <= a1[0] / 3 and higher and a1[0] > 0,
                         f"C1's gain {a1[0]:.3f}; the teacher {'scores' if higher else 'does not score'} "
                         "higher than the student" + _budget(c1, b_step) + _VOID * (a1[0] <= 0)))
    else:
        rows.append(_not_run("C3", [e["C3"], c1], "accuracy gain", "gain_C1 / 3", "needs C1 and C3 experiments"))

    c4 = e["C4"]
    r4 = rise(metrics.get(c4, [])) if c4 else None
    if r4:
        mass = [r["opd/student_mass_shared"] for r in metrics[c4] if "opd/student_mass_shared" in r]
        m = mean(mass) if mass else float("nan")
        holds = r4[0] > 2 * r4[1] and m >= 0.97
        detail = f"mean student mass on the shared set {m:.4f} (threshold 0.97)"
        r2 = rise(metrics.get(e["C2"], [])) if e["C2"] else None
        _, b_metrics, b_step = at_budget(grades, metrics, c4, e["C2"])
        b4 = rise(b_metrics.get(c4, []))
        if r2 and b4:
            holds = holds and r2[2] < b4[2] and r2[0] < b4[0]
            detail += (f"; C2 starts at {r2[2]:.3f} (C4 {b4[2]:.3f}) and rises {r2[0]:.4f} (C4 {b4[0]:.4f}"
                       + (f" to step {b_step}" if b_step is not None else "") + ")")
        rows.append(_row("C4", [c4, e["C2"]], "overlap rise (last - first tenth)", r4[0], r4[1], "2 SE",
                         holds, detail))
    else:
        rows.append(_not_run("C4", [c4], "overlap rise", "2 SE", "no C4 experiment with training metrics"))

    g5 = gap(grades, experiments, e["C5"]) if e["C5"] else None
    if g5 and g2:
        rows.append(_row("C5", [e["C5"], e["C2"]], "gap recovered", *g5, max(2 * g2[0], 0.25),
                         g5[0] >= 2 * g2[0] and g5[0] >= 0.25, f"C2's gap {g2[0]:.3f}"))
    else:
        rows.append(_not_run("C5", [e["C5"], e["C2"]], "gap recovered", "max(2 gap_C2, 0.25)",
                             "needs C2 and C5 experiments"))

    random_exp = (spec.get("C6") or {}).get("random")
    g6, g6r = (gap(grades, experiments, x) if x else None for x in (e["C6"], random_exp))
    if g6 and g6r:
        diff, se = g6[0] - g6r[0], math.hypot(g6[1], g6r[1])
        rows.append(_row("C6", [e["C6"], random_exp], "gap recovered, aligned - random", diff, se, "2 SE",
                         diff > 2 * se))
    else:
        rows.append(_not_run("C6", [e["C6"], random_exp], "gap difference", "2 SE",
                             "needs an aligned and a random-prompt experiment"))

    c7 = e["C7"]
    points = [(int(m.group(1)), v) for r in metrics.get(c7, []) for k, v in r.items()
              if (m := re.fullmatch(r"opd/overlap_ratio_chunk(\d+)", k)) and v is not None
              and math.isfinite(v)] if c7 else []
    fit = ols_slope([p[0] for p in points], [p[1] for p in points]) if points else None
    rows.append(_row("C7", [c7], "overlap slope per position chunk", *fit, "-2 SE", fit[0] < -2 * fit[1],
                     f"{len({p[0] for p in points})} chunks, {len(points)} (step, chunk) points") if fit
                else _not_run("C7", [c7], "overlap slope", "-2 SE", "no per-chunk overlap in the training metrics"))
    return rows
