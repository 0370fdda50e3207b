"""Logging helpers shared by the stage scripts: log files, progress bars and metrics.jsonl.

``stage_logging(log_path)`` sends stdout, stderr (and so tqdm progress bars) of a stage to its
Snakemake log file. ``MetricsWriter`` appends one JSON line per training step and flushes it, so
a killed run keeps every finished step; with ``tensorboard=True`` it also writes every numeric
key as a TensorBoard scalar (event files in ``<dir>/tensorboard/``), and with
``wandb={"mode": "offline"|"online", "project": ..., "entity": ...}`` it logs every step to
Weights & Biases (offline runs in ``<dir>/wandb/``, uploaded later with ``wandb sync``). Both
are the config's ``logging`` section, so a trainer builds its writer with
``MetricsWriter(path, **logging)``.

    with stage_logging(snakemake.log[0]):
        for step in progress(range(10), desc="train"):
            ...
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
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
    """Append-only ``metrics.jsonl``: one JSON object per call to ``log``, mirrored to the
    trackers that are switched on (``tensorboard``, ``wandb``; see the module doc).

    ``run_name`` names the W&B run (default: the folder's name); ``config`` is logged as the W&B
    run config. ``close()`` (also at interpreter exit) flushes and finishes the trackers.
    """

    def __init__(self, path: str | os.PathLike, fresh: bool = True, tensorboard: bool = False,
                 wandb: dict | None = None, run_name: str | None = None, config: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and self.path.exists():
            self.path.unlink()
        self._tb = self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            tb_dir = self.path.parent / "tensorboard"
            if fresh and tb_dir.exists():
                shutil.rmtree(tb_dir)
            self._tb = SummaryWriter(log_dir=str(tb_dir))
        if wandb:
            self._wandb = _wandb_run(wandb, self.path.parent, run_name or self.path.parent.name, config)
        if self._tb is not None or self._wandb is not None:
            atexit.register(self.close)

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": int(step)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        scalars = {k: float(v) for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, global_step=int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))

    def close(self) -> None:
        """Flush and close the TensorBoard writer; finish the W&B run (idempotent)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _wandb_run(options: dict, folder: Path, name: str, config: dict | None):
    """A W&B run logging into ``folder/wandb`` (``mode``: offline by default, or online)."""
    import wandb

    unknown = sorted(set(options) - {"mode", "project", "entity"})
    if unknown:
        raise ValueError(f"logging.wandb: unknown key(s) {unknown}; valid: entity, mode, project")
    mode = options.get("mode", "offline")
    if mode not in ("offline", "online"):
        raise ValueError(f"logging.wandb.mode must be offline or online, got {mode!r}")
    return wandb.init(project=options.get("project", "opd"), entity=options.get("entity"), name=name,
                      dir=str(folder), mode=mode, config=config, reinit="create_new",
                      settings=wandb.Settings(console="off", silent=True))


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
