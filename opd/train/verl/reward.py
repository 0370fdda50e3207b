r"""verl custom reward function: the paper's grading protocol (last ``\boxed{}`` + math-verify).

verl 0.9.1 loads this file through ``reward.custom_reward_function.path=<this file>`` and
``reward.custom_reward_function.name=compute_score``, and its reward managers call it with
keyword arguments ``compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=..., **reward_kwargs)`` where ``solution_str`` is the decoded response.  A float
return is the score (logged as ``acc`` too).
"""
from __future__ import annotations

from typing import Any, Optional

from opd.grading.verify import is_correct


def compute_score(data_source: Any, solution_str: str, ground_truth: Any,
                  extra_info: Optional[dict] = None, **kwargs: Any) -> float:
    """1.0 when the last box of ``solution_str`` matches ``ground_truth``, else 0.0 (never raises)."""
    if isinstance(ground_truth, (list, tuple)):  # verl rows may carry several accepted answers
        return float(any(is_correct(solution_str or "", str(g)) for g in ground_truth))
    return 1.0 if is_correct(solution_str or "", str(ground_truth)) else 0.0
