"""Teacher-aligned selection: DAPO-like prompts rank above prompts of another flavour.

Reference: 200 real DAPO questions; candidates: 100 other DAPO questions and 100 Minerva
questions (science and engineering problems with units, a different flavour). Observed with
the bundled MiniLM: 92 (max) and 89 (centroid) of the top 100 are DAPO. MathArena problems
are competition math like DAPO and come out at chance (56-58), so they are no contrast; short
arithmetic drills sit near the centroid of any math set (40 with centroid, 81 with max).
"""
from __future__ import annotations

import random

import pandas as pd
import pytest

from opd.data.selection import n_to_keep, random_control, select_aligned

from conftest import SHARED_DATA, questions_frame

DATA = SHARED_DATA




@pytest.fixture(scope="module")
def frames():
    path = DATA / "train" / "dapo-math-17k.parquet"
    minerva_path = DATA / "benchmarks" / "Minerva.parquet"
    if not (path.exists() and minerva_path.exists()):
        pytest.skip(f"real datasets not found at {DATA} (../shared/data)")
    from opd.io import flat_view
    from opd.data.datasets import load_dataset, strip_instructions
    qs = [strip_instructions(p[0]["content"])
          for p in pd.read_parquet(path, columns=["prompt"])["prompt"]]
    qs = list(dict.fromkeys(q for q in qs if len(q) < 600))
    random.Random(1).shuffle(qs)
    minerva = flat_view(load_dataset(minerva_path))["question"].tolist()
    random.Random(2).shuffle(minerva)
    reference = questions_frame("ref", qs[:200])
    candidates = questions_frame("cand", qs[200:300] + minerva[:100])  # cand-0..99 are DAPO
    return reference, candidates


@pytest.fixture(scope="module")
def encoder():
    from opd.data.embeddings import load_encoder
    return load_encoder()


def _ids(df: pd.DataFrame) -> list[str]:
    return [e["problem_id"] for e in df["extra_info"]]


@pytest.mark.parametrize("score, at_least", [("max", 85), ("centroid", 80)])
def test_top_n_prefers_teacher_like_prompts(frames, encoder, score, at_least):
    reference, candidates = frames
    selected, report = select_aligned(candidates, reference, top_n=100, score=score,
                                      encoder=encoder, progress=False)
    ids = _ids(selected)
    assert len(selected) == 100 == report["n_selected"]
    n_dapo = sum(int(i.split("-")[1]) < 100 for i in ids)
    assert n_dapo >= at_least, report["examples"]
    # original order kept, ranking in the report
    assert ids == sorted(ids, key=lambda i: int(i.split("-")[1]))
    assert sorted(r["problem_id"] for r in report["ranking"]) == sorted(ids)
    scores = [r["score"] for r in report["ranking"]]
    assert scores == sorted(scores, reverse=True)
    stats = report["score_stats"]
    assert stats["selected"]["min"] >= stats["dropped"]["max"]
    assert stats["selected"]["mean"] > stats["dropped"]["mean"]
    assert report["examples"]["top"][0]["similarity"] == stats["selected"]["max"]
    assert report["examples"]["bottom"][0]["similarity"] == stats["dropped"]["min"]
    assert list(selected.columns) == list(candidates.columns)


def test_fraction_matches_top_n(frames, encoder):
    reference, candidates = frames
    by_fraction, rep = select_aligned(candidates, reference, fraction=0.25, encoder=encoder,
                                      progress=False)
    by_top, _ = select_aligned(candidates, reference, top_n=50, encoder=encoder,
                               progress=False)
    assert len(by_fraction) == 50 == rep["n_selected"]
    assert _ids(by_fraction) == _ids(by_top)
    assert sum(int(i.split("-")[1]) < 100 for i in _ids(by_top)) >= 45


@pytest.mark.parametrize("kwargs", [
    {}, {"top_n": 5, "fraction": 0.5}, {"fraction": 0.0}, {"fraction": 1.5},
    {"fraction": -0.1}, {"top_n": -1}, {"top_n": 2.5}, {"top_n": 3, "score": "median"},
])
def test_invalid_arguments(kwargs):
    ref, cand = questions_frame("r", ["a?"]), questions_frame("c", ["b?", "c?"])
    with pytest.raises(ValueError):
        select_aligned(cand, ref, encoder_path="/nonexistent/model", progress=False, **kwargs)


def test_n_to_keep():
    assert n_to_keep(10, 3, None) == 3
    assert n_to_keep(10, 30, None) == 10
    assert n_to_keep(10, None, 0.25) == 3
    assert n_to_keep(10, None, 1.0) == 10
    assert n_to_keep(0, None, 0.5) == 0


def test_random_control_draws_a_seeded_subset_in_order():
    cand = questions_frame("c", [f"What is {i} + 1?" for i in range(50)])
    ids = _ids(cand)
    drawn = random_control(cand, 20, seed=7)
    assert len(drawn) == 20 and list(drawn.columns) == list(cand.columns)
    assert list(drawn.index) == list(range(20))
    got = _ids(drawn)
    assert len(set(got)) == 20 and set(got) <= set(ids)
    assert got == sorted(got, key=ids.index)                          # the original order
    assert _ids(random_control(cand, 20, seed=7)) == got              # deterministic per seed
    assert _ids(random_control(cand, 20, seed=8)) != got              # another seed, other rows
    assert _ids(random_control(cand, 50, seed=7)) == ids              # all of them: the set itself
    assert len(random_control(cand, 0, seed=7)) == 0
    for bad in (51, -1, 2.5, True):
        with pytest.raises(ValueError):
            random_control(cand, bad, seed=7)
