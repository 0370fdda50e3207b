"""Stage: off-policy SFT cold start of a student on teacher rollouts (rules/sft.smk)."""
from __future__ import annotations

from opd import backends
from opd.io import read_parquet


def sft_cold_start(*, student: str, rollouts: str, sft: dict, backend: dict, seed: int, model: str,
                   metrics: str, stack: str | None = None) -> None:
    """Fine-tune ``student`` on the rollouts (loss on response tokens only) with the chosen SFT
    backend and save it to ``model``. ``sft`` is the config's ``sft`` section plus the
    student's chat-template switch ``enable_thinking``."""
    rows = read_parquet(rollouts, required=("prompt", "response"))
    cfg = dict(sft)
    thinking = cfg.pop("enable_thinking", None)
    backends.entry(backend, "sft")(student=student, rows=rows, sft=cfg, options=backend["options"],
                                   stack=stack, model=model, metrics=metrics, seed=seed,
                                   enable_thinking=thinking)
