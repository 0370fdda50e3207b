"""Stages: evaluation generation (n samples per problem) and grading of the generations."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import torch

from opd.data import flat_view, read_parquet, write_json, write_parquet
from opd.generation import SamplingParams, open_generator

EVAL_COLUMNS = ("problem_id", "sample_idx", "prompt", "ground_truth", "response", "n_tokens",
                "finish_reason")


def eval_generate(model_dir: str, benchmark_path: str, cfg: dict, seed: int, out_path: str,
                  threads: int = 1, generation: dict | None = None, stack: str | None = None) -> None:
    """Sample ``cfg['n']`` responses per benchmark problem; one row per (problem, sample).

    ``generation``/``stack`` choose the backend as in ``opd.stages.rollout.teacher_rollout``.
    """
    torch.set_num_threads(threads)
    problems = flat_view(read_parquet(benchmark_path), benchmark_path)
    params = SamplingParams(n=cfg["n"], temperature=cfg["temperature"], top_p=cfg["top_p"],
                            max_new_tokens=cfg["max_new_tokens"], seed=seed,
                            batch_size=cfg.get("batch_size", 64))
    with open_generator(model_dir, stack=stack, **(generation or {})) as gen:
        outs = gen.generate(list(problems["prompt"]), params, enable_thinking=cfg.get("enable_thinking"),
                            desc=f"eval {Path(model_dir).name}")
    rows = [{"problem_id": problems["problem_id"][o["prompt_index"]], "sample_idx": o["sample_idx"],
             "prompt": problems["prompt"][o["prompt_index"]][-1]["content"],
             "ground_truth": problems["ground_truth"][o["prompt_index"]],
             "response": o["response"], "n_tokens": o["n_tokens"],
             "finish_reason": o["finish_reason"]} for o in outs]
    write_parquet(pd.DataFrame(rows, columns=list(EVAL_COLUMNS)), out_path)


@contextlib.contextmanager
def judge_with(model_dir: str, max_new_tokens: int, generation: dict | None = None,
               stack: str | None = None):
    """A ``judge_fn`` for ``opd.verifier.model_verify``: greedy answers of a local model."""
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    with open_generator(model_dir, stack=stack, **(generation or {})) as gen:

        def judge_fn(prompts: list[str]) -> list[str]:
            outs = gen.generate([[{"role": "user", "content": p}] for p in prompts], params,
                                desc="verifier")
            return [o["response"] for o in outs]
        yield judge_fn


def grade(generations_path: str, cfg: dict, summary_path: str, verdicts_path: str,
          model: str, benchmark: str, verifier_dir: str | None = None,
          generation: dict | None = None, stack: str | None = None) -> None:
    """Grade every sample with the paper's protocol; write the summary and per-sample verdicts.

    With ``verifier_dir`` (config ``grading.verifier``), a model re-judges the rule-failed
    answers that have a boxed answer; its verdicts are kept next to the rule verdicts.
    """
    from opd.grading import grade as grade_all
    from opd.metrics import summarize
    from opd.verifier import model_verify

    df = read_parquet(generations_path, required=EVAL_COLUMNS)
    verdicts = grade_all(list(df["response"]), list(df["ground_truth"]),
                         workers=cfg.get("workers", 2), timeout_s=cfg.get("timeout_s", 5.0))
    if verifier_dir:
        items = [dict(v, question=q, ground_truth=g)
                 for v, q, g in zip(verdicts, df["prompt"], df["ground_truth"])]
        with judge_with(verifier_dir, cfg.get("verifier_max_new_tokens", 32), generation, stack) as judge:
            verdicts = model_verify(items, judge)
    v = pd.DataFrame(verdicts)
    out = df[["problem_id", "sample_idx", "response", "n_tokens", "finish_reason"]].copy()
    cols = ["correct", "format_error", "extracted", "timed_out"]
    if verifier_dir:
        cols += ["rule_correct", "judge_verdict"]
    for col in cols:
        out[col] = v[col]
    summary = summarize(out)
    summary.update({"model": model, "benchmark": benchmark})
    write_parquet(out, verdicts_path)
    write_json(summary, summary_path)
    print(f"{model} on {benchmark}: avg@n {summary['mean_score']:.3f}, pass@n {summary['best_score']:.3f}")
