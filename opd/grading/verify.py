r"""Grade model responses with the paper's protocol: last ``\boxed{}`` + math-verify.

Per response: extract the last box, braced or not (``opd.grading.extract``); no box, or an
empty one, is a format error. A fast path in this process decides what the workers would decide
the same way (equal spellings; two plain decimals, compared exactly); everything else goes to
math-verify in a bounded worker (``opd.grading.pool``), where numbers must also agree at their
own scale (``opd.grading.numeric``: ``0.0000012`` is not ``0.000001``) and a relation matches
an interval on either side (``0 < x < 12.5`` vs ``(0, 12.5)``). An answer longer than
``MAX_ANSWER_CHARS`` (or twice the ground truth), or nested deeper than ``MAX_NESTING``, is wrong
without parsing.

    is_correct(response, "\\boxed{204}")           # one item; never raises; bounded time
    verdicts = grade(responses, ground_truths)      # list of dicts, process pool, tqdm bar
"""
from __future__ import annotations

import logging
import re
import sys
from decimal import Decimal, InvalidOperation

from opd.grading.extract import answer_of, reference_of
from opd.grading.pool import DEFAULT_TIMEOUT_S, GraderPool, shared_verdict

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1000      # longer extracted answers are wrong without parsing
MAX_NESTING = 30             # so are answers with brackets nested deeper than this

_CMD_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
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
        try:  # two plain decimals: exactly equal or not (as opd.grading.numeric decides)
            return Decimal(a) == Decimal(g)
        except InvalidOperation:
            return None
    return None


def is_correct(response: str, ground_truth: str) -> bool:
    """True when the last box of ``response`` is equivalent to ``ground_truth``.

    Never raises: anything unexpected (including a failed worker) logs a warning and
    counts as wrong. Takes at most about ``DEFAULT_TIMEOUT_S + KILL_GRACE_S`` seconds.
    """
    try:
        _, answer = answer_of(response)
        if answer is None:
            return False
        gt = reference_of(ground_truth)
        fast = _fast_verdict(answer, gt)
        return fast if fast is not None else shared_verdict(answer, gt)
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
        extracted, answer = answer_of(response)
        verdict = {"correct": False, "format_error": answer is None,
                   "extracted": extracted, "timed_out": False}
        out.append(verdict)
        if answer is None:
            continue
        gt = reference_of(gt)
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
