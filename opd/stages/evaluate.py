"""Stages: evaluation generation (n samples per problem) and grading of the generations (rules/eval.smk)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd

from opd.generation import open_generator
from opd.generation.config import SamplingParams
from opd.generation.context import check_prompts_fit, configured_limit
from opd.io import flat_view, read_parquet, write_json, write_parquet

EVAL_COLUMNS = ("problem_id", "sample_idx", "prompt", "ground_truth", "response", "n_tokens",
                "finish_reason")


def eval_generate(*, model: str, benchmark: str, eval: dict, seed: int, generations: str,
                  subdir: str = "", backend: dict | None = None, stack: str | None = None) -> None:
    """Sample ``eval['n']`` responses per benchmark problem from the model in ``model/subdir``;
    one row per (problem, sample). ``backend``: the generation backend and its options.
    Raises ``ValueError`` before loading the model when a prompt plus ``eval.max_new_tokens``
    does not fit its context (``opd.generation.context``)."""
    from opd.generation.hf import load_tokenizer

    model_dir = os.path.join(model, subdir)
    problems = flat_view(read_parquet(benchmark), benchmark)
    check_prompts_fit(load_tokenizer(model_dir), list(problems["prompt"]), model_dir=model_dir,
                      max_new_tokens=eval["max_new_tokens"], dataset=str(benchmark),
                      budget_key="eval.max_new_tokens", enable_thinking=eval.get("enable_thinking"),
                      limit=configured_limit(backend))
    params = SamplingParams(n=eval["n"], temperature=eval["temperature"], top_p=eval["top_p"],
                            max_new_tokens=eval["max_new_tokens"], seed=seed,
                            batch_size=eval.get("batch_size", 64))
    with open_generator(model_dir, stack=stack, **(backend or {})) as gen:
        outs = gen.generate(list(problems["prompt"]), params, enable_thinking=eval.get("enable_thinking"),
                            desc=f"eval {Path(model_dir).name}")
    rows = [{"problem_id": problems["problem_id"][o["prompt_index"]], "sample_idx": o["sample_idx"],
             "prompt": problems["prompt"][o["prompt_index"]][-1]["content"],
             "ground_truth": problems["ground_truth"][o["prompt_index"]],
             "response": o["response"], "n_tokens": o["n_tokens"],
             "finish_reason": o["finish_reason"]} for o in outs]
    write_parquet(pd.DataFrame(rows, columns=list(EVAL_COLUMNS)), generations)


@contextlib.contextmanager
def judge_with(model_dir: str, max_new_tokens: int, backend: dict | None = None,
               stack: str | None = None):
    """A ``judge_fn`` for ``opd.grading.judge.model_verify``: greedy answers of a local model."""
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    with open_generator(model_dir, stack=stack, **(backend or {})) as gen:

        def judge_fn(prompts: list[str]) -> list[str]:
            outs = gen.generate([[{"role": "user", "content": p}] for p in prompts], params,
                                desc="verifier")
            return [o["response"] for o in outs]
        yield judge_fn


def grade(*, generations: str, grading: dict, summary: str, verdicts: str, model: str, bench: str,
          verifier: str | None = None, backend: dict | None = None, stack: str | None = None) -> None:
    """Grade every sample with the paper's protocol; write the summary and per-sample verdicts.

    With ``verifier`` (a model folder, config ``grading.verifier``), a model re-judges the
    rule-failed answers that have a boxed answer; its verdicts are kept next to the rule verdicts.
    """
    from opd.grading.metrics import summarize
    from opd.grading.judge import model_verify
    from opd.grading.verify import grade as grade_all

    df = read_parquet(generations, required=EVAL_COLUMNS)
    rows = grade_all(list(df["response"]), list(df["ground_truth"]),
                     workers=grading.get("workers", 2), timeout_s=grading.get("timeout_s", 5.0))
    if verifier:
        items = [dict(v, question=q, ground_truth=g)
                 for v, q, g in zip(rows, df["prompt"], df["ground_truth"])]
        with judge_with(verifier, grading.get("verifier_max_new_tokens", 32), backend, stack) as judge:
            rows = model_verify(items, judge)
    v = pd.DataFrame(rows)
    out = df[["problem_id", "sample_idx", "response", "n_tokens", "finish_reason"]].copy()
    cols = ["correct", "format_error", "extracted", "timed_out"]
    if verifier:
        cols += ["rule_correct", "judge_verdict"]
    for col in cols:
        out[col] = v[col]
    # one schema whatever the answers: a column of only missing extractions would be object
    out["extracted"] = v["extracted"].astype(object).astype("str")
    stats = summarize(out)
    stats.update({"model": model, "benchmark": bench})
    write_parquet(out, verdicts)
    write_json(stats, summary)
    print(f"{model} on {bench}: avg@n {stats['mean_score']:.3f}, pass@n {stats['best_score']:.3f}")
