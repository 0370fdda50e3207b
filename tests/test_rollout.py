"""Rejection filters on crafted texts, and rollout resume after a kill of a real run."""
import json
import signal
import subprocess
import sys
import time


import pytest

from opd.grading.extract import answer_of
from opd.rollout import (REASONS, has_repeated_block, has_repeated_line, has_repeated_substring,
                         reject_reason, rollout_stats, run_rollout)

GOOD = "3 + 4 = 7. 7 - 2 = 5. The answer is \\boxed{5}."


def test_keeps_a_clean_answer():
    assert reject_reason(GOOD) is None


def test_no_box_is_rejected():
    assert reject_reason("3 + 4 = 7. The answer is 7.") == "no_boxed"


def test_a_box_that_never_closes_is_rejected():
    # issue 11.5: a box that never closes is no answer to the grader, so none to the filter
    assert reject_reason(r"so the answer is \boxed{12") == "no_boxed"
    assert reject_reason(r"first \boxed{3}, then \boxed{\frac{1}{2}") == "no_boxed"  # the last box counts
    assert reject_reason(r"so the answer is \boxed{}") == "no_boxed"  # empty: a format error


def test_an_fbox_answer_the_grader_accepts_is_kept():
    from opd.grading.verify import is_correct
    assert is_correct(r"Thus \fbox{5}.", "5")
    assert reject_reason(r"Thus \fbox{5}.") is None
    assert reject_reason(r"Thus \boxed {5}.") is None


# texts on which the grader's extraction decides; the filter must say the same whatever it says
EXTRACTION_CASES = [
    r"The answer is \boxed{7}.", r"The answer is \boxed 7", r"First \boxed{3}. Final: \boxed 5",
    r"so \boxed{12", r"\boxed{}", r"\fbox{x^2}", r"\boxed{\frac{1}{2}}", r"$\boxed{\$}$",
    r"\boxed{ . }", "no box at all", r"\boxed{1} then \boxed{",
]


@pytest.mark.parametrize("text", EXTRACTION_CASES)
def test_filter_and_grader_agree_on_what_an_answer_is(text):
    assert (reject_reason(text) == "no_boxed") == (answer_of(text)[1] is None)


def test_a_response_cut_at_the_token_budget_is_rejected():
    assert reject_reason(GOOD, finish_reason="length") == "truncated"
    assert reject_reason(GOOD, finish_reason="stop") is None
    assert reject_reason("3 + 4 = 7. 7 -", finish_reason="length") == "truncated"
    assert REASONS[0] == "truncated"  # the cause is named, not the missing box it leads to


def test_repeated_line_threshold():
    line = "Let me check the sum again."  # 27 characters
    four = "\n".join([line] * 4) + "\n\\boxed{1}"
    five = "\n".join([line] * 5) + "\n\\boxed{1}"
    assert not has_repeated_line(four) and has_repeated_line(five)
    assert reject_reason(five) == "repeated_line"
    short = "\n".join(["ok"] * 50) + "\n\\boxed{1}"  # short lines do not count
    assert not has_repeated_line(short)


def test_repeated_substring_threshold():
    chunk = "".join(chr(65 + (i * 7) % 26) for i in range(100))
    twice = f"{chunk} x {chunk} y \\boxed{{1}}"
    thrice = f"{chunk} x {chunk} y {chunk} \\boxed{{1}}"
    assert not has_repeated_substring(twice)
    assert has_repeated_substring(thrice)
    assert reject_reason(thrice) == "repeated_substring"


def test_repeated_block_in_a_row():
    block = "".join(chr(97 + (i * 5) % 26) for i in range(50))
    filler = "".join(chr(48 + (i * 3) % 10) + chr(65 + (i * 11) % 26) for i in range(300))
    in_a_row = filler + block * 3 + "\\boxed{2}"
    spread = filler[:200] + block + filler[200:400] + block + filler[400:] + block + "\\boxed{2}"
    assert has_repeated_block(in_a_row)
    assert not has_repeated_block(block * 2 + filler)
    assert not has_repeated_block(spread)
    assert reject_reason(in_a_row) == "repeated_block"
    # a short text with the same run is not checked for blocks ("for long texts")
    assert reject_reason(block * 3 + "\\boxed{2}", long_text_chars=500) is None


def test_retries_until_accepted_and_counts_reasons(tmp_path):
    calls = []

    def gen(indices, attempt):
        calls.append((list(indices), attempt))
        # prompt 0 fails twice then succeeds; prompt 1 always fails; prompt 2 always succeeds
        out = []
        for i in indices:
            ok = (i == 0 and attempt >= 3) or i == 2
            out.append({"response": GOOD if ok else "no box here", "n_tokens": 5,
                        "finish_reason": "stop"})
        return out

    records, stats = run_rollout(gen, n_prompts=3, n=1, max_attempts=3, checkpoint=tmp_path / "c.jsonl")
    assert [r["accepted"] for r in records] == [True, False, True]
    assert [r["attempts"] for r in records] == [3, 3, 1]
    assert stats["rejections_by_reason"]["no_boxed"] == 2 + 3
    assert stats["rejections_by_reason"]["truncated"] == 0
    assert stats["accepted"] == 2 and stats["failed_slots"] == 1


def test_truncated_responses_are_retried_and_counted(tmp_path):
    """The generator row's finish_reason decides: a complete-looking answer cut at the budget is
    not accepted; stats.json's rejections_by_reason counts it under ``truncated``."""

    def gen(indices, attempt):
        # prompt 0 is cut on its first attempt, prompt 1 on every attempt
        return [{"response": GOOD, "n_tokens": 64,
                 "finish_reason": "length" if (i == 1 or attempt == 1) else "stop"} for i in indices]

    records, stats = run_rollout(gen, n_prompts=2, n=1, max_attempts=2, checkpoint=tmp_path / "c.jsonl")
    assert [r["accepted"] for r in records] == [True, False]
    assert [r["rejections"] for r in records] == [["truncated"], ["truncated", "truncated"]]
    assert records[0]["finish_reason"] == "stop"
    assert stats["rejections_by_reason"] == {"truncated": 3, "no_boxed": 0, "repeated_line": 0,
                                             "repeated_substring": 0, "repeated_block": 0}
    assert rollout_stats(records)["rejections_by_reason"]["truncated"] == 3


SCRIPT = """
import sys, time
from opd.rollout import run_rollout
def gen(indices, attempt):
    time.sleep(0.2)
    return [{"response": f"p{i} \\\\boxed{{{i}}}", "n_tokens": 3, "finish_reason": "stop"} for i in indices]
run_rollout(gen, n_prompts=int(sys.argv[2]), n=2, max_attempts=2, checkpoint=sys.argv[1], batch_slots=4)
print("finished")
"""


def test_resume_after_kill_has_no_duplicates_or_losses(tmp_path):
    ckpt = tmp_path / "rollout.progress.jsonl"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), "40"], cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline:
        if ckpt.exists() and len(ckpt.read_text().splitlines()) >= 13:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = [json.loads(l) for l in ckpt.read_text().splitlines() if l.strip()][1:]
    assert 12 <= len(partial) < 80, "the kill should land mid-run"
    # a torn line, as a kill during a write would leave
    with open(ckpt, "a") as fh:
        fh.write('{"prompt_index": 39, "sampl')
    out = subprocess.run([sys.executable, str(script), str(ckpt), "40"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(l) for l in ckpt.read_text().splitlines()][1:]
    slots = [(r["prompt_index"], r["sample_idx"]) for r in rows]
    assert len(slots) == len(set(slots)) == 80
    assert set(slots) == {(p, s) for p in range(40) for s in range(2)}
    # the slots finished before the kill were kept, not regenerated
    before = {(r["prompt_index"], r["sample_idx"]): r for r in partial}
    after = {(r["prompt_index"], r["sample_idx"]): r for r in rows}
    assert all(after[k] == v for k, v in before.items())


def test_stale_checkpoint_is_discarded(tmp_path):
    ckpt = tmp_path / "c.jsonl"

    def gen(indices, attempt):
        return [{"response": GOOD, "n_tokens": 5, "finish_reason": "stop"} for _ in indices]

    def bad(indices, attempt):
        return [{"response": "nothing", "n_tokens": 5, "finish_reason": "stop"} for _ in indices]

    run_rollout(bad, n_prompts=2, n=1, max_attempts=1, checkpoint=ckpt, fingerprint="old")
    ckpt.write_text(ckpt.read_text())  # a leftover checkpoint from other inputs
    records, stats = run_rollout(gen, n_prompts=2, n=1, max_attempts=1, checkpoint=ckpt,
                                 fingerprint="new")
    assert stats["resumed_slots"] == 0 and all(r["accepted"] for r in records)
    records, stats = run_rollout(bad, n_prompts=2, n=1, max_attempts=1, checkpoint=ckpt,
                                 fingerprint="new")
    assert stats["resumed_slots"] == 2 and all(r["accepted"] for r in records)


def test_rejection_thresholds_come_from_the_config():
    """``rollout.rejection``: the authors check the block rule only above 5,000 characters."""
    from opd.rollout import Rejection

    block = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx"  # 50 distinct characters
    filler = " ".join(f"step {i} gives {i * 7919 % 1000}." for i in range(40))  # no repeats, 600+ chars
    text = filler + " " + block * 3 + " \\boxed{2}"
    assert reject_reason(text) == "repeated_block"                      # tiny-world default: 500
    assert reject_reason(text, rules=Rejection(block_min_text_chars=5000)) is None
    assert reject_reason("same line twenty chars\n" * 3 + "\\boxed{1}",
                         rules=Rejection(line_min_count=3)) == "repeated_line"
    assert reject_reason("same line twenty chars\n" * 3 + "\\boxed{1}") is None
    with pytest.raises(ValueError, match="rollout.rejection"):
        Rejection.from_dict({"block_min_chars": 5})
