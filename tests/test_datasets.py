"""Dataset adapters on every real file in ../shared/data, and their error messages."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from opd.io import DataError, flat_view, make_row, write_parquet
from opd.data.datasets import (BOXED_SLIP, PAPER_INSTRUCTION, detect_format, load_dataset, load_many,
                          strip_instructions)

from conftest import SHARED_DATA

DATA = SHARED_DATA
FILES = sorted(DATA.glob("*/*.parquet")) if DATA.is_dir() else []
NO_DATA = pytest.mark.skip(reason=f"real datasets not found at {DATA} (../shared/data)")
FILE_PARAMS = [pytest.param(f, id=f"{f.parent.name}/{f.stem}") for f in FILES] \
    or [pytest.param(None, marks=NO_DATA, id="no-data")]
BOILERPLATE = ("Please reason step by step", "Remember to put your answer on its own line",
               "The last line of your response should be of the form",
               "Solve the following math problem step by step")


@lru_cache(maxsize=None)
def _load(path: Path, style: str) -> pd.DataFrame:
    return load_dataset(path, prompt_style=style)


@pytest.mark.parametrize("style", ["keep", "paper"])
@pytest.mark.parametrize("path", FILE_PARAMS)
def test_adapter_on_real_file(path, style):
    source = pd.read_parquet(path)
    df = _load(path, style)
    flat = flat_view(df, str(path))
    assert len(df) == len(source)
    assert list(df.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert flat["problem_id"].is_unique
    assert (flat["data_source"] == path.stem).all()
    assert all(gt.strip() for gt in flat["ground_truth"])
    for q in flat["question"]:
        assert isinstance(q, str) and q.strip() and q == q.strip()
        assert not any(b in q for b in BOILERPLATE), q[-200:]
    prompts = [p[0]["content"] for p in flat["prompt"]]
    assert all(len(p) == 1 and p[0]["role"] == "user" for p in flat["prompt"])
    assert not any(BOXED_SLIP in p for p in prompts)
    if style == "paper" or "problem" in source.columns:
        for q, p in zip(flat["question"], prompts):
            assert p == f"{q}\n\n{PAPER_INSTRUCTION}"
    else:  # keep: the source's own prompt text, with only the \boxed{{}} slip corrected
        src = [p[0]["content"].replace(BOXED_SLIP, "\\boxed{}") for p in source["prompt"]]
        assert prompts == src
        if "problem_id" not in source["extra_info"].iloc[0]:
            ids = [f"{path.stem}-{e['index']}" if not str(e["index"]).startswith(f"{path.stem}-")
                   else str(e["index"]) for e in source["extra_info"]]
            assert flat["problem_id"].tolist() == ids


def test_ground_truths_unchanged():
    path = DATA / "benchmarks" / "AIME24.parquet"
    if not path.exists():
        pytest.skip(f"real datasets not found at {DATA} (../shared/data)")
    flat = flat_view(_load(path, "keep"))
    assert flat["ground_truth"].iloc[0] == "\\boxed{204}"  # graders unbox; adapters do not


def test_dapo_styles_give_same_questions():
    a, b = (DATA / "train" / f for f in ("dapo-math-17k.parquet", "dapo-math-17k-boxed.parquet"))
    if not (a.exists() and b.exists()):
        pytest.skip(f"real datasets not found at {DATA} (../shared/data)")
    qa = flat_view(_load(a, "paper"))["question"].tolist()
    qb = flat_view(_load(b, "paper"))["question"].tolist()
    assert qa == qb


def test_strip_instructions():
    q = "What is $1+1$?"
    dapo = ("Solve the following math problem step by step. The last line of your response "
            "should be of the form Answer: $Answer (without quotes) where $Answer is the answer "
            f"to the problem.\n\n{q}\n\nRemember to put your answer on its own line after "
            '"Answer:".')
    assert strip_instructions(dapo) == q
    assert strip_instructions(f"{q} Please reason step by step, and put your final answer "
                              "within \\boxed{{}}.") == q
    assert strip_instructions(f"{q}\n\n{PAPER_INSTRUCTION}") == q
    assert strip_instructions(q) == q


def _verl(n: int = 2) -> pd.DataFrame:
    return pd.DataFrame([make_row("x", f"x-{i}", f"q{i}?", f"q{i}?", str(i), i, "test")
                         for i in range(n)])


def test_missing_file(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(DataError, match="nope.parquet.*not found"):
        load_dataset(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.parquet"
    write_parquet(_verl().head(0), path)
    with pytest.raises(DataError, match="empty.parquet.*empty"):
        load_dataset(path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_text("not parquet")
    with pytest.raises(DataError, match="junk.parquet.*not a readable parquet"):
        load_dataset(path)


def test_unknown_format_lists_both_schemas(tmp_path):
    path = tmp_path / "odd.parquet"
    write_parquet(pd.DataFrame({"text": ["a"], "label": ["b"]}), path)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert "odd.parquet" in msg and "unknown dataset format" in msg
    assert "['prompt', 'reward_model']" in msg and "['problem_idx', 'problem', 'answer']" in msg


@pytest.mark.parametrize("frame, missing", [
    (_verl().drop(columns=["reward_model"]), "reward_model"),
    (pd.DataFrame({"problem_idx": [1], "problem": ["What is 2+2?"]}), "answer"),
])
def test_missing_column(tmp_path, frame, missing):
    path = tmp_path / "partial.parquet"
    write_parquet(frame, path)
    with pytest.raises(DataError, match=f"partial.parquet.*missing column.*{missing}"):
        load_dataset(path)


def test_empty_ground_truth_names_row(tmp_path):
    path = tmp_path / "nogt.parquet"
    write_parquet(pd.DataFrame({"problem_idx": [1, 2], "problem": ["a?", "b?"],
                                "answer": ["1", " "]}), path)
    with pytest.raises(DataError, match="nogt.parquet: row 1: empty ground truth"):
        load_dataset(path)


def test_matharena_and_options(tmp_path):
    path = tmp_path / "arena.parquet"
    write_parquet(pd.DataFrame({"problem_idx": [3, 7], "problem": ["What is 2+2?\n", "b?"],
                                "answer": ["4", "5"], "problem_type": [["A"], ["B"]]}), path)
    df = load_dataset(path, name="ARENA", split="eval")
    flat = flat_view(df)
    assert flat["problem_id"].tolist() == ["ARENA-3", "ARENA-7"]
    assert flat["question"].iloc[0] == "What is 2+2?"
    assert df["extra_info"].iloc[1]["split"] == "eval"
    assert detect_format(["problem_idx", "problem", "answer"]) == "matharena"
    with pytest.raises(ValueError, match="prompt_style"):
        load_dataset(path, prompt_style="fancy")
    both = load_many([path, {"path": path, "name": "OTHER"}])
    assert len(both) == 4
    with pytest.raises(DataError, match="duplicate problem ids"):
        load_many([path, path])


def test_repeated_source_ids_are_an_error_that_names_them(tmp_path):
    """A repeated id would count one problem twice in avg@n and pass@k (issue 11, item 8)."""
    path = tmp_path / "dup.parquet"
    rows = _verl(4)
    rows["extra_info"] = [{"index": 5}, {"index": 5}, {"index": 6}, {"index": 7}]
    write_parquet(rows, path)
    with pytest.raises(DataError, match=r"dup.parquet: problem ids repeated in extra_info.index: "
                                        r"'5'; .*drop the repeated rows or give them distinct ids"):
        load_dataset(path)
    rows["extra_info"] = [{"problem_id": p} for p in ("a", "b", "a", "b")]
    write_parquet(rows, path)
    with pytest.raises(DataError, match=r"repeated in extra_info.problem_id: 'a', 'b';"):
        load_dataset(path)
    arena = tmp_path / "arena.parquet"
    write_parquet(pd.DataFrame({"problem_idx": [1, 2, 2], "problem": ["a?", "b?", "c?"],
                                "answer": ["1", "2", "3"]}), arena)
    with pytest.raises(DataError, match=r"arena.parquet: problem ids repeated in problem_idx: '2';"):
        load_dataset(arena)


def test_missing_source_ids_fall_back_to_positions(tmp_path):
    path = tmp_path / "gap.parquet"
    rows = _verl(3)
    rows["extra_info"] = [{"index": 5}, {"index": None}, {"index": 5}]
    write_parquet(rows, path)
    assert flat_view(load_dataset(path))["problem_id"].tolist() == ["gap-0", "gap-1", "gap-2"]
