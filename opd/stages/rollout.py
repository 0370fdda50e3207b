"""Stage: teacher rollout with rejection sampling; its output is the cold-start SFT dataset."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from opd.io import flat_view, read_parquet, write_json, write_parquet
from opd.generation import open_generator
from opd.generation.config import SamplingParams
from opd.generation.context import check_prompts_fit, configured_limit
from opd.rollout import Rejection, run_rollout


def fingerprint(teacher_dir: str, prompts_path: str, cfg: dict, seed: int,
                generation: dict | None = None) -> str:
    """Hash of what a rollout depends on: the teacher's and prompts' files, settings, backend, seed."""
    h = hashlib.sha256(json.dumps([cfg, seed, generation or {}], sort_keys=True).encode())
    files = sorted(p for p in Path(teacher_dir).rglob("*") if p.is_file()) + [Path(prompts_path)]
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def teacher_rollout(*, teacher: str, prompts: str, rollout: dict, seed: int, rollouts: str,
                    stats: str, backend: dict | None = None, stack: str | None = None) -> None:
    """Roll out the teacher on the training prompts; keep accepted responses as SFT rows.

    ``rollout``: the config's ``rollout`` section; ``backend``: ``{"backend": <generation
    backend>, "options": {...}}`` (default hf); ``stack``: its tool's Python. Resumable: progress
    is kept in ``<rollouts>.progress.jsonl`` until the rollouts are written. Raises
    ``ValueError`` before loading the teacher when a prompt plus ``rollout.max_new_tokens`` does
    not fit the teacher's context (``opd.generation.context``).
    """
    from opd.generation.hf import load_tokenizer

    problems = flat_view(read_parquet(prompts), prompts)
    if rollout.get("prompts"):
        problems = problems.iloc[:rollout["prompts"]].reset_index(drop=True)
    chats = list(problems["prompt"])
    check_prompts_fit(load_tokenizer(teacher), chats, model_dir=teacher,
                      max_new_tokens=rollout["max_new_tokens"], dataset=str(prompts),
                      budget_key="rollout.max_new_tokens",
                      enable_thinking=rollout.get("enable_thinking"), limit=configured_limit(backend))
    checkpoint = Path(str(rollouts) + ".progress.jsonl")
    with open_generator(teacher, stack=stack, **(backend or {})) as gen:

        def generate_fn(indices, attempt):
            params = SamplingParams(n=1, temperature=rollout["temperature"], top_p=rollout["top_p"],
                                    max_new_tokens=rollout["max_new_tokens"],
                                    seed=seed * 7919 + attempt * 104729 + indices[0],
                                    batch_size=rollout.get("batch_size", 64))
            return gen.generate([chats[i] for i in indices], params,
                                enable_thinking=rollout.get("enable_thinking"), show_progress=False)

        records, summary = run_rollout(generate_fn, len(chats), rollout["n"],
                                       rollout.get("max_attempts_per_rollout", 3), checkpoint,
                                       batch_slots=rollout.get("batch_size", 64),
                                       rules=Rejection.from_dict(rollout.get("rejection")),
                                       fingerprint=fingerprint(teacher, prompts, rollout, seed, backend))
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
        raise ValueError(f"every teacher rollout was rejected ({summary['rejections_by_reason']}); "
                         "check the teacher and raise rollout.max_new_tokens or max_attempts_per_rollout")
    write_parquet(pd.DataFrame(rows), rollouts)
    summary.update({"prompts": len(chats), "n": rollout["n"], "teacher": str(teacher),
                    "backend": (backend or {}).get("backend", "hf")})
    write_json(summary, stats)
    checkpoint.unlink()
    print(f"rollout: {summary['accepted']} of {summary['slots']} slots accepted -> {rollouts}")
