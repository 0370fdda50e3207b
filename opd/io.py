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
never leaves a file that looks complete. The temporary is named ``.<name>.tmp-<host>-<pid>-<random>``
so that the leftovers of a killed writer (SIGKILL, a SLURM time limit: gigabytes for a model folder)
can be recognised and removed: every writer removes the stale temporaries of its target before it
writes (those not held by a live process on this host), and the stage adapter removes all of them
for each output of a job when the job starts (Snakemake never runs two jobs with the same output).
Outputs get the permissions the umask gives any file the user writes (``0o666 & ~umask``, folders
``0o777 & ~umask``), not the 0600/0700 of ``mkstemp``/``mkdtemp``.

    >>> rows = [make_row("tiny", "p0", "What is 1+1?", "What is 1+1? Put ...", "2", 0, "train")]
    >>> write_parquet(pd.DataFrame(rows), "results/x.parquet")
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from opd.errors import DataError

VERL_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


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


#: Marks a writer's temporary sibling: ``.<name>.tmp-<host>-<pid>-<random><suffix>``.
TMP_MARK = ".tmp-"
_SUFFIX = r"(?:\.[A-Za-z0-9]{1,16})?"


def _host() -> str:
    """This machine's short host name, restricted to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname().split(".")[0])[:32] or "host"


def temporary_prefix(path: str | os.PathLike) -> str:
    """The name prefix of this process's temporaries for ``path`` (mkstemp/mkdtemp add the rest)."""
    return f".{Path(path).name}{TMP_MARK}{_host()}-{os.getpid()}-"


def _stale_match(path: Path):
    """A matcher of the temporaries' names for ``path``, and of nothing else."""
    return re.compile(rf"^\.{re.escape(path.name)}{re.escape(TMP_MARK)}(?P<host>[A-Za-z0-9_-]+)-"
                      rf"(?P<pid>\d+)-[a-z0-9_]+{_SUFFIX}$").match


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie, killed but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(path: str | os.PathLike, keep_live: bool = False) -> list[Path]:
    """Remove the temporaries (files or folders) that writers of ``path`` left beside it.

    Returns the removed paths. With ``keep_live`` (each writer calls it so before writing), a
    temporary of a process still running on this host is kept, and those of other hosts go, since
    Snakemake never runs two jobs with the same output; without it, every one goes, which is what
    the stage adapter does for a job's outputs when the job starts.
    Only names of the exact form ``.<name>.tmp-<host>-<pid>-<random>[.ext]`` are touched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    match, host, removed = _stale_match(path), _host(), []
    for entry in path.parent.iterdir():
        m = match(entry.name)
        if m is None or (keep_live and m["host"] == host and _alive(int(m["pid"]))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


_UMASK_FALLBACK: list[int] = []


def current_umask() -> int:
    """The process umask, read from ``/proc/self/status``: setting the umask to read it races
    other threads' file creation, so that is done only where ``/proc`` lacks it, once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    if not _UMASK_FALLBACK:
        old = os.umask(0o022)
        os.umask(old)
        _UMASK_FALLBACK.append(old)
    return _UMASK_FALLBACK[0]


def apply_output_mode(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the umask's modes.

    Files get ``0o666 & ~umask`` (``0o777 & ~umask`` if executable), folders ``0o777 & ~umask``,
    as any file the user writes; not the 0600/0700 of ``mkstemp``/``mkdtemp``, nor the 0600 that
    libraries and other tools can leave (``save_pretrained``'s ``model.safetensors`` is one), which
    group members of a shared ``results/`` could not read.
    """
    umask = current_umask()

    def fix(p: str) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        full = 0o777 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o666
        if stat.S_IMODE(st.st_mode) != full & ~umask:
            os.chmod(p, full & ~umask)

    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                fix(os.path.join(root, name))
    fix(os.fspath(path))


def new_temporary(path: str | os.PathLike, suffix: str = "", is_dir: bool = False) -> Path:
    """A fresh temporary sibling of ``path`` (its folder created), after removing stale ones."""
    path = Path(path)
    if suffix and not re.fullmatch(_SUFFIX, suffix):
        raise ValueError(f"temporary suffix {suffix!r}: expected a plain extension such as '.json'")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, keep_live=True)
    prefix = temporary_prefix(path)
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    ``suffix`` (an extension such as ``.parquet``) is for writers that pick a format by name. The
    file gets the umask's mode before the rename; a failure removes it, a kill leaves it for the
    next writer of ``path`` or the next job to remove (``remove_stale_temporaries``).
    """
    path = Path(path)
    tmp_path = new_temporary(path, suffix)
    try:
        yield tmp_path
        apply_output_mode(tmp_path)
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
