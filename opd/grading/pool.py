"""A bounded pool of math-verify worker processes.

Each item gets ``timeout_s`` seconds: a SIGALRM timer inside the worker stops it softly
(verdict False, ``timed_out``), and if the worker does not answer within ``timeout_s +
KILL_GRACE_S`` (stuck in C code, swallowed signal) the parent kills it and starts a fresh one.
Workers are fresh ``python -c`` interpreters talking over pipes (safe from a process that holds
CUDA or threads, no ``__main__`` guard needed), capped at ``WORKER_MEMORY_BYTES`` of address
space. ``shared_verdict`` keeps one lazily started worker per process for ``is_correct``;
``start_shared()`` starts it ahead of time.

    with GraderPool(workers=2, timeout_s=5.0) as pool:
        pool.run([("1/2", "0.5")])         # -> [(True, False)]
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import wait as _wait_conns
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_TIMEOUT_S = 5.0      # per-item limit for math-verify (soft, inside the worker)
KILL_GRACE_S = 2.0           # extra wall time before the parent kills a stuck worker
STARTUP_TIMEOUT_S = 120.0    # a worker must import math-verify within this
WORKER_MEMORY_BYTES = 4 << 30

# --------------------------------------------------------------------------- worker side


class _ItemTimeout(BaseException):
    """Raised by SIGALRM inside a worker; a BaseException so math-verify cannot swallow it."""


def _on_alarm(signum, frame):
    raise _ItemTimeout()


@functools.lru_cache(maxsize=4096)
def _parse_gold(gt: str):
    from math_verify import parse
    return parse("\\boxed{" + gt + "}", parsing_timeout=None)


def _mv_equal(answer: str, gt: str) -> bool:
    """math-verify's verdict, with two corrections: numbers must also agree at their own scale
    (``opd.grading.numeric``, installed on first call), and a relation compares with a set on
    either side (``0 < x < 12.5`` vs ``(0, 12.5)``, not only the gold one)."""
    from math_verify import parse, verify
    from opd.grading.numeric import install
    install()
    pred = parse("\\boxed{" + answer + "}", parsing_timeout=None)
    return bool(verify(_parse_gold(gt), pred, timeout_seconds=None,
                       allow_set_relation_comp=True))


def _timed_equal(answer: str, gt: str, timeout_s: float) -> tuple[bool, bool]:
    """(correct, timed_out) with a soft SIGALRM limit; call only in a main thread."""
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return _mv_equal(answer, gt), False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _ItemTimeout:
        return False, True
    except Exception:  # parse errors, MemoryError, RecursionError: not equivalent
        return False, False


def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("<I", len(data)) + data)
    while view:  # unbuffered pipes may take a large frame in several writes
        view = view[f.write(view):]


def _read_exact(f, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            raise EOFError("grading worker pipe closed")
        buf += chunk
    return buf


def _recv(f):
    (n,) = struct.unpack("<I", _read_exact(f, 4))
    return pickle.loads(_read_exact(f, n))


def _serve(memory_bytes: int) -> None:
    """Worker entry point (``python -c``): frames ``(key, answer, gt, timeout_s)`` on stdin,
    ``(key, correct, timed_out)`` on stdout; ``None`` or EOF stops it."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    try:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, hard))
    except (ImportError, ValueError, OSError):
        pass
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    import warnings
    warnings.simplefilter("ignore")
    from opd.grading.numeric import install
    install()  # here, not only in _mv_equal: an unsupported math-verify must fail loudly
    _timed_equal("\\frac{1}{2}", "0.5", STARTUP_TIMEOUT_S)  # imports sympy, builds grammars
    try:
        _send(proto_out, ("ready", os.getpid()))
        while True:
            msg = _recv(proto_in)
            if msg is None:
                return
            key, answer, gt, timeout_s = msg
            _send(proto_out, (key, *_timed_equal(answer, gt, timeout_s)))
    except (EOFError, BrokenPipeError):
        return


# --------------------------------------------------------------------------- pool

_WORKER_CODE = "import sys; from opd.grading.pool import _serve; _serve(int(sys.argv[1]))"


class _Worker:
    """One ``python -c`` worker process. A fresh interpreter (not fork, not multiprocessing
    spawn) so the caller's threads, CUDA state and unguarded ``__main__`` never matter."""

    def __init__(self, memory_bytes: int):
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE, str(memory_bytes)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0, env=env, close_fds=True)
        self.ready = False
        self.job: int | None = None
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S

    @property
    def waiting(self) -> bool:
        return not self.ready or self.job is not None

    def kill(self) -> None:
        for action in (self.proc.kill, lambda: self.proc.wait(timeout=5),
                       self.proc.stdin.close, self.proc.stdout.close):
            try:
                action()
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass


class GraderPool:
    """Worker processes running math-verify with a hard per-item wall-clock limit.

    ``run(jobs)`` takes ``(answer, ground_truth)`` pairs (already extracted and unboxed) and
    returns ``(correct, timed_out)`` per job. A worker that overruns ``timeout_s +
    KILL_GRACE_S`` or dies is killed and replaced; its item counts as wrong and timed out.
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_bytes: int = WORKER_MEMORY_BYTES):
        self.timeout_s = float(timeout_s)
        self.memory_bytes = memory_bytes
        self.restarts = 0
        self._workers = [_Worker(memory_bytes) for _ in range(max(1, int(workers)))]
        self._start_failures = 0

    def __enter__(self) -> "GraderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                _send(w.proc.stdin, None)
            except (OSError, ValueError):
                pass
        for w in self._workers:
            try:
                w.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            w.kill()
        self._workers = []

    def _replace(self, i: int) -> None:
        w = self._workers[i]
        if not w.ready:
            self._start_failures += 1
            if self._start_failures > 3:
                raise RuntimeError("grading worker failed to start 4 times; "
                                   "is math-verify importable in a fresh interpreter?")
        w.kill()
        self.restarts += 1
        self._workers[i] = _Worker(self.memory_bytes)

    def run(self, jobs: Sequence[tuple[str, str]],
            on_result: Callable[[int], None] | None = None) -> list[tuple[bool, bool]]:
        results: list[tuple[bool, bool] | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))

        def finish(j: int, verdict: tuple[bool, bool]) -> None:
            results[j] = verdict
            if on_result is not None:
                on_result(j)

        def fail(i: int) -> None:
            if self._workers[i].job is not None:
                finish(self._workers[i].job, (False, True))
            self._replace(i)

        while pending or any(w.job is not None for w in self._workers):
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if w.ready and w.job is None and pending:
                    j = pending.popleft()
                    try:
                        _send(w.proc.stdin, (j, jobs[j][0], jobs[j][1], self.timeout_s))
                    except (OSError, ValueError):  # died while idle: retry on a new worker
                        pending.appendleft(j)
                        self._replace(i)
                        continue
                    w.job, w.deadline = j, now + self.timeout_s + KILL_GRACE_S
            busy = [w for w in self._workers if w.waiting]
            if not busy:
                continue
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            readable = _wait_conns([w.proc.stdout for w in busy], timeout=wait_s)
            for i, w in enumerate(self._workers):
                if w.proc.stdout not in readable:
                    continue
                try:
                    msg = _recv(w.proc.stdout)
                except (EOFError, OSError, pickle.UnpicklingError):
                    fail(i)
                    continue
                if msg[0] == "ready":
                    w.ready, self._start_failures = True, 0
                else:
                    w.job = None
                    finish(msg[0], (bool(msg[1]), bool(msg[2])))
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if w.waiting and now > w.deadline:
                    fail(i)
        return results  # type: ignore[return-value]

# --------------------------------------------------------------------------- entry points

_shared_pool: GraderPool | None = None
_shared_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _shared_pool, _shared_lock
    _shared_pool, _shared_lock = None, threading.Lock()  # the parent's worker is not ours


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _close_shared() -> None:
    if _shared_pool is not None:
        _shared_pool.close()


atexit.register(_close_shared)


@functools.lru_cache(maxsize=65536)
def shared_verdict(answer: str, gt: str) -> bool:
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = GraderPool(workers=1, timeout_s=DEFAULT_TIMEOUT_S)
        return _shared_pool.run([(answer, gt)])[0][0]


def start_shared() -> None:
    """Start ``shared_verdict``'s worker now, without waiting for it.

    The worker imports math-verify (about half a second) in the background, so a trainer that
    calls this when it starts does not stall in the middle of its first step. Idempotent.
    """
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = GraderPool(workers=1, timeout_s=DEFAULT_TIMEOUT_S)
