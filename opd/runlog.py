"""Logging helpers shared by the stage scripts: log files, progress bars and metrics.jsonl.

``stage_logging(log_path)`` sends stdout, stderr (and so tqdm progress bars) of a stage to its
Snakemake log file. ``MetricsWriter`` appends one JSON line per training step and flushes it, so
a killed run keeps every finished step.

    with stage_logging(snakemake.log[0]):
        for step in progress(range(10), desc="train"):
            ...
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm


@contextlib.contextmanager
def stage_logging(log_path: str | os.PathLike | None):
    """Redirect stdout and stderr to ``log_path`` (appending) for the duration of a stage."""
    if not log_path:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as fh:
        fh.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} start\n")
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            try:
                yield
            except BaseException:
                import traceback
                traceback.print_exc(file=fh)
                raise
        fh.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} done\n")


def progress(iterable: Iterable | None = None, **kwargs):
    """A tqdm bar that writes to the current stderr (the stage log inside the workflow)."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("mininterval", 2.0)
    kwargs.setdefault("dynamic_ncols", False)
    kwargs.setdefault("ncols", 100)
    return tqdm(iterable, **kwargs)


class MetricsWriter:
    """Append-only ``metrics.jsonl``: one JSON object per call to ``log``."""

    def __init__(self, path: str | os.PathLike, fresh: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and self.path.exists():
            self.path.unlink()

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": int(step)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    return v


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the machine block of recorded benchmarks."""
    import platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
