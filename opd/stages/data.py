"""Stages of the data: benchmark preparation and training-prompt deduplication."""
from __future__ import annotations

import pandas as pd

from opd.data import read_parquet, write_json, write_parquet
from opd.datasets import load_dataset


def prepare_dataset(source_path: str, spec: dict, name: str, out_path: str) -> None:
    """Normalise a dataset (world split or user parquet) into the project's row format."""
    split = spec["source"].split(":", 1)[1] if spec["source"].startswith("world:") else "test"
    df = load_dataset(source_path, name=name, prompt_style=spec.get("prompt_style", "keep"), split=split)
    write_parquet(df, out_path)
    print(f"{name}: {len(df)} rows -> {out_path}")


def dedup_train(train_path: str, spec: dict, reference_paths: list[str], dedup_cfg: dict,
                out_path: str, report_path: str) -> None:
    """Remove training prompts that duplicate (exactly or semantically) any benchmark question."""
    from opd.dedup import dedup

    train = load_dataset(train_path, name="train", prompt_style=spec.get("prompt_style", "keep"),
                         split="train")
    if not dedup_cfg.get("enabled", True):
        write_parquet(train, out_path)
        write_json({"enabled": False, "n_candidates": len(train), "n_kept": len(train)}, report_path)
        return
    reference = pd.concat([read_parquet(p) for p in reference_paths], ignore_index=True)
    kept, report = dedup(train, reference, encoder_path=dedup_cfg.get("encoder"),
                         threshold=dedup_cfg.get("threshold", 0.9))
    if len(kept) == 0:
        raise ValueError(f"deduplication removed every training prompt (threshold "
                         f"{dedup_cfg.get('threshold')}); raise data.dedup.threshold")
    write_parquet(kept, out_path)
    write_json(report, report_path)
    print(f"train: kept {len(kept)} of {len(train)} prompts -> {out_path}")


def select_prompts(train_path: str, reference_path: str, cfg: dict, out_path: str,
                   report_path: str) -> None:
    """Keep the training prompts closest to the reference set (the teacher's post-training prompts)."""
    from opd.selection import select_aligned

    ref_spec = cfg["reference"]
    reference = load_dataset(reference_path, name="reference",
                             prompt_style=ref_spec.get("prompt_style", "keep"))
    selected, report = select_aligned(read_parquet(train_path), reference,
                                      encoder_path=cfg.get("encoder"), top_n=cfg.get("top_n"),
                                      fraction=cfg.get("fraction"), score=cfg.get("score", "max"))
    write_parquet(selected, out_path)
    write_json(report, report_path)
    print(f"selection: kept {len(selected)} training prompts -> {out_path}")
