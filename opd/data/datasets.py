r"""Adapters from the public math datasets to the project's row format (``opd.io.make_row``).

Two on-disk schemas are read, detected by their columns:

* ``verl``: ``prompt`` (list of chat turns), ``reward_model`` (``{"ground_truth": ...}``), and
  optionally ``data_source``, ``ability``, ``extra_info`` (DAPO-Math-17k, DeepMath, AIME, ...);
* ``matharena``: ``problem_idx, problem, answer`` (HMMT25, BRUMO25, CMIMC25).

Every row becomes one problem with

* ``extra_info.question``: the bare question. ``extra_info.question`` of the source when it
  has one (DeepMath), else the prompt text with the known answer-format instructions removed:
  DAPO's leading "Solve the following math problem step by step. The last line ..." and
  trailing 'Remember to put your answer on its own line after "Answer:".', and the trailing
  "Please reason step by step, and put your final answer within \boxed{}." (also in its
  ``\boxed{{}}`` misspelling). Benchmark prompts without instructions are taken as they are.
* ``extra_info.problem_id``: stable across runs: the source's ``extra_info.problem_id``, else
  ``{name}-{extra_info.index}`` (the index alone when it already starts with ``{name}-``, as
  in ``AIME24-0``), for MathArena ``{name}-{problem_idx}``; the row position stands in for an
  index that is missing. Repeated ids raise ``DataError`` naming them: they would count one
  problem twice in avg@n and pass@k.
* ``extra_info.index``: the row position; ``extra_info.split``: the ``split`` argument.
* ``data_source``: ``name`` (default: the file stem); ``ability``: the source's, else "math".
* the ground truth as given (graders unbox ``\boxed{204}``).

``prompt_style``:

* ``"keep"``: the dataset's own prompt text (its single user turn; a system turn is dropped).
  The ``\boxed{{}}`` slip of the DAPO-boxed file is corrected to ``\boxed{}`` so that no
  prompt asks for a doubly braced box. MathArena files carry no prompt, so they get the
  paper prompt.
* ``"paper"``: ``"{question}\n\nPlease reason step by step, and put your final answer within
  \boxed{}."`` built from the bare question.

Problems raise ``opd.io.DataError`` naming the file: missing file, unreadable or empty
parquet, unknown schema (the message lists both accepted column sets), missing columns,
rows without a question, prompt or ground truth, and repeated problem ids. ``opd.checks`` makes
the same checks that a cheap read decides (all but the question and prompt) when the DAG is built.

    >>> df = load_dataset("../shared/data/train/dapo-math-17k.parquet", prompt_style="paper")
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from opd.io import DataError, make_row

PAPER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
BOXED_SLIP = "\\boxed{{}}"
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response "
               "should be of the form Answer: $Answer (without quotes) where $Answer is the "
               "answer to the problem.")
DAPO_SUFFIX = 'Remember to put your answer on its own line after "Answer:".'
PROMPT_STYLES = ("keep", "paper")

# Required columns of the two accepted schemas, and the columns that identify each one.
FORMATS = {
    "verl": ("prompt", "reward_model"),
    "matharena": ("problem_idx", "problem", "answer"),
}
_MARKERS = {"verl": {"prompt", "reward_model", "extra_info"},
            "matharena": {"problem_idx", "problem", "answer"}}

_PREFIX_RE = re.compile(r"^\s*" + re.escape(DAPO_PREFIX) + r"\s*")
_SUFFIX_RE = re.compile(
    r"\s*(?:" + re.escape(DAPO_SUFFIX)
    + r"|Please reason step by step,? and put your final answer within \\boxed\{\{?\}\}?\.?)\s*$")


def paper_prompt(question: str) -> str:
    """The paper's prompt for a bare question."""
    return f"{question}\n\n{PAPER_INSTRUCTION}"


def strip_instructions(text: str) -> str:
    """The bare question: ``text`` without the known answer-format prefix and suffixes."""
    text = _PREFIX_RE.sub("", text)
    while True:
        stripped = _SUFFIX_RE.sub("", text)
        if stripped == text:
            return text.strip()
        text = stripped


def fix_boxed_slip(text: str) -> str:
    r"""Replace the upstream ``\boxed{{}}`` formatting slip with ``\boxed{}``."""
    return text.replace(BOXED_SLIP, "\\boxed{}")


def detect_format(columns: Iterable[str], source: str = "<dataframe>") -> str:
    """``"verl"`` or ``"matharena"`` from the column names; ``DataError`` when neither fits."""
    cols = set(columns)
    hits = {fmt: len(cols & markers) for fmt, markers in _MARKERS.items()}
    fmt = max(hits, key=hits.get)
    if hits[fmt] == 0:
        raise DataError(f"{source}: unknown dataset format, columns {sorted(cols)}; expected "
                        + " or ".join(f"{k} columns {list(v)}" for k, v in FORMATS.items()))
    missing = [c for c in FORMATS[fmt] if c not in cols]
    if missing:
        raise DataError(f"{source}: looks like the {fmt} format but is missing column(s) "
                        f"{missing}; the {fmt} format needs {list(FORMATS[fmt])}")
    return fmt


def load_dataset(path: str | os.PathLike, name: str | None = None, prompt_style: str = "keep",
                 split: str = "test") -> pd.DataFrame:
    """Read one dataset file into the project's row format (see the module docstring)."""
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    path = Path(path)
    name = name or path.stem
    src = _read(path)
    fmt = detect_format(src.columns, str(path))
    rows = _verl_rows(src, path, name, prompt_style, split) if fmt == "verl" \
        else _matharena_rows(src, path, name, split)
    return pd.DataFrame(rows)


def load_many(specs: Iterable[str | os.PathLike | dict]) -> pd.DataFrame:
    """Concatenate several datasets; each spec is a path or ``load_dataset`` keyword dict.

    Raises ``DataError`` when two datasets share a problem id (give them distinct names).
    """
    frames = [load_dataset(**s) if isinstance(s, dict) else load_dataset(s) for s in specs]
    if not frames:
        raise DataError("load_many: no datasets given")
    df = pd.concat(frames, ignore_index=True)
    ids = pd.Series([e["problem_id"] for e in df["extra_info"]])
    if ids.duplicated().any():
        raise DataError(f"load_many: duplicate problem ids across datasets, e.g. "
                        f"{ids[ids.duplicated()].iloc[0]!r}; give each dataset its own name")
    return df


def _read(path: Path) -> pd.DataFrame:
    expected = ("expected a parquet file in the verl row format or the MathArena format "
                "(problem_idx, problem, answer)")
    if not path.is_file():
        raise DataError(f"{path}: file not found; {expected}")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable parquet file ({exc}); {expected}") from exc
    if len(df) == 0:
        raise DataError(f"{path}: the dataset is empty (0 rows); {expected}")
    return df


def repeated_ids(raw: list[Any]) -> list[str]:
    """The source ids that occur more than once (empty when an id is missing: rows are then
    numbered by position, so no id repeats)."""
    if not all(r is not None and str(r) != "" and not _isnan(r) for r in raw):
        return []
    seen: dict[str, int] = {}
    for r in map(str, raw):
        seen[r] = seen.get(r, 0) + 1
    return [r for r, n in seen.items() if n > 1]


def duplicate_ids_message(where: str, column: str, dups: list[str]) -> str:
    shown = ", ".join(map(repr, dups[:10])) + (f" and {len(dups) - 10} more" if len(dups) > 10 else "")
    return (f"{where}: problem ids repeated in {column}: {shown}; each problem needs its own id, "
            "or avg@n and pass@k count it twice: drop the repeated rows or give them distinct ids")


def _problem_ids(name: str, raw: list[Any], where: str = "<dataframe>",
                 column: str = "the id column") -> list[str]:
    """``{name}-{id}`` from the source ids; row positions when one is missing; ``DataError``
    naming the repeated ids when an id occurs twice."""
    if dups := repeated_ids(raw):
        raise DataError(duplicate_ids_message(where, column, dups))
    if not all(r is not None and str(r) != "" and not _isnan(r) for r in raw):
        return [f"{name}-{i}" for i in range(len(raw))]
    return [str(r) if str(r).startswith(f"{name}-") else f"{name}-{r}" for r in raw]


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and x != x


def _user_text(prompt: Any, where: str) -> str:
    turns = [t for t in (list(prompt) if prompt is not None else []) if isinstance(t, dict)]
    users = [t for t in turns if t.get("role", "user") == "user"]
    if len(users) != 1 or not isinstance(users[0].get("content"), str):
        raise DataError(f"{where}: expected a prompt with exactly one user turn with text "
                        f"content, got {prompt!r:.200}")
    return users[0]["content"]


def _verl_rows(df: pd.DataFrame, path: Path, name: str, style: str, split: str) -> list[dict]:
    n = len(df)
    extras = [e if isinstance(e, dict) else {} for e in df["extra_info"]] \
        if "extra_info" in df.columns else [{}] * n
    key = "problem_id" if all("problem_id" in e for e in extras) else "index"
    ids = _problem_ids(name, [e.get(key) for e in extras], str(path), f"extra_info.{key}")
    abilities = df["ability"].tolist() if "ability" in df.columns else ["math"] * n
    rows = []
    for i, (prompt, reward, extra) in enumerate(zip(df["prompt"], df["reward_model"], extras)):
        where = f"{path}: row {i}"
        text = _user_text(prompt, where)
        question = extra.get("question")
        question = question.strip() if isinstance(question, str) and question.strip() \
            else strip_instructions(text)
        gt = reward.get("ground_truth") if isinstance(reward, dict) else None
        _check(question, gt, where)
        prompt_text = fix_boxed_slip(text) if style == "keep" else paper_prompt(question)
        ability = abilities[i] if isinstance(abilities[i], str) and abilities[i] else "math"
        rows.append(make_row(name, ids[i], question, prompt_text, str(gt), i, split, ability))
    return rows


def _matharena_rows(df: pd.DataFrame, path: Path, name: str, split: str) -> list[dict]:
    ids = _problem_ids(name, df["problem_idx"].tolist(), str(path), "problem_idx")
    rows = []
    for i, (problem, answer) in enumerate(zip(df["problem"], df["answer"])):
        question = problem.strip() if isinstance(problem, str) else ""
        _check(question, answer, f"{path}: row {i}")
        rows.append(make_row(name, ids[i], question, paper_prompt(question), str(answer), i,
                             split))
    return rows


def _check(question: str, ground_truth: Any, where: str) -> None:
    if not question:
        raise DataError(f"{where}: empty question")
    if ground_truth is None or _isnan(ground_truth) or not str(ground_truth).strip():
        raise DataError(f"{where}: empty ground truth")
