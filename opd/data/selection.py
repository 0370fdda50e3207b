"""Teacher-aligned prompt selection (the paper's second recovery).

``select_aligned(candidates, reference, top_n=... | fraction=...)`` keeps the candidate
prompts closest to a reference set that stands for the teacher's post-training prompts. Each
candidate's bare question (``extra_info.question``) is embedded with ``opd.data.embeddings`` and
scored by

* ``score="max"``: the cosine similarity to its nearest reference question (exact, chunked);
* ``score="centroid"``: the cosine similarity to the normalised mean of the reference
  embeddings.

The ``top_n`` best (or ``round(fraction * len(candidates))``; exactly one of the two) are
kept, ties broken by the original order. The selected frame keeps the candidates' rows
unchanged and in their original order (so it stays a plain verl-format dataset and a
selection is a subset, not a shuffle); the ranking lives in the report: ``ranking`` lists the
selected problem ids best first with their scores and ranks, next to the counts, settings,
timings, score statistics (min/mean/max of the selected and the dropped) and the top and
bottom examples.

``max`` is the default because it rewards being close to some teacher prompt. ``centroid``
rewards being typical of the reference set as a whole; with the bundled MiniLM, short generic
questions ("What is 537 + 48?") sit closer to the centroid of 200 DAPO problems than most
DAPO problems do (tests/test_selection.py has the numbers), so use it with care.

    >>> selected, report = select_aligned(deepmath, dapo, fraction=0.5, score="max")

``random_control(candidates, n, seed)`` is the selection's control (claim C6: OPD on as many
prompts drawn at random): ``n`` rows drawn uniformly without replacement, in original order.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from opd.data.dedup import example, get_encoder, questions
from opd.data.embeddings import (DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, DEFAULT_MAX_SEQ_LENGTH,
                            Encoder, embed, max_similarity, resolve_precision)

SCORES = ("max", "centroid")


def n_to_keep(n: int, top_n: int | None, fraction: float | None) -> int:
    """How many of ``n`` candidates to keep; ``ValueError`` unless exactly one rule is valid."""
    if (top_n is None) == (fraction is None):
        raise ValueError("give exactly one of top_n and fraction")
    if top_n is not None:
        if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 0:
            raise ValueError(f"top_n must be a non-negative integer, got {top_n!r}")
        return min(int(top_n), n)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return min(n, int(np.floor(float(fraction) * n + 0.5)))


def select_aligned(candidates: pd.DataFrame, reference: pd.DataFrame,
                   encoder_path: str | None = None, top_n: int | None = None,
                   fraction: float | None = None, score: str = "max",
                   batch_size: int = DEFAULT_BATCH_SIZE, chunk_size: int = DEFAULT_CHUNK_SIZE,
                   n_examples: int = 5, *, encoder: Encoder | None = None,
                   max_seq_length: int | None = DEFAULT_MAX_SEQ_LENGTH,
                   precision: str = "auto", progress: bool = True
                   ) -> tuple[pd.DataFrame, dict]:
    """The candidates most similar to ``reference``, in original order, and a report."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    cand = questions(candidates, "candidates")
    ref = questions(reference, "reference")
    k = n_to_keep(len(cand), top_n, fraction)
    if len(ref) == 0:
        raise ValueError("the reference set is empty")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    enc, t_load = get_encoder(encoder, encoder_path, max_seq_length)
    if encoder is None:
        timings["load_encoder_s"] = t_load

    t0 = time.perf_counter()
    ref_emb = embed(ref["question"].tolist(), enc, batch_size, progress, precision,
                    desc="embed reference")
    timings["embed_reference_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cand_emb = embed(cand["question"].tolist(), enc, batch_size, progress, precision,
                     desc="embed candidates")
    timings["embed_candidates_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if score == "max":
        scores, nearest = max_similarity(cand_emb, ref_emb, chunk_size)
    else:
        centroid = ref_emb.mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        scores = cand_emb @ centroid
        nearest = np.full(len(cand), -1, dtype=np.int64)
    ranked = np.argsort(-scores, kind="stable")
    chosen = ranked[:k]
    mask = np.zeros(len(cand), dtype=bool)
    mask[chosen] = True
    timings["score_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    def pairs(idx):
        return [example(cand, ref, int(i), int(nearest[i]), scores[i]) for i in idx]

    report = {
        "n_candidates": int(len(cand)),
        "n_reference": int(len(ref)),
        "n_selected": int(k),
        "top_n": top_n,
        "fraction": fraction,
        "score": score,
        "encoder": enc.path,
        "max_seq_length": enc.max_seq_length,
        "precision": resolve_precision(precision),
        "timings": {name: round(v, 3) for name, v in timings.items()},
        "score_stats": {"selected": _stats(scores[mask]), "dropped": _stats(scores[~mask])},
        "ranking": [{"rank": r, "problem_id": cand["problem_id"].iat[i],
                     "score": round(float(scores[i]), 4)} for r, i in enumerate(chosen)],
        "examples": {"top": pairs(ranked[:n_examples]),
                     "bottom": pairs(ranked[::-1][:n_examples])},
    }
    return candidates.iloc[np.sort(chosen)].reset_index(drop=True), report


def random_control(candidates: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows of ``candidates`` drawn uniformly at random without replacement.

    candidates: any frame of ``N`` rows (the deduplicated training set). Returns a frame of
    ``n`` rows with the same columns, the rows unchanged and in their original order (a subset,
    not a shuffle; index reset to ``0..n-1``). The draw depends only on ``(N, n, seed)``
    (``numpy.random.default_rng(seed)``), so one seed gives the same rows on every run.
    Raises ``ValueError`` when ``n`` is negative or not an integer, or ``n > N``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if n > len(candidates):
        raise ValueError(f"cannot draw {n} random prompts from {len(candidates)} candidates")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(candidates), size=int(n), replace=False))
    return candidates.iloc[chosen].reset_index(drop=True)


def _stats(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {"n": 0}
    return {"n": int(len(x)), "min": round(float(x.min()), 4),
            "mean": round(float(x.mean()), 4), "max": round(float(x.max()), 4)}
