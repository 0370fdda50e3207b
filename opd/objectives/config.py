"""``OPDConfig``: every knob of the OPD objective, validated on construction.

    >>> cfg = OPDConfig(top_k=16, strategy="union", weight_mode="teacher_p")
    >>> cfg = OPDConfig.from_dict({"top_k": 0, "adv_estimator": "grpo"})
    >>> OPDConfig.from_dict({"topk": 3})          # ValueError: unknown OPDConfig option(s) topk; valid: ...

Invalid values raise ``ValueError`` naming the field and the valid values.  Estimator and
policy-loss names are checked against the live registries (``ADV_ESTIMATORS``,
``POLICY_LOSSES``), so estimators registered by user code are accepted too.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from opd.options import from_options

#: Candidate-set strategies (see ``opd.objectives.topk``).
STRATEGIES = ("only_stu", "only_tch", "intersection", "union", "union-intersection")
#: Where candidate weights come from: student probs, teacher probs, or uniform / exp(0).
WEIGHT_MODES = ("student_p", "teacher_p", "none")
#: How the per-token loss matrix [B, L] is reduced to a scalar (see ``losses.token_weights``).
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
#: Sampled-token KL-to-reference estimators (see ``losses.kl_penalty``).
KL_LOSS_TYPES = ("low_var_kl", "kl", "abs", "mse")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class OPDConfig:
    """OPD objective configuration.

    Fields beyond the brief: ``metrics_k`` (top-k used for the mechanism statistics when
    ``top_k == 0``; when ``top_k > 0`` the statistics use ``top_k``: ``stats_k``), ``metrics_chunk_tokens``
    (response tokens per absolute-position chunk of the mechanism metrics, ``opd/<stat>_chunk{j}``;
    the authors log 1,024-token chunks) and ``loss_scale_factor`` (the divisor of
    ``seq-mean-token-sum-norm``; ``None`` = padded response length L) and ``tail_bucket`` (one
    extra candidate for all tokens outside the candidate set, see ``opd.objectives.topk``).
    """

    top_k: int = 16
    strategy: str = "only_stu"
    weight_mode: str = "student_p"
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0
    adv_estimator: str = "token_reward_direct"
    grpo_outcome_weight: float = 1.0
    norm_adv_by_std: bool = True
    policy_loss: str = "vanilla"
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float = 3.0
    loss_agg_mode: str = "token-mean"
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.0
    kl_loss_type: str = "low_var_kl"
    chunk_size: int = 1024
    metrics_k: int = 16
    metrics_chunk_tokens: int = 1024
    loss_scale_factor: Optional[float] = None
    tail_bucket: bool = False

    def __post_init__(self) -> None:
        from .registry import ADV_ESTIMATORS, POLICY_LOSSES

        def bad(field: str, valid: str) -> ValueError:
            return ValueError(f"OPDConfig.{field}={getattr(self, field)!r} is invalid; valid: {valid}")

        if not _is_int(self.top_k) or self.top_k < 0:
            raise bad("top_k", "an int >= 0 (0 = sampled-token OPD)")
        choices = {"strategy": STRATEGIES, "weight_mode": WEIGHT_MODES,
                   "loss_agg_mode": LOSS_AGG_MODES, "kl_loss_type": KL_LOSS_TYPES,
                   "adv_estimator": tuple(ADV_ESTIMATORS.names()),
                   "policy_loss": tuple(POLICY_LOSSES.names())}
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise bad(field, ", ".join(valid))
        for field in ("student_temperature", "teacher_temperature"):
            if not _is_num(getattr(self, field)) or getattr(self, field) <= 0:
                raise bad(field, "a finite float > 0")
        if not _is_num(self.grpo_outcome_weight):
            raise bad("grpo_outcome_weight", "a finite float")
        if not _is_num(self.clip_ratio_low) or not 0 <= self.clip_ratio_low < 1:
            raise bad("clip_ratio_low", "a float in [0, 1)")
        if not _is_num(self.clip_ratio_high) or self.clip_ratio_high < 0:
            raise bad("clip_ratio_high", "a float >= 0")
        if not _is_num(self.clip_ratio_c) or self.clip_ratio_c <= 1:
            raise bad("clip_ratio_c", "a float > 1 (dual-clip lower bound)")
        if not _is_num(self.kl_loss_coef) or self.kl_loss_coef < 0:
            raise bad("kl_loss_coef", "a float >= 0")
        for field in ("norm_adv_by_std", "use_kl_loss", "tail_bucket"):
            if not isinstance(getattr(self, field), bool):
                raise bad(field, "True or False")
        for field in ("chunk_size", "metrics_k", "metrics_chunk_tokens"):
            if not _is_int(getattr(self, field)) or getattr(self, field) < 1:
                raise bad(field, "an int >= 1")
        if self.loss_scale_factor is not None and (not _is_num(self.loss_scale_factor)
                                                   or self.loss_scale_factor <= 0):
            raise bad("loss_scale_factor", "None or a float > 0")
        # ints are accepted for float fields; store floats so downstream arithmetic is uniform
        for f in ("student_temperature", "teacher_temperature", "grpo_outcome_weight", "clip_ratio_low",
                  "clip_ratio_high", "clip_ratio_c", "kl_loss_coef"):
            setattr(self, f, float(getattr(self, f)))

    @property
    def stats_k(self) -> int:
        """k of the mechanism statistics (overlap ratio, shared mass, ...): ``top_k``, or
        ``metrics_k`` for sampled-token OPD and GRPO (``top_k == 0``)."""
        return self.top_k if self.top_k > 0 else self.metrics_k

    @property
    def num_candidates(self) -> int:
        """M, the candidate count per position: 1 (top_k=0), 2k (union, union-intersection) or k,
        plus one with ``tail_bucket``."""
        if self.top_k == 0:
            m = 1
        else:
            m = 2 * self.top_k if self.strategy in ("union", "union-intersection") else self.top_k
        return m + int(self.tail_bucket)

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "OPDConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming them and the valid ones."""
        return from_options(cls, dict(d or {}), "OPDConfig")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (round-trips through ``from_dict``)."""
        return dataclasses.asdict(self)
