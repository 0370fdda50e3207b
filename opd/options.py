"""Strict construction of the small typed configs (``SFTConfig``, ``ModelSpec``, ``TrainConfig``,
``OPDConfig``).

The workflow schema already rejects unknown keys, but the library is also called from Python;
``from_options`` makes a typo there an error that lists the valid names, instead of a silently
ignored knob.

    cfg = from_options(SFTConfig, {"lr": 1e-4, "epochs": 1}, "SFT")
"""
from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_options(cls: type[T], options: dict, what: str) -> T:
    """``cls(**options)``, raising ``ValueError`` naming unknown keys and the valid ones."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {', '.join(map(str, unknown))}; "
                         f"valid: {', '.join(sorted(names))}")
    return cls(**options)
