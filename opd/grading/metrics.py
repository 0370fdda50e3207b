"""Pure evaluation metrics: the unbiased pass@k estimator and distinct-n-gram diversity.

    >>> pass_at_k(n=4, c=1, k=2)          # 4 samples, 1 correct, budget of 2 tries
    0.5
    >>> distinct_ngram(["a b c d e", "a b c d"], n=4)   # 3 four-grams, 2 distinct
    0.6666666666666666

``summarize`` uses both to turn per-sample verdicts into benchmark numbers.
"""
from __future__ import annotations

from typing import Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): ``1 - C(n-c, k) / C(n, k)``.

    ``n`` samples were drawn for a problem and ``c`` of them are correct; the result is the
    probability that at least one of ``k`` samples drawn without replacement is correct.
    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which never forms the huge binomials.
    Raises ``ValueError`` unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    n, c, k = int(n), int(c), int(k)
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def distinct_ngram(texts: Iterable[str], n: int = 4) -> float:
    """Distinct n-grams over total n-grams across ``texts`` (whitespace tokens).

    n-grams never span two texts. Returns 0.0 when no text has ``n`` tokens.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = str(text).split()
        count = len(tokens) - n + 1
        if count <= 0:
            continue
        total += count
        seen.update(tuple(tokens[i:i + n]) for i in range(count))
    return len(seen) / total if total else 0.0


SUMMARY_COLUMNS = ("problem_id", "sample_idx", "response", "correct", "format_error", "n_tokens")
BOOL_COLUMNS = ("correct", "format_error")


def strict_bool(column, name: str):
    """``column`` (a pandas Series) as a numpy-bool Series, accepting only real booleans.

    Accepted: a bool dtype (numpy ``bool`` or pandas ``boolean`` without missing values), or an
    object column whose every value is a Python or numpy bool. Nothing is mapped: the strings
    ``"False"``/``"True"``, 0/1, None and NaN raise ``ValueError`` naming the column ``name``,
    the number of bad rows and up to five distinct bad values.
    """
    import numpy as np
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype) and not column.dtype == object:
        bad = column[column.isna()]
    else:
        bad = column[[not isinstance(v, (bool, np.bool_)) for v in column]]
    if len(bad):
        examples = list(dict.fromkeys(repr(v) for v in bad))[:5]
        raise ValueError(f"summarize: column {name!r} must hold booleans (True/False), but "
                         f"{len(bad)} of {len(column)} value(s) are not, e.g. "
                         f"{', '.join(examples)} (dtype {column.dtype}); write the verdicts "
                         "as bool, not as strings or numbers")
    return column.astype(bool)


def summarize(verdicts) -> dict:
    """Benchmark numbers from one row per (problem, sample); see the module docstring.

    Keys: ``n_problems``, ``n_samples`` (per problem; the minimum if it varies, with
    ``n_samples_varies`` True), ``n_rollouts``, ``mean_score`` (avg@n) and ``mean_score_se``
    (its standard error, samples clustered by problem), ``best_score``
    (pass@n), ``solve_none``, ``solve_all``, ``avg_output_length``, ``format_error_rollouts``
    (count), ``format_error_rate``, ``distinct_4gram``, and ``pass@k`` for k = 1, 2, 4, ...
    up to ``n_samples`` plus ``n_samples`` itself (unbiased, each problem with its own n).
    Raises ``ValueError`` for a missing column, no rows, or a ``correct``/``format_error``
    column that holds anything but booleans (``strict_bool``).
    """
    missing = [c for c in SUMMARY_COLUMNS if c not in verdicts.columns]
    if missing:
        raise ValueError(f"summarize: missing column(s) {missing}; need {list(SUMMARY_COLUMNS)}")
    if len(verdicts) == 0:
        raise ValueError("summarize: no rows")
    df = verdicts.assign(**{c: strict_bool(verdicts[c], c) for c in BOOL_COLUMNS})
    per = df.groupby("problem_id", sort=False)["correct"].agg(["size", "sum", "mean"])
    n = int(per["size"].min())
    ks = sorted({2 ** e for e in range(n.bit_length()) if 2 ** e <= n} | {n})
    result = {
        "n_problems": int(len(per)),
        "n_samples": n,
        "n_samples_varies": bool(per["size"].nunique() > 1),
        "n_rollouts": int(len(df)),
        "mean_score": float(per["mean"].mean()),
        # standard error of avg@n with samples clustered by problem: std of the per-problem
        # means over sqrt(problems) (0 for a single problem)
        "mean_score_se": float(per["mean"].std(ddof=1) / len(per) ** 0.5) if len(per) > 1 else 0.0,
        "best_score": float((per["sum"] > 0).mean()),
        "solve_none": float((per["sum"] == 0).mean()),
        "solve_all": float((per["sum"] == per["size"]).mean()),
        "avg_output_length": float(df["n_tokens"].mean()),
        "format_error_rollouts": int(df["format_error"].sum()),
        "format_error_rate": float(df["format_error"].mean()),
        "distinct_4gram": distinct_ngram(df["response"].astype(str), n=4),
    }
    for k in ks:
        result[f"pass@{k}"] = float(sum(pass_at_k(s, c, k) for s, c in
                                        zip(per["size"], per["sum"])) / len(per))
    return result
