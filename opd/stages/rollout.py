"""Stage: teacher rollout with rejection sampling; its output is the cold-start SFT dataset."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import torch

from opd.data import flat_view, read_parquet, write_json, write_parquet
from opd.generation import SamplingParams, open_generator
from opd.rollout import run_rollout


def fingerprint(teacher_dir: str, prompts_path: str, cfg: dict, seed: int,
                generation: dict | None = None) -> str:
    """Hash of what a rollout depends on: the teacher's and prompts' files, settings, backend, seed."""
    h = hashlib.sha256(json.dumps([cfg, seed, generation or {}], sort_keys=True).encode())
    files = sorted(p for p in Path(teacher_dir).rglob("*") if p.is_file()) + [Path(prompts_path)]
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def teacher_rollout(teacher_dir: str, prompts_path: str, cfg: dict, seed: int,
                    out_path: str, stats_path: str, threads: int = 1,
                    generation: dict | None = None, stack: str | None = None) -> None:
    """Roll out the teacher on the training prompts; keep accepted responses as SFT rows.

    ``generation``: ``{"backend": "hf"|"vllm", "options": {...}}`` (default hf); ``stack``:
    the vLLM stack's Python for the vllm backend.
    """
    torch.set_num_threads(threads)
    problems = flat_view(read_parquet(prompts_path), prompts_path)
    if cfg.get("prompts"):
        problems = problems.iloc[:cfg["prompts"]].reset_index(drop=True)
    prompts = list(problems["prompt"])
    checkpoint = Path(str(out_path) + ".progress.jsonl")
    with open_generator(teacher_dir, stack=stack, **(generation or {})) as gen:

        def generate_fn(indices, attempt):
            params = SamplingParams(n=1, temperature=cfg["temperature"], top_p=cfg["top_p"],
                                    max_new_tokens=cfg["max_new_tokens"],
                                    seed=seed * 7919 + attempt * 104729 + indices[0],
                                    batch_size=cfg.get("batch_size", 64))
            return gen.generate([prompts[i] for i in indices], params,
                                enable_thinking=cfg.get("enable_thinking"), show_progress=False)

        records, stats = run_rollout(generate_fn, len(prompts), cfg["n"],
                                     cfg.get("max_attempts_per_rollout", 3), checkpoint,
                                     batch_slots=cfg.get("batch_size", 64),
                                     fingerprint=fingerprint(teacher_dir, prompts_path, cfg, seed,
                                                             generation))
    rows = []
    for rec in records:
        if not rec["accepted"]:
            continue
        p = problems.iloc[rec["prompt_index"]]
        rows.append({"problem_id": p["problem_id"], "prompt": p["prompt"],
                     "ground_truth": p["ground_truth"], "sample_idx": rec["sample_idx"],
                     "response": rec["response"], "n_tokens": rec["n_tokens"],
                     "finish_reason": rec["finish_reason"], "attempts": rec["attempts"]})
    if not rows:
        raise ValueError(f"every teacher rollout was rejected ({stats['rejections_by_reason']}); "
                         "check the teacher and raise rollout.max_new_tokens or max_attempts_per_rollout")
    write_parquet(pd.DataFrame(rows), out_path)
    stats.update({"prompts": len(prompts), "n": cfg["n"], "teacher": str(teacher_dir),
                  "backend": (generation or {}).get("backend", "hf")})
    write_json(stats, stats_path)
    checkpoint.unlink()
    print(f"rollout: {stats['accepted']} of {stats['slots']} slots accepted -> {out_path}")
