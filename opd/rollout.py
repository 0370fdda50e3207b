"""Teacher rollout with rejection sampling, streamed to a checkpoint so a killed job resumes.

Every (prompt, sample) slot is generated, checked by ``reject_reason`` and retried up to
``max_attempts`` times. A response is rejected when

- it was cut at the token budget (``finish_reason == "length"``, ``truncated``): SFT would
  append an end-of-sequence token at the cut and teach the student to stop mid-sentence;
- the grader finds no answer in it (``no_boxed``): ``opd.grading.extract.answer_of``, the
  grader's own extraction, gives no answer (no box, a last box that never closes, an empty
  box), so the filter and ``is_correct`` agree on what an answer is (``\\fbox{5}`` counts);

or it has (thresholds: ``Rejection``, config ``rollout.rejection``; defaults are the authors'
``scripts/infer/vllm_rollout.py`` except ``block_min_text_chars``, 5,000 there, 500 here so
that the tiny world's short texts are checked at all)

- a line of at least 20 characters repeated 5 or more times (``repeated_line``);
- a 100-character substring occurring 3 or more times (``repeated_substring``);
- in a long text (``block_min_text_chars`` characters or more), a 50-character block
  repeated 3 times in a row (``repeated_block``).

Each finished slot (accepted, or rejected on its last attempt) is appended as one JSON line to
the checkpoint file and flushed; the first line is a header with a fingerprint of the inputs and
the filter's version (``FILTER_VERSION``), so a checkpoint left by a run with another teacher,
prompt set, settings or rejection rules is discarded. A rerun reads the checkpoint, skips finished slots and never
writes a slot twice; only when all slots are done is the parquet written (atomically) and the
checkpoint removed. Sampling after a resume draws fresh random numbers, so a resumed run is a
valid but not bit-identical sample of an uninterrupted one.

    rows, stats = run_rollout(generate_fn, prompts, n=4, max_attempts=3, checkpoint=path)
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from opd.grading.extract import answer_of
from opd.io import atomic_path, read_jsonl
from opd.runlog import progress

FILTER_VERSION = 2  # raise when the rejection rules change: older checkpoints are then discarded
REASONS = ("truncated", "no_boxed", "repeated_line", "repeated_substring", "repeated_block")


@dataclass(frozen=True)
class Rejection:
    """Thresholds of the repetition filters (config ``rollout.rejection``; characters and counts)."""

    line_min_chars: int = 20
    line_min_count: int = 5
    substring_chars: int = 100
    substring_min_count: int = 3
    block_chars: int = 50
    block_repeats: int = 3
    block_min_text_chars: int = 500

    @classmethod
    def from_dict(cls, d: dict | None) -> "Rejection":
        from opd.options import from_options
        return from_options(cls, dict(d or {}), "rollout.rejection")


def has_repeated_line(text: str, min_chars: int = 20, min_count: int = 5) -> bool:
    """A line of at least ``min_chars`` characters (stripped) occurring ``min_count``+ times."""
    counts = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= min_chars)
    return any(c >= min_count for c in counts.values())


def has_repeated_substring(text: str, length: int = 100, min_count: int = 3) -> bool:
    """Some ``length``-character substring occurs ``min_count``+ times (overlaps count)."""
    if len(text) < length + min_count - 1:
        return False
    counts: Counter = Counter()
    for i in range(len(text) - length + 1):
        window = text[i:i + length]
        counts[window] += 1
        if counts[window] >= min_count:
            return True
    return False


def has_repeated_block(text: str, block: int = 50, repeats: int = 3) -> bool:
    """A ``block``-character block repeated ``repeats`` times in a row.

    ``text[i:i+block*repeats]`` is such a run exactly when ``text[j] == text[j+block]`` for the
    ``block*(repeats-1)`` consecutive positions ``j`` from ``i``; we look for that run of matches.
    """
    need = block * (repeats - 1)
    if len(text) < block * repeats:
        return False
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    eq = codes[:-block] == codes[block:]
    run = 0
    for v in eq:
        run = run + 1 if v else 0
        if run >= need:
            return True
    return False


def reject_reason(text: str, long_text_chars: int | None = None,
                  finish_reason: str | None = None, rules: Rejection = Rejection()) -> str | None:
    """The first rejection reason (in ``REASONS`` order) that applies, or ``None`` to keep it.

    ``text``: the decoded response; ``finish_reason``: the generator row's (``"stop"`` or
    ``"length"``; ``"length"`` -> ``truncated``). ``no_boxed`` exactly when the grader's
    ``answer_of(text)`` has no cleaned answer. ``rules``: the thresholds; ``long_text_chars``
    overrides ``rules.block_min_text_chars``.
    """
    if finish_reason == "length":
        return "truncated"
    if answer_of(text)[1] is None:
        return "no_boxed"
    if has_repeated_line(text, rules.line_min_chars, rules.line_min_count):
        return "repeated_line"
    if has_repeated_substring(text, rules.substring_chars, rules.substring_min_count):
        return "repeated_substring"
    min_chars = rules.block_min_text_chars if long_text_chars is None else long_text_chars
    if len(text) >= min_chars and has_repeated_block(text, rules.block_chars, rules.block_repeats):
        return "repeated_block"
    return None


GenerateFn = Callable[[list[int], int], list[dict]]
"""``generate_fn(prompt_indices, attempt) -> one dict per index`` with at least ``response``,
``n_tokens`` and ``finish_reason`` (one sample per listed index, in order)."""


def run_rollout(generate_fn: GenerateFn, n_prompts: int, n: int, max_attempts: int,
                checkpoint: str | Path, batch_slots: int = 256,
                rules: Rejection = Rejection(), fingerprint: str = "") -> tuple[list[dict], dict]:
    """Fill ``n_prompts * n`` slots with accepted responses where possible; see module doc.

    ``fingerprint`` identifies the inputs (model, prompts, settings); a checkpoint written under
    another fingerprint is stale and is discarded instead of resumed.
    """
    checkpoint = Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    header = {"fingerprint": fingerprint, "n_prompts": n_prompts, "n": n, "filter": FILTER_VERSION}
    lines = read_jsonl(checkpoint)
    if lines and lines[0] != header:
        print(f"discarding stale rollout checkpoint {checkpoint} (inputs changed)")
        lines = []
    done: dict[tuple[int, int], dict] = {}
    for rec in lines[1:]:
        done.setdefault((rec["prompt_index"], rec["sample_idx"]), rec)
    resumed = len(done)
    _rewrite(checkpoint, [header, *done.values()])  # fresh header; drops a torn last line
    pending = [(p, s) for p in range(n_prompts) for s in range(n) if (p, s) not in done]
    bar = progress(total=n_prompts * n, initial=len(done), desc="rollout slots")
    for start in range(0, len(pending), batch_slots):
        batch = pending[start:start + batch_slots]
        attempts_left = {slot: max_attempts for slot in batch}
        rejected: dict[tuple[int, int], list[str]] = {slot: [] for slot in batch}
        todo = list(batch)
        finished = []
        attempt = 0
        while todo:
            attempt += 1
            outs = generate_fn([p for p, _ in todo], attempt)
            retry = []
            for slot, out in zip(todo, outs):
                reason = reject_reason(out["response"], finish_reason=out["finish_reason"], rules=rules)
                attempts_left[slot] -= 1
                if reason is None or attempts_left[slot] == 0:
                    if reason is not None:
                        rejected[slot].append(reason)
                    finished.append({
                        "prompt_index": slot[0], "sample_idx": slot[1], "accepted": reason is None,
                        "attempts": max_attempts - attempts_left[slot],
                        "rejections": rejected[slot], "response": out["response"],
                        "n_tokens": int(out["n_tokens"]), "finish_reason": out["finish_reason"],
                    })
                else:
                    rejected[slot].append(reason)
                    retry.append(slot)
            todo = retry
        with open(checkpoint, "a") as fh:
            for rec in finished:
                fh.write(json.dumps(rec) + "\n")
                done[(rec["prompt_index"], rec["sample_idx"])] = rec
            fh.flush()
        bar.update(len(batch))
    bar.close()
    records = sorted(done.values(), key=lambda r: (r["prompt_index"], r["sample_idx"]))
    return records, rollout_stats(records, resumed)


def rollout_stats(records: list[dict], resumed: int = 0) -> dict:
    """Counts of slots, acceptances, attempts and rejections by reason."""
    by_reason = Counter(r for rec in records for r in rec["rejections"])
    return {
        "slots": len(records),
        "accepted": sum(r["accepted"] for r in records),
        "failed_slots": sum(not r["accepted"] for r in records),
        "generations": sum(r["attempts"] for r in records),
        "rejections_by_reason": {k: by_reason.get(k, 0) for k in REASONS},
        "resumed_slots": resumed,
    }


def _rewrite(path: Path, records) -> None:
    """Replace the checkpoint file atomically (a temporary sibling that ``opd.io`` cleans up)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
