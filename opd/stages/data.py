"""Stages of the data: benchmark preparation, training-prompt dedup, prompt selection (rules/data.smk)."""
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
        raise ValueError(f"deduplication removed every training prompt (threshold "
                         f"{dedup.get('threshold')}); raise data.dedup.threshold")
    write_parquet(kept, train)
    write_json(summary, report)
    print(f"train: kept {len(kept)} of {len(prompts)} prompts -> {train}")


def select_prompts(*, train: str, reference: str, selection: dict, selected: str,
                   report: str) -> None:
    """Keep the training prompts closest to the reference set (the teacher's post-training prompts)."""
    from opd.data.selection import select_aligned

    ref = load_dataset(reference, name="reference",
                       prompt_style=selection["reference"].get("prompt_style", "keep"))
    kept, summary = select_aligned(read_parquet(train), ref, encoder_path=selection.get("encoder"),
                                   top_n=selection.get("top_n"), fraction=selection.get("fraction"),
                                   score=selection.get("score", "max"))
    write_parquet(kept, selected)
    write_json(summary, report)
    print(f"selection: kept {len(kept)} training prompts -> {selected}")
