"""Stage: a model that is another experiment's result (``models.<name>.from_experiment``; rules/models.smk)."""
from __future__ import annotations

from pathlib import Path

from opd.checkpoint import copy_checkpoint


def model_from_experiment(*, checkpoints: str, step: int, model: str) -> None:
    """Export checkpoint ``step`` of an experiment's ``checkpoints`` folder as the model folder
    ``model`` (hard links where possible), so it can be a student or teacher of another run."""
    src = Path(checkpoints) / f"step_{step:04d}"
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src}: no checkpoint at step {step}; the experiment saves "
                                f"{sorted(p.name for p in Path(checkpoints).glob('step_*'))}")
    copy_checkpoint(src, model, link=True)
    print(f"{model}: step {step} of {checkpoints}")
