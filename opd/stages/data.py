"""Stages of the data (rules/data.smk): benchmark preparation, dedup of the training prompts
against the benchmarks, dedup of the selection reference against the training set (paper
section 5.2), teacher-aligned prompt selection.

The default training set and an experiment's own set (``experiments.<exp>.data``) run the same
functions under two rule names (``dedup_prompt_set = dedup_train``, and so on), as does the
cold-start prompt set (``rollout.source``: ``dedup_rollout_prompts``).
"""
from __future__ import annotations

import pandas as pd

from opd.data.datasets import load_dataset
from opd.io import read_parquet, write_json, write_parquet


def prepare_benchmark(*, source: str, spec: dict, bench: str, benchmark: str) -> None:
    """Normalise a benchmark (world split or user parquet) into the project's row format."""
    split = spec["source"].split(":", 1)[1] if spec["source"].startswith("world:") else "test"
    df = load_dataset(source, name=bench, prompt_style=spec.get("prompt_style", "keep"), split=split)
    write_parquet(df, benchmark)
    print(f"{bench}: {len(df)} rows -> {benchmark}")


def dedup_train(*, source: str, reference: list[str], spec: dict, dedup: dict, train: str,
                report: str) -> None:
    """Remove training prompts that duplicate (exactly or semantically) any benchmark question."""
    from opd.data.dedup import dedup as dedup_frames

    prompts = load_dataset(source, name="train", prompt_style=spec.get("prompt_style", "keep"),
                           split="train")
    if not dedup.get("enabled", True):
        write_parquet(prompts, train)
        write_json({"enabled": False, "n_candidates": len(prompts), "n_kept": len(prompts)}, report)
        return
    ref = pd.concat([read_parquet(p) for p in reference], ignore_index=True)
    kept, summary = dedup_frames(prompts, ref, encoder_path=dedup.get("encoder"),
                                 threshold=dedup.get("threshold", 0.9))
    if len(kept) == 0:
        raise ValueError(f"deduplication removed every prompt of {source} (threshold "
                         f"{dedup.get('threshold')}); raise data.dedup.threshold")
    write_parquet(kept, train)
    write_json(summary, report)
    print(f"{source}: kept {len(kept)} of {len(prompts)} prompts -> {train}")


#: An experiment's own training set (results/data/sets/<exp>/) and the cold-start prompts.
dedup_prompt_set = dedup_train
dedup_rollout_prompts = dedup_train


def dedup_reference(*, source: str, train: str, spec: dict, dedup: dict, reference: str,
                    report: str) -> None:
    """Remove reference questions that duplicate a training prompt (the authors'
    ``scripts/infer/dedup_deepmath.py``: exact matching, then embedding nearest neighbours at
    ``data.selection.dedup.threshold``), so the selection ranks training prompts against a
    reference set apart from them. The report lists every removed pair with its similarity."""
    from opd.data.dedup import dedup as dedup_frames

    ref = load_dataset(source, name="reference", prompt_style=spec.get("prompt_style", "keep"))
    if not dedup.get("enabled", True):
        write_parquet(ref, reference)
        write_json({"enabled": False, "n_candidates": len(ref), "n_kept": len(ref)}, report)
        return
    kept, summary = dedup_frames(ref, read_parquet(train), encoder_path=dedup.get("encoder"),
                                 threshold=dedup.get("threshold", 0.9))
    if len(kept) == 0:
        raise ValueError(f"deduplication against the training set {train} removed every reference "
                         f"question of {source} (threshold {dedup.get('threshold', 0.9)}); raise "
                         "data.selection.dedup.threshold (thresholds depend on the encoder)")
    write_parquet(kept, reference)
    write_json(summary, report)
    print(f"reference: kept {len(kept)} of {len(ref)} questions -> {reference}")


dedup_reference_set = dedup_reference


def select_prompts(*, train: str, reference: str, selection: dict, seed: int, selected: str,
                   random: str, report: str) -> None:
    """Keep the training prompts closest to the (deduplicated) reference set, which stands for
    the teacher's post-training prompts; and, as their control (claim C6; ``prompts: random``),
    as many training prompts drawn at random (``seed``), both in the training set's order."""
    from opd.data.selection import random_control, select_aligned

    candidates = read_parquet(train)
    kept, summary = select_aligned(candidates, read_parquet(reference),
                                   encoder_path=selection.get("encoder"),
                                   top_n=selection.get("top_n"), fraction=selection.get("fraction"),
                                   score=selection.get("score", "max"))
    control = random_control(candidates, len(kept), seed)
    ids = {e["problem_id"] for e in kept["extra_info"]}
    summary["random_control"] = {
        "n": int(len(control)), "seed": int(seed),
        "n_also_selected": sum(e["problem_id"] in ids for e in control["extra_info"])}
    write_parquet(kept, selected)
    write_parquet(control, random)
    write_json(summary, report)
    print(f"selection: kept {len(kept)} training prompts -> {selected}; as many at random "
          f"(seed {seed}) -> {random}")


select_prompt_set = select_prompts
