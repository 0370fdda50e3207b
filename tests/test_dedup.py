"""Deduplication: question normalisation, and planted copies and paraphrases of real DAPO
questions found among real DeepMath/DAPO questions with the bundled all-MiniLM-L6-v2."""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opd.io import DataError
from opd.data.dedup import dedup, normalize_question

from conftest import SHARED_DATA, questions_frame

DATA = SHARED_DATA
THRESHOLD = 0.9  # observed: planted paraphrases 0.92-0.99, distinct real questions <= 0.75

# Meaning-preserving rewrites: synonyms for the instruction verbs and common phrases.
SYNONYMS = {"Find": "Determine", "What is": "Compute", "Compute": "Calculate", "Let": "Suppose",
            "How many": "What is the number of", "Determine": "Find",
            "positive integers": "positive whole numbers", "such that": "so that",
            "the sum": "the total"}
_SYNONYM_RE = re.compile(r"\b(" + "|".join(SYNONYMS) + r")\b")


def test_normalize_question():
    n = normalize_question
    assert n("Find $x + y$ .") == n("find x+y") == "find x+y"
    assert n("  What IS\n\t$\\dfrac{1}{2}$?") == n("what is \\frac{1}{2}")
    assert n("Let $x^{2} = 4$\\,.") == n("let x^2=4")
    assert n("\\( \\left( a \\right) \\) What?") == n("(a) what")
    assert n("(1,2)") == n("(1, 2)") != n("(12)")
    assert n("It costs 2.5 dollars.") == "it costs 2.5 dollars"


def paraphrase(q: str) -> str:
    """Synonyms, the final question moved to the front, and looser spacing and commas."""
    q = _SYNONYM_RE.sub(lambda m: SYNONYMS[m.group(1)], q)
    sentences = re.split(r"(?<=[.?])\s+", q.strip())
    ask, rest = sentences[-1].rstrip(".? "), " ".join(sentences[:-1])
    if len(ask.split()) >= 3 and rest:
        q = f"{ask[0].upper()}{ask[1:]}, where {rest[0].lower()}{rest[1:]}"
    return re.sub(r"\s+", "  ", q).replace(",", " ,")


def copy_with_noise(q: str) -> str:
    """An exact copy up to case and whitespace."""
    return "  " + re.sub(r" ", "   ", q.upper()) + "\n"




@pytest.fixture(scope="module")
def real_questions():
    dapo_path = DATA / "train" / "dapo-math-17k.parquet"
    deep_path = DATA / "train" / "deepmath-14k.parquet"
    if not (dapo_path.exists() and deep_path.exists()):
        pytest.skip(f"real datasets not found at {DATA} (../shared/data)")
    from opd.data.datasets import strip_instructions
    dapo = [strip_instructions(p[0]["content"])
            for p in pd.read_parquet(dapo_path, columns=["prompt"])["prompt"]]
    deep = [e["question"].strip()
            for e in pd.read_parquet(deep_path, columns=["extra_info"])["extra_info"]]
    rng = random.Random(0)
    dapo = [q for q in dict.fromkeys(dapo) if 40 < len(q) < 400]
    rng.shuffle(dapo)
    deep = [q for q in deep if 40 < len(q) < 400]
    rng.shuffle(deep)
    return dapo, deep


@pytest.fixture(scope="module")
def encoder():
    from opd.data.embeddings import load_encoder
    return load_encoder()


def test_dedup_removes_planted_duplicates(real_questions, encoder):
    dapo, deep = real_questions
    reference = dapo[:300]
    others = dapo[300:325] + deep[:25]          # genuinely different real questions
    copied = reference[:10]
    paraphrased = [q for q in reference[10:] if re.search(r"\b(Find|What is|How many|Let)\b", q)
                   and len(re.split(r"(?<=[.?])\s+", q.strip())) >= 2][:10]
    assert len(paraphrased) == 10
    planted_para = [paraphrase(q) for q in paraphrased]
    assert all(normalize_question(p) != normalize_question(q)
               for p, q in zip(planted_para, paraphrased))  # not caught by exact matching
    cand_q = others + [copy_with_noise(q) for q in copied] + planted_para + [others[0]]
    kept, report = dedup(questions_frame("cand", cand_q), questions_frame("ref", reference), threshold=THRESHOLD,
                         encoder=encoder, progress=False)

    removed = set(report["removed_ids"]["exact"])
    assert removed == {f"cand-{i}" for i in range(50, 60)}
    assert report["removed_ids"]["within_candidates"] == ["cand-70"]
    semantic = set(report["removed_ids"]["semantic"])
    assert {f"cand-{i}" for i in range(60, 70)} <= semantic, report["examples"]
    kept_others = sum(f"cand-{i}" in set(kept["extra_info"].map(lambda e: e["problem_id"]))
                      for i in range(50))
    assert kept_others >= 48, report["examples"]["semantic_removed"]
    assert report["n_candidates"] == 71 and report["n_reference"] == 300
    assert report["removed_exact"] == 10 and report["removed_within_candidates"] == 1
    assert report["n_kept"] == len(kept) == 71 - 11 - report["removed_semantic"]
    assert report["threshold"] == THRESHOLD and report["encoder"] == encoder.path
    # the paraphrases' nearest reference question is their source, with high similarity
    sem = {e["candidate_id"]: e for e in report["examples"]["semantic_removed"]}
    assert sum(f"cand-{60 + i}" in sem for i in range(10)) >= 8
    for e in sem.values():
        assert e["similarity"] >= THRESHOLD and e["reference"] is not None
    for i, q in enumerate(paraphrased):
        if f"cand-{60 + i}" in sem:
            assert sem[f"cand-{60 + i}"]["reference"] == q[:300]
    border = report["examples"]["borderline_kept"]
    assert border and all(e["similarity"] < THRESHOLD for e in border)
    assert border == sorted(border, key=lambda e: -e["similarity"])
    assert border[0]["similarity"] < 0.85  # a clear gap between distinct and planted
    assert {"exact_s", "embed_reference_s", "embed_candidates_s", "match_s", "total_s"} \
        <= set(report["timings"])


def test_paraphrase_similarity_is_high(real_questions, encoder):
    from opd.data.embeddings import embed
    dapo, _ = real_questions
    src = [q for q in dapo[300:] if re.search(r"\b(Find|What is|How many)\b", q)][:20]
    a = embed(src, encoder, progress=False)
    b = embed([paraphrase(q) for q in src], encoder, progress=False)
    sims = (a * b).sum(axis=1)
    assert np.median(sims) > 0.95 and sims.min() > 0.8, sims
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5) and a.dtype == np.float32


def test_dedup_exact_only_needs_no_encoder():
    ref = questions_frame("ref", ["What is 1+1?", "Find x."])
    cand = questions_frame("cand", ["what is 1 + 1 ?", "FIND  X", "find x"])
    kept, report = dedup(cand, ref, encoder_path="/nonexistent/model", progress=False)
    assert len(kept) == 0 and report["removed_exact"] == 3 and report["removed_semantic"] == 0


def test_dedup_rejects_rows_without_question():
    bad = questions_frame("c", ["a?"])
    bad["extra_info"] = [{"problem_id": "c-0", "question": None}]
    with pytest.raises(DataError, match="candidates"):
        dedup(bad, questions_frame("r", ["b?"]), progress=False)


def test_max_similarity_is_exact_in_chunks():
    from opd.data.embeddings import max_similarity
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(37, 8)).astype(np.float32), rng.normal(size=(11, 8)).astype(np.float32)
    best, arg = max_similarity(q, k, chunk_size=5)
    full = q @ k.T
    assert np.array_equal(arg, full.argmax(axis=1))
    assert np.allclose(best, full.max(axis=1))
    empty, _ = max_similarity(q[:0], k)
    assert empty.shape == (0,)


def test_embed_keeps_order_and_duplicates(encoder):
    from opd.data.embeddings import embed
    texts = ["Find the area of a circle of radius 2.", "What is 7 times 8?",
             "Find the area of a circle of radius 2."]
    e = embed(texts, encoder, progress=False, num_threads=1)
    assert e.shape == (3, encoder.dim) and e.dtype == np.float32
    assert np.array_equal(e[0], e[2]) and e[0] @ e[1] < 0.9
    single = embed(texts[1:2], encoder, progress=False, precision="fp32")
    assert float(single[0] @ e[1]) > 0.99  # bf16 (where used) stays close to float32
    assert embed([], encoder, progress=False).shape == (0, encoder.dim)


def test_encoder_paths(tmp_path):
    from opd.data.embeddings import default_model_path, load_encoder
    assert (Path(default_model_path()) / "modules.json").is_file()
    with pytest.raises(FileNotFoundError, match="not a local sentence-transformers model"):
        load_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_encoder("sentence-transformers/all-MiniLM-L6-v2")


def test_thread_tuner_keeps_the_faster_option():
    from opd.data.embeddings import _ThreadTuner
    tuner = _ThreadTuner([2, 1], period=10, trials=2)
    speed = {2: 100.0, 1: 300.0}  # word pieces per second, as on a busy machine
    picks = []
    for b in range(20):
        n = tuner.threads(b)
        picks.append(n)
        tuner.record(b, 300, 300 / speed[n])
    assert picks[:4] == [2, 2, 1, 1] and set(picks[4:10]) == {1}
    assert picks[10:14] == [2, 2, 1, 1]  # probes again each period


def test_dedup_rejects_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        dedup(questions_frame("c", ["a?"]), questions_frame("r", ["b?"]), threshold=1.5, progress=False)
