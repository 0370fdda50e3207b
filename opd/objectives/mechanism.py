r"""Mechanism statistics: how student and teacher top-k sets relate, token by token.

Per-token statistics (``token_mechanism_stats``, computed by ``score_tokens`` chunk by chunk from
S = log_softmax(z_s / T_s) and T = log_softmax(z_t / T_t); k = cfg.top_k, or cfg.metrics_k when
top_k = 0).  With Ks / Kt the student / teacher top-k sets (members = finite log-prob, as in
``opd.objectives.topk``), p = exp(S), q = exp(T), shared = Ks n Kt:

    overlap_ratio                 |shared| / k
    student_mass_shared           sum_{shared} p          teacher_mass_shared      sum_{shared} q
    student_mass_own_topk         sum_{Ks} p              teacher_mass_own_topk    sum_{Kt} q
    student_mass_on_teacher_topk  sum_{Kt} p              teacher_mass_on_student_topk  sum_{Ks} q
    student_entropy               -sum_V p log p          teacher_entropy          -sum_V q log q
    reward                        sum over valid candidates of the OPD reward (added by score_tokens)

``mechanism_metrics(stats, response_mask)`` averages them over response tokens into floats
named ``opd/<stat>`` (``reward`` -> ``opd/reward_mean|std|min|max``, population std), plus
position buckets ``opd/<stat>_bucket{i}`` for overlap_ratio, student_mass_shared and
teacher_mass_shared: token t of a response of length n (counting response tokens only) falls
in bucket floor(i_t / n * n_buckets), i_t = 0..n-1, i.e. bucket 0 = earliest tokens.
Empty buckets are omitted; an empty mask returns {}.

    >>> m = mechanism_metrics(scored.stats, response_mask)     # {"opd/overlap_ratio": 0.41, ...}
"""
from __future__ import annotations

import torch

from .topk import isin_rows

BUCKETED_STATS = ("overlap_ratio", "student_mass_shared", "teacher_mass_shared")


def entropy_from_logp(logp: torch.Tensor) -> torch.Tensor:
    """-sum_V p log p with p = exp(logp), [..., V] -> [...] (two [..., V] temporaries).

    Uses ``torch.special.entr`` (entr(0) = 0, so -inf entries contribute 0); rows whose
    log-probs are NaN (all-(-inf) logits) get entropy 0.
    """
    h = torch.special.entr(torch.exp(logp)).sum(-1)
    return torch.where(torch.isfinite(h), h, torch.zeros_like(h))


def _mass(logp_at: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    p = torch.exp(logp_at)
    return torch.where(keep & torch.isfinite(logp_at), p, torch.zeros_like(p)).sum(-1)


def token_mechanism_stats(student_logp: torch.Tensor, teacher_logp: torch.Tensor, k: int,
                          entropies: bool = True) -> dict[str, torch.Tensor]:
    """Per-position overlap / mass / entropy statistics; S, T [..., V] -> dict of [...] tensors."""
    S, T = student_logp, teacher_logp
    k = min(int(k), S.shape[-1])
    s_val, s_ids = S.topk(k, dim=-1)
    t_val, t_ids = T.topk(k, dim=-1)
    s_mem, t_mem = torch.isfinite(s_val), torch.isfinite(t_val)
    shared = s_mem & isin_rows(s_ids, t_ids, t_mem)            # [..., k] over the student's list
    t_at_s, s_at_t = T.gather(-1, s_ids), S.gather(-1, t_ids)
    out = {
        "overlap_ratio": shared.to(S.dtype).sum(-1) / k,
        "student_mass_shared": _mass(s_val, shared),
        "teacher_mass_shared": _mass(t_at_s, shared),
        "student_mass_own_topk": _mass(s_val, s_mem),
        "teacher_mass_own_topk": _mass(t_val, t_mem),
        "student_mass_on_teacher_topk": _mass(s_at_t, t_mem),
        "teacher_mass_on_student_topk": _mass(t_at_s, s_mem),
    }
    if entropies:
        out["student_entropy"] = entropy_from_logp(S)
        out["teacher_entropy"] = entropy_from_logp(T)
    return out


def relative_position_buckets(response_mask: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket index [B, L] long of each response token by relative position (-1 off-mask)."""
    m = response_mask > 0
    pos = torch.cumsum(m.long(), -1) - 1                        # index among the row's response tokens
    n = m.long().sum(-1, keepdim=True).clamp_min(1)
    b = torch.div(pos * n_buckets, n, rounding_mode="floor").clamp(0, n_buckets - 1)
    return torch.where(m, b, torch.full_like(b, -1))


def mechanism_metrics(stats: dict[str, torch.Tensor], response_mask: torch.Tensor,
                      n_buckets: int = 8) -> dict[str, float]:
    """Aggregate per-token stats [B, L] over response tokens into ``opd/...`` floats (see module doc)."""
    m = response_mask > 0
    n = int(m.sum().item())
    if n == 0:
        return {}
    out: dict[str, float] = {}
    buckets = relative_position_buckets(response_mask, n_buckets) if n_buckets > 0 else None
    for name, v in stats.items():
        if v.shape != m.shape:
            raise ValueError(f"stat {name!r} has shape {tuple(v.shape)}, expected {tuple(m.shape)}")
        x = v.detach()[m].double()
        if name == "reward":
            out["opd/reward_mean"] = float(x.mean())
            out["opd/reward_std"] = float(x.std(unbiased=False))
            out["opd/reward_min"] = float(x.min())
            out["opd/reward_max"] = float(x.max())
            continue
        out[f"opd/{name}"] = float(x.mean())
        if buckets is not None and name in BUCKETED_STATS:
            vb = v.detach().double()
            for i in range(n_buckets):
                sel = buckets == i
                c = int(sel.sum().item())
                if c:
                    out[f"opd/{name}_bucket{i}"] = float(vb[sel].sum() / c)
    return out
