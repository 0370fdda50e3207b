"""Stage: off-policy SFT cold start of a student on teacher rollouts (native torch loop)."""
from __future__ import annotations

from pathlib import Path

import torch

from opd.checkpoint import save_hf
from opd.data import read_parquet
from opd.generation import load_model, load_tokenizer
from opd.sft import SFTConfig, encode_examples, train_sft


def sft_cold_start(student_dir: str, rollouts_path: str, cfg: dict, seed: int, out_dir: str,
                   metrics_path: str, threads: int = 1, backend: dict | None = None,
                   stack: str | None = None) -> None:
    """Fine-tune the student on the rollouts (loss on response tokens only) and save it.

    ``backend``: ``{"backend": "native"|"llamafactory", "options": {...}}`` (default native);
    ``stack``: the ``llamafactory-cli`` to run for the llamafactory backend.
    """
    torch.set_num_threads(threads)
    rows = read_parquet(rollouts_path, required=("prompt", "response"))
    cfg = dict(cfg)
    thinking = cfg.pop("enable_thinking", None)  # the student's chat-template switch
    backend = backend or {"backend": "native", "options": {}}
    if backend["backend"] == "llamafactory":
        from opd.backends.llamafactory import run_sft
        run_sft(stack, rows, cfg, backend["options"], student_dir,
                work_dir=str(Path(out_dir).parent / "llamafactory"), model_dir=out_dir,
                metrics_path=metrics_path, seed=seed, enable_thinking=thinking)
        return
    tok, model = load_tokenizer(student_dir), load_model(student_dir)
    sft = SFTConfig.from_dict(cfg | {"seed": seed})
    examples = encode_examples(tok, [list(p) for p in rows["prompt"]], list(rows["response"]),
                               sft.max_len, enable_thinking=thinking)
    print(f"sft: {len(examples)} examples from {rollouts_path}")
    train_sft(model, examples, sft, tok.pad_token_id, metrics_path=metrics_path, desc="sft")
    save_hf(model, tok, out_dir)
