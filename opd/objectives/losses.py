r"""Policy losses (registry ``POLICY_LOSSES``), loss aggregation and KL-to-reference penalties.

Every policy loss is written once as a *per-token* function (registry ``TOKEN_LOSSES``)::

    token_fn(logp_new [..., M], logp_old [..., M], advantages [..., M], valid [..., M] bool, cfg)
        -> (loss [...], cand_stats: dict[str, Tensor[..., M]])

which sums its per-candidate losses (zero at invalid candidates) over the M candidates.
``register_policy_loss(name)`` registers it in ``TOKEN_LOSSES`` and registers the full loss

    POLICY_LOSSES.get(name)(logp_new [B,L,M], logp_old [B,L,M], advantages [B,L,M], valid [B,L,M],
                            response_mask [B,L], cfg) -> (scalar loss, stats dict of floats)

= ``agg_loss(token_fn(...)[0], response_mask, cfg.loss_agg_mode, cfg.loss_scale_factor)`` plus the
candidate stats averaged over valid, in-response candidates.  The chunked trainer path
(``opd.objectives.chunked``) uses the same token function with ``token_weights``, so both paths
agree exactly:  agg_loss(X, mask, mode) == (X * token_weights(mask, mode)).sum().

``vanilla`` (PPO, dual clip; as in verl), per candidate with r = exp(logp_new - logp_old)
(log-ratio clamped to [-20, 20] for stability, as verl does):

    l1 = -A r,   l2 = -A clamp(r, 1 - clip_ratio_low, 1 + clip_ratio_high),   l = max(l1, l2)
    A < 0:  l = min(l, -A * clip_ratio_c)                                        (dual clip)

Aggregation (mask m, n_seq = number of rows with any response token):
    token-mean               sum(l m) / sum(m)
    seq-mean-token-sum       sum_b (sum_t l m) / n_seq
    seq-mean-token-mean      sum_b (sum_t l m / sum_t m) / n_seq
    seq-mean-token-sum-norm  sum_b (sum_t l m / Lnorm) / n_seq,   Lnorm = loss_scale_factor or L
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

from .config import KL_LOSS_TYPES, LOSS_AGG_MODES
from .registry import POLICY_LOSSES, TOKEN_LOSSES

if TYPE_CHECKING:
    from .config import OPDConfig

LOG_RATIO_CLAMP = 20.0


# ----------------------------------------------------------------------------- aggregation
def token_weights(response_mask: torch.Tensor, mode: str, loss_scale_factor: Optional[float] = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-token weights W [B, L] with agg_loss(X, mask, mode) == (X * W).sum(); W = 0 off-mask.

    response_mask [B, L] bool or 0/1 float.  An empty mask gives all-zero weights.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; valid: {', '.join(LOSS_AGG_MODES)}")
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be [B, L], got shape {tuple(response_mask.shape)}")
    m = response_mask.to(dtype)
    zero = torch.zeros_like(m)
    if mode == "token-mean":
        total = m.sum()
        return torch.where(total > 0, m / total.clamp_min(1e-12), zero)
    seq_len = m.sum(-1, keepdim=True)                           # [B, 1]
    n_seq = (seq_len > 0).to(dtype).sum().clamp_min(1.0)
    if mode == "seq-mean-token-sum":
        return m / n_seq
    if mode == "seq-mean-token-mean":
        return torch.where(seq_len > 0, m / seq_len.clamp_min(1e-12), zero) / n_seq
    norm = float(loss_scale_factor) if loss_scale_factor is not None else float(m.shape[-1])
    return m / (norm * n_seq)


def agg_loss(loss_mat: torch.Tensor, response_mask: torch.Tensor, mode: str,
             loss_scale_factor: Optional[float] = None) -> torch.Tensor:
    """Reduce loss_mat [B, L] to a scalar: (loss_mat * token_weights(...)).sum() (off-mask ignored)."""
    w = token_weights(response_mask, mode, loss_scale_factor, dtype=loss_mat.dtype)
    return (torch.where(w != 0, loss_mat, torch.zeros_like(loss_mat)) * w).sum()


# ----------------------------------------------------------------------------- KL to reference
def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """Elementwise KL estimator on the sampled token, [B, L] -> [B, L].

    low_var_kl (k3): d = clamp(ref - logp, +-20); clamp(exp(d) - d - 1, -10, 10)
    kl (k1): logp - ref;   abs: |logp - ref|;   mse (k2): 0.5 (logp - ref)^2
    """
    if kind == "low_var_kl":
        d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return (torch.exp(d) - d - 1).clamp(-10.0, 10.0)
    if kind == "kl":
        return logp - ref_logp
    if kind == "abs":
        return (logp - ref_logp).abs()
    if kind == "mse":
        return 0.5 * (logp - ref_logp).square()
    raise ValueError(f"unknown kl_loss_type {kind!r}; valid: {', '.join(KL_LOSS_TYPES)}")


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10]; [B, L] -> [B, L]."""
    return kl_penalty(logp, ref_logp, "low_var_kl")


# ----------------------------------------------------------------------------- policy losses
def candidate_mask(valid: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """valid [..., M] & (response_mask [...] > 0) -> [..., M] bool."""
    return valid.bool() & (response_mask > 0).unsqueeze(-1)


def _make_policy_loss(token_fn: Callable) -> Callable:
    def policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                    valid: torch.Tensor, response_mask: torch.Tensor, cfg: "OPDConfig"):
        tok, cand_stats = token_fn(logp_new, logp_old, advantages, valid, cfg)
        loss = agg_loss(tok, response_mask, cfg.loss_agg_mode, cfg.loss_scale_factor)
        cm = candidate_mask(valid, response_mask)
        n = max(int(cm.sum().item()), 1)
        stats = {k: float((v.detach().double() * cm).sum().item() / n) for k, v in cand_stats.items()}
        stats["pg_loss"] = float(loss.detach().item())
        return loss, stats

    policy_loss.__name__ = f"policy_loss_{token_fn.__name__}"
    policy_loss.__doc__ = f"Aggregated policy loss built from ``{token_fn.__name__}``."
    return policy_loss


def register_policy_loss(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a per-token loss in TOKEN_LOSSES and its aggregate in POLICY_LOSSES."""
    def deco(token_fn: Callable) -> Callable:
        TOKEN_LOSSES.register(name)(token_fn)
        POLICY_LOSSES.register(name)(_make_policy_loss(token_fn))
        return token_fn
    return deco


def vanilla_token_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                       valid: torch.Tensor, cfg: "OPDConfig"):
    """PPO clipped surrogate with dual clip, summed over candidates.

    Args: logp_new, logp_old, advantages [..., M] float, valid [..., M] bool.
    Returns: (loss [...], {"clipfrac", "pg_clipfrac_lower", "ppo_kl"} each [..., M]) where
    clipfrac = 1[l2 > l1], pg_clipfrac_lower = 1[A < 0 and max(l1, l2) > -A c],
    ppo_kl = logp_old - logp_new.  Invalid candidates contribute exactly 0 (and no NaN
    gradient even if logp_new is -inf there).
    """
    zero = torch.zeros_like(logp_new)
    valid = valid.bool()
    neg_kl = torch.where(valid, logp_new - logp_old, zero)
    ratio = torch.exp(neg_kl.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    adv = torch.where(valid, advantages.to(logp_new.dtype), zero)
    l1 = -adv * ratio
    l2 = -adv * ratio.clamp(1.0 - cfg.clip_ratio_low, 1.0 + cfg.clip_ratio_high)
    clipped = torch.maximum(l1, l2)
    l3 = -adv * cfg.clip_ratio_c
    per = torch.where(adv < 0, torch.minimum(clipped, l3), clipped)
    per = torch.where(valid, per, zero)
    stats = {"clipfrac": (l2 > l1).to(logp_new.dtype),
             "pg_clipfrac_lower": ((clipped > l3) & (adv < 0)).to(logp_new.dtype),
             "ppo_kl": -neg_kl.detach()}
    return per.sum(-1), stats


#: The aggregate of ``vanilla_token_loss`` (``POLICY_LOSSES["vanilla"]``).
vanilla_policy_loss = _make_policy_loss(vanilla_token_loss)
