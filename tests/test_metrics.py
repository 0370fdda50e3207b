"""pass@k and distinct-n-gram on hand-computed numbers; strict verdict columns of summarize."""
from math import comb

import numpy as np
import pandas as pd
import pytest

from opd.grading.metrics import distinct_ngram, pass_at_k, summarize


@pytest.mark.parametrize("n,c,k,expected", [
    (4, 1, 1, 0.25),
    (4, 1, 2, 0.5),          # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 2, 2, 5 / 6),        # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (4, 0, 1, 0.0),
    (4, 0, 4, 0.0),
    (4, 4, 1, 1.0),
    (4, 3, 2, 1.0),          # only one wrong sample: any 2 draws contain a correct one
    (16, 1, 16, 1.0),
    (16, 4, 1, 0.25),
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_formula():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_stable():
    # C(1024, 512) overflows a float; the product form does not need it
    value = pass_at_k(1024, 1, 512)
    assert value == pytest.approx(0.5, abs=1e-12)
    assert 0.0 <= pass_at_k(1024, 3, 7) <= 1.0


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5), (0, 0, 1)])
def test_pass_at_k_rejects_invalid(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_distinct_ngram_hand_built():
    # "a b c d e" -> (a b c d), (b c d e); "a b c d" -> (a b c d): 2 distinct of 3
    assert distinct_ngram(["a b c d e", "a b c d"], n=4) == pytest.approx(2 / 3)
    # n-grams never cross texts: "a b" + "c d" has no 4-gram at all
    assert distinct_ngram(["a b", "c d"], n=4) == 0.0
    assert distinct_ngram([], n=4) == 0.0
    # all repeated: "x x x x x x" has 3 four-grams, all identical
    assert distinct_ngram(["x x x x x x"], n=4) == pytest.approx(1 / 3)
    # whitespace of any kind splits tokens
    assert distinct_ngram(["a\tb\nc  d"], n=4) == 1.0
    assert distinct_ngram(["a b a b"], n=2) == pytest.approx(2 / 3)


def test_distinct_ngram_rejects_bad_n():
    with pytest.raises(ValueError):
        distinct_ngram(["a b"], n=0)


# --------------------------------------------------------------------------- summarize verdicts
# (issue 11, item 4): verdict columns must hold real booleans; nothing is coerced.


def _verdicts(correct, format_error=None) -> pd.DataFrame:
    n = len(correct)
    return pd.DataFrame({"problem_id": ["p1"] * n, "sample_idx": range(n),
                         "response": ["a b c d"] * n, "correct": correct,
                         "format_error": [False] * n if format_error is None else format_error,
                         "n_tokens": [10] * n})


def test_summarize_one_correct_in_four():
    assert summarize(_verdicts([True, False, False, False]))["mean_score"] == pytest.approx(0.25)


@pytest.mark.parametrize("column", [
    pd.Series([True, False, False, False]),
    pd.Series([True, np.bool_(False), False, False], dtype=object),
    pd.Series([True, False, False, False], dtype="boolean"),
])
def test_summarize_accepts_real_booleans(column):
    assert summarize(_verdicts(column))["mean_score"] == pytest.approx(0.25)


@pytest.mark.parametrize("column,shown", [
    (["True", "False", "False", "False"], "'False'"),      # strings are not booleans
    ([True, False, np.nan, False], "nan"),                  # NaN is not wrong, nor right
    ([True, False, None, False], "None"),
    ([1, 0, 0, 0], "1"),                                    # numbers are not mapped either
    (pd.Series([True, None, False, False], dtype="boolean"), "<NA>"),
])
def test_summarize_rejects_non_booleans(column, shown):
    with pytest.raises(ValueError, match="'correct'") as err:
        summarize(_verdicts(column))
    assert shown in str(err.value)
    with pytest.raises(ValueError, match="'format_error'"):
        summarize(_verdicts([True, False, False, False], format_error=column))


def test_mean_score_standard_error_clusters_samples_by_problem():
    """Two problems, solved 4/4 and 0/4: per-problem means 1 and 0, std 0.7071, SE 0.5."""
    import pandas as pd

    from opd.grading.metrics import summarize

    rows = [{"problem_id": p, "sample_idx": i, "response": "r", "correct": p == "a",
             "format_error": False, "n_tokens": 3} for p in ("a", "b") for i in range(4)]
    s = summarize(pd.DataFrame(rows))
    assert s["mean_score"] == 0.5
    assert abs(s["mean_score_se"] - 0.5) < 1e-12
