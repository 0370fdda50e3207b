r"""Advantage estimators, registered by name in ``ADV_ESTIMATORS``.

Signature of every estimator::

    fn(rewards [B, L, M] float, valid [B, L, M] bool, response_mask [B, L] bool/float,
       outcome [B] float | None, group_ids [B] long | None, cfg: OPDConfig) -> advantages [B, L, M]

Advantages are zero wherever the candidate is invalid or the position is outside the response.

* ``token_reward_direct``:  A[b,l,c] = r[b,l,c] * mask[b,l] * valid[b,l,c]   (dense OPD reward).
* ``grpo``:  a_b = (o_b - mean_g) / (std_g + eps)  (or o_b - mean_g when ``cfg.norm_adv_by_std`` is
  False) with mean / std (unbiased, as in verl) over the group g of rollouts sharing b's
  ``group_ids``; A[b,l,c] = a_b * mask[b,l] * valid[b,l,c].  Following verl, a group of one
  rollout uses mean 0 and std 1.  eps = 1e-6.
  Note: with M > 1 the scalar is broadcast to every valid candidate (as specified for this
  project); with top_k = 0 / no teacher M = 1 and this is plain GRPO.
* ``token_reward_direct_plus_grpo``:  direct + cfg.grpo_outcome_weight * grpo.

Add an estimator with ``@ADV_ESTIMATORS.register("name")``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from .registry import ADV_ESTIMATORS  # noqa: F401  (the built-ins below are registered there by name)

if TYPE_CHECKING:
    from .config import OPDConfig

GRPO_EPS = 1e-6


def _cand_mask(valid: torch.Tensor, response_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """mask[b,l] * valid[b,l,c] as ``dtype`` [B, L, M]."""
    return valid.to(dtype) * response_mask.to(dtype).unsqueeze(-1)


def grpo_outcome_advantage(outcome: torch.Tensor, group_ids: torch.Tensor, norm_by_std: bool = True,
                           eps: float = GRPO_EPS) -> torch.Tensor:
    """Group-normalised scalar advantage per rollout: outcome [B], group_ids [B] -> [B] float.

    a_b = (o_b - mean_{g(b)}) / (std_{g(b)} + eps)   (std unbiased; groups of size 1: mean 0, std 1).
    """
    if outcome.dim() != 1 or group_ids.shape != outcome.shape:
        raise ValueError(f"outcome and group_ids must both be [B]; got {tuple(outcome.shape)} "
                         f"and {tuple(group_ids.shape)}")
    o = outcome.to(torch.float64)
    _, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inv.max().item()) + 1 if inv.numel() else 0
    count = torch.zeros(n_groups, dtype=o.dtype, device=o.device).index_add_(0, inv, torch.ones_like(o))
    mean = torch.zeros_like(count).index_add_(0, inv, o) / count
    sq = torch.zeros_like(count).index_add_(0, inv, (o - mean[inv]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp_min(1))
    single = count == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    adv = o - mean[inv]
    if norm_by_std:
        adv = adv / (std[inv] + eps)
    return adv.to(outcome.dtype if outcome.is_floating_point() else torch.float32)


def token_reward_direct(rewards: torch.Tensor, valid: torch.Tensor, response_mask: torch.Tensor,
                        outcome: Optional[torch.Tensor], group_ids: Optional[torch.Tensor],
                        cfg: "OPDConfig") -> torch.Tensor:
    """A = rewards * mask * valid, [B, L, M]."""
    return torch.where(_cand_mask(valid, response_mask, rewards.dtype) > 0, rewards,
                       torch.zeros_like(rewards))


def grpo(rewards: torch.Tensor, valid: torch.Tensor, response_mask: torch.Tensor,
         outcome: Optional[torch.Tensor], group_ids: Optional[torch.Tensor], cfg: "OPDConfig") -> torch.Tensor:
    """A[b,l,c] = grpo_outcome_advantage(outcome, group_ids)[b] * mask[b,l] * valid[b,l,c]."""
    if outcome is None or group_ids is None:
        raise ValueError("the grpo advantage estimator needs `outcome` [B] and `group_ids` [B]")
    a = grpo_outcome_advantage(outcome.to(rewards.device), group_ids.to(rewards.device), cfg.norm_adv_by_std)
    return a.to(rewards.dtype)[:, None, None] * _cand_mask(valid, response_mask, rewards.dtype)


def token_reward_direct_plus_grpo(rewards: torch.Tensor, valid: torch.Tensor, response_mask: torch.Tensor,
                                  outcome: Optional[torch.Tensor], group_ids: Optional[torch.Tensor],
                                  cfg: "OPDConfig") -> torch.Tensor:
    """A = token_reward_direct + cfg.grpo_outcome_weight * grpo."""
    return (token_reward_direct(rewards, valid, response_mask, outcome, group_ids, cfg)
            + cfg.grpo_outcome_weight * grpo(rewards, valid, response_mask, outcome, group_ids, cfg))
