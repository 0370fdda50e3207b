"""The judge: a model re-checks answers that the rule-based grader (``verify``) failed.

``model_verify(items, judge_fn)`` asks ``judge_fn`` (any callable from prompts to replies, e.g.
a generation backend wrapped by ``opd.stages.evaluate.judge_with``) whether each rule-failed
answer that has a boxed answer is equivalent to the reference, and flips it to correct only on
an explicit YES. Off unless the config names a verifier (``grading.verifier``).

    verdicts = model_verify(items, judge_fn)   # items: grade() dicts + question, ground_truth
"""
from __future__ import annotations

import re
from typing import Callable


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def judge_prompt(question: str, reference: str, answer: str) -> str:
    """Prompt asking a judge model whether ``answer`` is equivalent to ``reference``."""
    return (
        "You are checking a student's final answer to a math problem against the reference "
        "answer.\n\n"
        f"Problem:\n{question}\n\n"
        f"Reference answer: {reference}\n"
        f"Student's final answer: {answer}\n\n"
        "Is the student's final answer mathematically equivalent to the reference answer "
        "(the same value, expression, set or interval, possibly written differently)? Do not "
        "solve the problem again; only compare the two answers. Answer YES or NO."
    )


def parse_judge_answer(text: str) -> bool | None:
    """YES -> True, NO -> False, neither -> None.

    Reasoning in ``<think>`` blocks is ignored; the first word decides when it is yes/no,
    otherwise the last standalone yes/no in the reply.
    """
    text = _THINK.sub(" ", str(text))
    if "</think>" in text.lower():
        text = text[text.lower().rindex("</think>") + len("</think>"):]
    words = re.sub(r"[^a-zA-Z ]", " ", text).split()
    if words and words[0].lower() in ("yes", "no"):
        return words[0].lower() == "yes"
    found = _YES_NO.findall(text)
    return found[-1].lower() == "yes" if found else None


def model_verify(items: list[dict], judge_fn: Callable[[list[str]], list[str]]) -> list[dict]:
    """Ask a judge about rule-failed items; flip them to correct only on a YES.

    ``items`` are verdict dicts (as from ``grade``) with ``question`` and ``ground_truth``
    added. Items that are correct already, or have no extracted answer, are not sent.
    Returns copies with ``rule_correct`` (the rule verdict) and ``judge_verdict``
    (True/False/None; None when not asked or unparseable) added.
    """
    from opd.grading.extract import unbox

    out = [dict(it, rule_correct=bool(it["correct"]), judge_verdict=None) for it in items]
    asked = [i for i, it in enumerate(out) if not it["correct"] and it.get("extracted")]
    prompts = [judge_prompt(out[i]["question"], unbox(out[i]["ground_truth"]),
                            out[i]["extracted"]) for i in asked]
    replies = judge_fn(prompts) if prompts else []
    if len(replies) != len(prompts):
        raise ValueError(f"judge_fn returned {len(replies)} replies for {len(prompts)} prompts")
    for i, reply in zip(asked, replies):
        out[i]["judge_verdict"] = parse_judge_answer(reply)
        out[i]["correct"] = out[i]["judge_verdict"] is True
    return out
