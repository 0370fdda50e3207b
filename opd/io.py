"""Row format of the project's datasets and atomic file writers.

Every prompt dataset in the pipeline is a parquet file in the verl row format
(see ``../shared/data/README.md``)::

    data_source   str
    prompt        list of {"role": "user", "content": str}   (one chat turn)
    ability       str
    reward_model  {"ground_truth": str, "style": "rule"}
    extra_info    {"index": int, "problem_id": str, "question": str, "split": str}

``extra_info.problem_id`` and ``extra_info.question`` (the bare question, without any
answer-format instruction) are the project's additions; ``flat_view`` turns a dataset into
one plain row per problem for the stages that do not care about the verl nesting.

Every writer writes to a temporary name in the same folder and renames it, so a killed job
never leaves a file that looks complete.

    >>> rows = [make_row("tiny", "p0", "What is 1+1?", "What is 1+1? Put ...", "2", 0, "train")]
    >>> write_parquet(pd.DataFrame(rows), "results/x.parquet")
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

VERL_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


class DataError(ValueError):
    """A dataset does not have the shape a stage needs; the message says which file and why."""


def make_row(data_source: str, problem_id: str, question: str, prompt_text: str,
             ground_truth: str, index: int, split: str, ability: str = "math", **extra) -> dict:
    """One problem in the project's row format (verl columns plus id and bare question).

    Keyword ``extra`` items are stored in ``extra_info`` too (e.g. a reference ``solution``).
    """
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": prompt_text}],
        "ability": ability,
        "reward_model": {"ground_truth": str(ground_truth), "style": "rule"},
        "extra_info": {"index": int(index), "problem_id": str(problem_id),
                       "question": question, "split": split, **extra},
    }


def flat_view(df: pd.DataFrame, source: str = "<dataframe>") -> pd.DataFrame:
    """One plain row per problem: ``problem_id, data_source, question, prompt, ground_truth``.

    ``prompt`` is the list of chat turns as stored. Raises ``DataError`` naming ``source``
    when a verl column is missing.
    """
    missing = [c for c in VERL_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; expected the verl row format "
                        f"{list(VERL_COLUMNS)}")
    extra = df["extra_info"].tolist()
    return pd.DataFrame({
        "problem_id": [str(e["problem_id"]) for e in extra],
        "data_source": df["data_source"].astype(str).tolist(),
        "question": [e.get("question") for e in extra],
        "prompt": [list(p) for p in df["prompt"]],
        "ground_truth": [str(r["ground_truth"]) for r in df["reward_model"]],
    })


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` to parquet atomically."""
    with atomic_path(path, ".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_parquet(path: str | os.PathLike, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a parquet file; raise ``DataError`` naming the file if it is empty or lacks columns."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    df = pd.read_parquet(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{path}: the dataset is empty")
    return df


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line left by a killed writer."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn final line from a killed job; everything before it is intact
    return rows


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
