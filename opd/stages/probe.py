"""Stage: the probe of one model of an OPD experiment on one benchmark's generations (rules/probe.smk)."""
from __future__ import annotations

import os

from opd.io import flat_view, read_parquet, write_json, write_parquet

GENERATION_COLUMNS = ("problem_id", "sample_idx", "response", "n_tokens", "finish_reason")


def probe(*, checkpoint: str, teacher: str, generations: str, benchmark: str, summary: str,
          tokens: str, objective: dict, probe: dict, seed: int, exp: str, model: str, bench: str,
          subdir: str = "", thinking: bool | None = None) -> None:
    """Score ``model``'s evaluation generations with it (``checkpoint/subdir``, as student) and the
    experiment's ``teacher`` under the experiment's ``objective``; write the per-token table
    (``tokens``, parquet) and its ``mechanism_metrics`` (``summary``, json).

    ``probe``: ``max_tokens`` (seeded subsample of responses, null = all), ``batch_size``
    (sequences per forward); ``thinking``: the chat-template switch the generations used.
    """
    from opd.objectives import OPDConfig
    from opd.probe import probe_model, summarise

    cfg = OPDConfig.from_dict(objective)
    gens = read_parquet(generations, required=GENERATION_COLUMNS)
    problems = flat_view(read_parquet(benchmark), benchmark)
    prompts = dict(zip(problems["problem_id"].astype(str), problems["prompt"]))
    frame = probe_model(os.path.join(checkpoint, subdir), teacher, gens, prompts, cfg,
                        max_tokens=probe.get("max_tokens"), seed=seed,
                        batch_size=probe.get("batch_size", 64), enable_thinking=thinking)
    metrics = summarise(frame, cfg)
    record = {"experiment": exp, "model": model, "benchmark": bench,
              "k": cfg.stats_k, "chunk_tokens": cfg.metrics_chunk_tokens,
              "n_responses": int(frame["response"].nunique()) if len(frame) else 0,
              "n_tokens": int(len(frame)), "metrics": metrics}
    write_parquet(frame, tokens)
    write_json(record, summary)
    print(f"probe {exp}/{model} on {bench}: {record['n_responses']} responses, {record['n_tokens']} "
          f"tokens, overlap {metrics.get('opd/overlap_ratio', float('nan')):.3f}")
