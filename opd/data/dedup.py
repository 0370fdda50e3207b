r"""Remove candidate problems that duplicate a reference set (paper §5.2: DeepMath vs DAPO).

``dedup(candidates, reference)`` works in two phases on the bare questions
(``extra_info.question``) of two datasets in the project's row format:

1. exact: a candidate whose normalised question (``normalize_question``) equals that of any
   reference question is removed, and so is a candidate equal to an earlier candidate (the
   first one is kept);
2. semantic: every remaining candidate is embedded (``opd.data.embeddings``) and compared with
   every reference question by cosine similarity, exactly (chunked matrix products, no
   approximate index); a candidate whose nearest reference question has similarity
   ``>= threshold`` is removed.

``normalize_question`` lowercases (after Unicode NFKC), drops the math delimiters ``$``,
``\(``, ``\)``, ``\[``, ``\]``, the LaTeX spacing and sizing commands ``\,`` ``\;`` ``\:``
``\!`` ``\ `` ``~`` ``\quad`` ``\qquad`` ``\displaystyle`` ``\left`` ``\right``, maps
``\dfrac``/``\tfrac`` to ``\frac`` and ``^{2}`` to ``^2``, turns sentence punctuation
(``, ; : ! ?`` and a ``.`` that is not a decimal point) into spaces, collapses whitespace and
drops spaces next to symbols, so ``"Find $x + y$ ."`` and ``"find x+y"`` are equal while
``(1,2)`` and ``(12)`` stay different.

The report records the counts per phase, the settings, timings, the removed problem ids per
phase, quantiles of the nearest-reference similarity, example pairs (candidate, nearest
reference question, similarity): exact matches, semantic removals across the removed range,
and the kept candidates closest to the threshold; and ``removed_pairs``, every removed
candidate with the question it duplicates and their similarity.

    >>> kept, report = dedup(deepmath, dapo, threshold=0.9)
"""
from __future__ import annotations

import re
import time
import unicodedata

import numpy as np
import pandas as pd

from opd.io import DataError, flat_view
from opd.data.embeddings import (DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, DEFAULT_MAX_SEQ_LENGTH,
                            Encoder, embed, load_encoder, max_similarity,
                            resolve_precision)

_DELIMS = re.compile(r"\$|\\[()\[\]]")
_SPACING = re.compile(r"\\\\|\\(?:[,;:! ]|q?quad\b|displaystyle\b|left\b|right\b)|~")
_FRAC = re.compile(r"\\[dt]frac\b")
_BRACED = re.compile(r"([_^])\{(\w)\}")
_PUNCT = re.compile(r"[,;:!?]|\.(?!\d)|(?<!\d)\.")
_SPACE_AROUND_SYMBOL = re.compile(r"\s*([^\w\s])\s*")


def normalize_question(text: str) -> str:
    """Canonical form of a question for exact matching (see the module docstring)."""
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = _DELIMS.sub(" ", s)
    s = _SPACING.sub(" ", s)
    s = _FRAC.sub(r"\\frac", s)
    s = _BRACED.sub(r"\1\2", s)
    s = _PUNCT.sub(" ", s)
    s = " ".join(s.split())
    return _SPACE_AROUND_SYMBOL.sub(r"\1", s)


def questions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """``flat_view`` of ``df`` with a non-empty ``question`` on every row (else ``DataError``)."""
    flat = flat_view(df, source)
    bad = [i for i, q in enumerate(flat["question"]) if not isinstance(q, str) or not q.strip()]
    if bad:
        raise DataError(f"{source}: {len(bad)} row(s) without extra_info.question, first at "
                        f"row {bad[0]}; load datasets with opd.data.datasets.load_dataset")
    return flat


def get_encoder(encoder: Encoder | None, encoder_path: str | None,
                max_seq_length: int | None) -> tuple[Encoder, float]:
    """The given encoder, or one loaded from ``encoder_path``; and the load time in seconds."""
    if encoder is not None:
        return encoder, 0.0
    t0 = time.perf_counter()
    enc = load_encoder(encoder_path, max_seq_length=max_seq_length)
    return enc, time.perf_counter() - t0


def dedup(candidates: pd.DataFrame, reference: pd.DataFrame, encoder_path: str | None = None,
          threshold: float = 0.9, batch_size: int = DEFAULT_BATCH_SIZE,
          chunk_size: int = DEFAULT_CHUNK_SIZE, n_examples: int = 10, *,
          encoder: Encoder | None = None, max_seq_length: int | None = DEFAULT_MAX_SEQ_LENGTH,
          precision: str = "auto", progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Candidates that are neither exact nor near duplicates of the reference, and a report.

    ``kept`` keeps the candidates' rows and order (index reset). Pass a loaded ``encoder``
    to reuse one; otherwise it is loaded from ``encoder_path`` (``None``: the default).
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
    t_start = time.perf_counter()
    cand = questions(candidates, "candidates")
    ref = questions(reference, "reference")
    timings: dict[str, float] = {}

    # phase 1: exact matches of the normalised text
    t0 = time.perf_counter()
    cand_norm = [normalize_question(q) for q in cand["question"]]
    ref_first: dict[str, int] = {}
    for j, q in enumerate(ref["question"]):
        ref_first.setdefault(normalize_question(q), j)
    exact = np.array([n in ref_first for n in cand_norm], dtype=bool)
    within = np.zeros(len(cand), dtype=bool)
    first: dict[str, int] = {}                   # normalised text -> first candidate with it
    for i, n in enumerate(cand_norm):
        if not exact[i]:
            within[i] = n in first
            first.setdefault(n, i)
    timings["exact_s"] = time.perf_counter() - t0

    # phase 2: nearest reference question by cosine similarity
    remaining = np.flatnonzero(~exact & ~within)
    best = np.full(len(cand), np.nan, dtype=np.float32)
    nearest = np.full(len(cand), -1, dtype=np.int64)
    for i in np.flatnonzero(exact):
        nearest[i], best[i] = ref_first[cand_norm[i]], 1.0
    enc_name = encoder.path if encoder is not None else (encoder_path or "default")
    seq_len = encoder.max_seq_length if encoder is not None else max_seq_length
    precision_used = None
    if len(remaining) and len(ref):
        enc, t_load = get_encoder(encoder, encoder_path, max_seq_length)
        if encoder is None:
            timings["load_encoder_s"] = t_load
        enc_name, seq_len = enc.path, enc.max_seq_length
        precision_used = resolve_precision(precision)
        t0 = time.perf_counter()
        ref_emb = embed(ref["question"].tolist(), enc, batch_size, progress, precision,
                        desc="embed reference")
        timings["embed_reference_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cand_emb = embed(cand["question"].iloc[remaining].tolist(), enc, batch_size, progress,
                         precision, desc="embed candidates")
        timings["embed_candidates_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sim, arg = max_similarity(cand_emb, ref_emb, chunk_size)
        best[remaining], nearest[remaining] = sim, arg
        timings["match_s"] = time.perf_counter() - t0
    semantic = np.zeros(len(cand), dtype=bool)
    semantic[remaining] = best[remaining] >= threshold
    keep = ~exact & ~within & ~semantic
    timings["total_s"] = time.perf_counter() - t_start

    kept_sims = best[keep]
    report = {
        "n_candidates": int(len(cand)),
        "n_reference": int(len(ref)),
        "removed_exact": int(exact.sum()),
        "removed_within_candidates": int(within.sum()),
        "removed_semantic": int(semantic.sum()),
        "n_kept": int(keep.sum()),
        "threshold": float(threshold),
        "encoder": enc_name,
        "max_seq_length": seq_len,
        "precision": precision_used,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "kept_similarity_quantiles": _quantiles(kept_sims[~np.isnan(kept_sims)]),
        "removed_ids": {
            "exact": cand["problem_id"][exact].tolist(),
            "within_candidates": cand["problem_id"][within].tolist(),
            "semantic": cand["problem_id"][semantic].tolist(),
        },
        "examples": _examples(cand, ref, best, nearest, exact, semantic, keep, n_examples),
        "removed_pairs": _removed_pairs(cand, ref, cand_norm, first, best, nearest, exact, within,
                                        semantic),
    }
    return candidates.iloc[np.flatnonzero(keep)].reset_index(drop=True), report


def _quantiles(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {}
    qs = np.quantile(x, [0.5, 0.9, 0.99, 1.0])
    return {k: round(float(v), 4) for k, v in zip(("p50", "p90", "p99", "max"), qs)}


def example(cand: pd.DataFrame, ref: pd.DataFrame, i: int, j: int, sim: float,
            width: int = 300) -> dict:
    """One (candidate, nearest reference, similarity) pair for a report; texts cut to width."""
    return {
        "candidate_id": cand["problem_id"].iat[i],
        "candidate": cand["question"].iat[i][:width],
        "reference_id": ref["problem_id"].iat[j] if j >= 0 else None,
        "reference": ref["question"].iat[j][:width] if j >= 0 else None,
        "similarity": round(float(sim), 4),
    }


def _removed_pairs(cand, ref, cand_norm, first, best, nearest, exact, within, semantic) -> list:
    """Every removed candidate with what it duplicates, in candidate order: ``phase`` (exact,
    within_candidates, semantic), the candidate, its match (for ``within_candidates`` the earlier
    candidate it repeats; texts cut to 300 characters) and their similarity (1.0 when exact)."""
    out = []
    for i in np.flatnonzero(exact | within | semantic):
        if within[i]:
            pair = example(cand, cand, int(i), first[cand_norm[i]], 1.0)
            phase = "within_candidates"
        else:
            pair = example(cand, ref, int(i), int(nearest[i]), best[i])
            phase = "exact" if exact[i] else "semantic"
        out.append({"phase": phase, **pair})
    return out


def _examples(cand, ref, best, nearest, exact, semantic, keep, n: int) -> dict:
    def pairs(idx):
        return [example(cand, ref, int(i), int(nearest[i]), best[i]) for i in idx]

    sem = np.flatnonzero(semantic)
    sem = sem[np.argsort(best[sem], kind="stable")]  # lowest (closest to threshold) first
    spread = sem[np.unique(np.linspace(0, len(sem) - 1, min(n, len(sem))).astype(int))] \
        if len(sem) else sem
    kept = np.flatnonzero(keep & ~np.isnan(best))
    borderline = kept[np.argsort(-best[kept], kind="stable")[:n]]
    return {"exact": pairs(np.flatnonzero(exact)[:n]),
            "semantic_removed": pairs(spread),
            "borderline_kept": pairs(borderline)}
