"""Pure evaluation metrics: the unbiased pass@k estimator and distinct-n-gram diversity.

    >>> pass_at_k(n=4, c=1, k=2)          # 4 samples, 1 correct, budget of 2 tries
    0.5
    >>> distinct_ngram(["a b c d e", "a b c d"], n=4)   # 3 four-grams, 2 distinct
    0.6666666666666666

``opd.grading.summarize`` uses both to turn per-sample verdicts into benchmark numbers.
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
