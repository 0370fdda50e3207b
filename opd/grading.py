r"""Grade model responses with the paper's protocol: last ``\boxed{}`` + math-verify.

Protocol, per response:

1. Extract the content of the LAST box (``last_boxed``). A box is ``\boxed{...}`` or
   ``\fbox{...}``, with optional whitespace before the brace (``\boxed {5}``); nested braces
   and escaped braces (``\{``) are handled. Only the last box counts: if its braces never
   close (a truncated response), there is no answer, even when an earlier box is complete.
   A response with no box, or with an empty one, is a *format error* and is wrong.
2. Ground truths stored boxed (``\boxed{204}``) are unboxed (``unbox``); so is a nested box in
   the answer (``\boxed{\boxed{5}}``). Both then lose ``$``, thin spaces (``\,`` ``\!`` ``\;``
   ``\:``, so ``1\,000`` is 1000) and one trailing period (``\boxed{5.}``), two spellings that
   math-verify alone would reject.
3. Fast path, in the calling process: after a spelling-only normalisation (whitespace except
   between digits, ``\left``/``\right``, ``\dfrac``/``\tfrac``), equal strings are
   correct; two plain numbers are compared exactly (equal -> correct; two different integers
   -> wrong). An answer longer than ``MAX_ANSWER_CHARS`` (or twice the ground truth), or with
   brackets nested deeper than ``MAX_NESTING``, is wrong without parsing.
   Everything else goes to step 4. The fast path only decides what math-verify would decide
   the same way, so it changes speed, not verdicts.
4. math-verify: ``verify(parse(r"\boxed{gt}"), parse(r"\boxed{answer}"))`` in a worker process
   (``GraderPool``). Each item gets ``timeout_s`` seconds: a SIGALRM timer inside the worker
   stops it softly (verdict False, ``timed_out``), and if the worker does not answer within
   ``timeout_s + KILL_GRACE_S`` (stuck in C code, swallowed signal) the parent kills it and
   starts a fresh one. Workers are fresh ``python -c`` interpreters talking over pipes (safe
   from a process that holds CUDA or threads, no ``__main__`` guard needed) and are capped
   at ``WORKER_MEMORY_BYTES`` of address space.

Usage::

    is_correct(response, "\\boxed{204}")           # one item; never raises; bounded time
    verdicts = grade(responses, ground_truths)      # list of dicts, process pool, tqdm bar
    stats = summarize(frame)                        # avg@n, pass@n, pass@k, lengths, ...

``is_correct`` sends non-trivial items to one shared, lazily started worker and caches
verdicts, so a training loop can call it per rollout. ``model_verify`` optionally asks a
judge model about rule-failed items (off unless called).
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from decimal import Decimal, InvalidOperation
from multiprocessing.connection import wait as _wait_conns
from pathlib import Path
from typing import Callable, Sequence


log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0      # per-item limit for math-verify (soft, inside the worker)
KILL_GRACE_S = 2.0           # extra wall time before the parent kills a stuck worker
STARTUP_TIMEOUT_S = 120.0    # a worker must import math-verify within this
MAX_ANSWER_CHARS = 1000      # longer extracted answers are wrong without parsing
MAX_NESTING = 30             # so are answers with brackets nested deeper than this
WORKER_MEMORY_BYTES = 4 << 30

# --------------------------------------------------------------------------- extraction

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)


def _closing_brace(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` matching the ``{`` at ``open_idx``; None when it never closes."""
    depth = 0
    for m in _BRACE_TOKEN.finditer(text, open_idx):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def last_boxed(text: str) -> str | None:
    r"""Stripped content of the last ``\boxed{...}``/``\fbox{...}`` in ``text``.

    None when there is no box or the last one is unbalanced; ``""`` for an empty box.
    """
    if not isinstance(text, str):
        return None
    last = None
    for last in _BOX_START.finditer(text):
        pass
    if last is None:
        return None
    end = _closing_brace(text, last.end() - 1)
    return None if end is None else text[last.end():end].strip()


def unbox(ground_truth: str) -> str:
    r"""``\boxed{204}`` -> ``204``: strip whitespace, ``$`` and boxes wrapping the whole string."""
    s = str(ground_truth).strip()
    while True:
        s = s.strip().strip("$").strip()
        m = _BOX_START.match(s)
        end = _closing_brace(s, m.end() - 1) if m else None
        if end is None or s[end + 1:].strip(" .$"):
            return s
        s = s[m.end():end]


_THIN_SPACE = re.compile(r"(?<!\\)\\[,;:!]")


def _clean(s: str) -> str:
    r"""Drop ``$``, thin spaces (``\,`` ``\!`` ``\;`` ``\:``) and one trailing period."""
    s = _THIN_SPACE.sub("", s.strip().strip("$").strip())
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s


def _answer(response: str) -> tuple[str | None, str | None]:
    """(raw extracted box content, cleaned answer or None for a format error)."""
    extracted = last_boxed(response)
    if extracted is None:
        return None, None
    return extracted, (_clean(unbox(extracted)) or None)


def _reference(ground_truth: str) -> str:
    return _clean(unbox(ground_truth))


# --------------------------------------------------------------------------- fast path

_CMD_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_INTEGER = re.compile(r"[+-]?\d+")
_BRACKET = re.compile(r"[{(\[]|[})\]]")


def _nesting(s: str) -> int:
    depth = deepest = 0
    for m in _BRACKET.finditer(s):
        depth += 1 if m.group() in "{([" else -1
        deepest = max(deepest, depth)
    return deepest


def _canon(s: str) -> str:
    """Spelling-only normalisation for the string comparison of the fast path."""
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = _CMD_SPACE.sub(r"\1{}", s)  # keep "\cot x" distinct from "\cotx"
    s = re.sub(r"(\d)\s+(?=\d)", "\\1\x00", s)  # math-verify reads "1 000" as 1*000
    return re.sub(r"\s+", "", s).replace("\x00", " ")


def _fast_verdict(answer: str, gt: str) -> bool | None:
    """True/False when decidable without math-verify, else None."""
    if len(answer) > max(MAX_ANSWER_CHARS, 2 * len(gt)) or _nesting(answer) > MAX_NESTING:
        return False
    a, g = _canon(answer), _canon(gt)
    if a and a == g:
        return True
    if _NUMBER.fullmatch(a) and _NUMBER.fullmatch(g):
        try:
            if Decimal(a) == Decimal(g):
                return True
        except InvalidOperation:
            return None
        if _INTEGER.fullmatch(a) and _INTEGER.fullmatch(g):
            return False
    return None


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
    from math_verify import parse, verify
    pred = parse("\\boxed{" + answer + "}", parsing_timeout=None)
    return bool(verify(_parse_gold(gt), pred, timeout_seconds=None))


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

_WORKER_CODE = "import sys; from opd.grading import _serve; _serve(int(sys.argv[1]))"


class _Worker:
    """One ``python -c`` worker process. A fresh interpreter (not fork, not multiprocessing
    spawn) so the caller's threads, CUDA state and unguarded ``__main__`` never matter."""

    def __init__(self, memory_bytes: int):
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
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
def _pool_verdict(answer: str, gt: str) -> bool:
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = GraderPool(workers=1, timeout_s=DEFAULT_TIMEOUT_S)
        return _shared_pool.run([(answer, gt)])[0][0]


def is_correct(response: str, ground_truth: str) -> bool:
    """True when the last box of ``response`` is equivalent to ``ground_truth``.

    Never raises: anything unexpected (including a failed worker) logs a warning and
    counts as wrong. Takes at most about ``DEFAULT_TIMEOUT_S + KILL_GRACE_S`` seconds.
    """
    try:
        _, answer = _answer(response)
        if answer is None:
            return False
        gt = _reference(ground_truth)
        fast = _fast_verdict(answer, gt)
        return fast if fast is not None else _pool_verdict(answer, gt)
    except Exception as e:  # noqa: BLE001 - the reward must not crash training
        log.warning("is_correct failed, counting as wrong: %r", e)
        return False


def grade(responses: list[str], ground_truths: list[str], workers: int = 2,
          timeout_s: float = DEFAULT_TIMEOUT_S, progress: bool = True) -> list[dict]:
    """Verdict per response: ``{"correct", "format_error", "extracted", "timed_out"}``.

    Trivial items are decided in this process; distinct remaining (answer, ground truth)
    pairs go once each to a ``GraderPool`` of ``workers`` processes.
    """
    from tqdm import tqdm

    if len(responses) != len(ground_truths):
        raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
    out: list[dict] = []
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (response, gt) in enumerate(zip(responses, ground_truths)):
        extracted, answer = _answer(response)
        verdict = {"correct": False, "format_error": answer is None,
                   "extracted": extracted, "timed_out": False}
        out.append(verdict)
        if answer is None:
            continue
        gt = _reference(gt)
        fast = _fast_verdict(answer, gt)
        if fast is None:
            todo.setdefault((answer, gt), []).append(i)
        else:
            verdict["correct"] = fast
    keys = list(todo)
    with tqdm(total=len(out), disable=not progress, file=sys.stderr, desc="grading",
              unit="resp") as bar:
        bar.update(len(out) - sum(len(v) for v in todo.values()))
        if keys:
            with GraderPool(workers=min(workers, len(keys)), timeout_s=timeout_s) as pool:
                verdicts = pool.run(keys, on_result=lambda j: bar.update(len(todo[keys[j]])))
            for key, (ok, timed_out) in zip(keys, verdicts):
                for i in todo[key]:
                    out[i]["correct"], out[i]["timed_out"] = ok, timed_out
    return out


# Re-exported so callers can keep using opd.grading as the one grading entry point.
from opd.metrics import SUMMARY_COLUMNS, summarize  # noqa: E402,F401
from opd.verifier import judge_prompt, model_verify, parse_judge_answer  # noqa: E402,F401
