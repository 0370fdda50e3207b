r"""Mechanism statistics: how student and teacher top-k sets relate, token by token.

One pure pair of functions serves the trainer (every step, on its rollouts, through
``opd.objectives.score_tokens``) and the probe stage (every checkpoint, on evaluation
generations, ``opd.probe``), so their numbers are the same quantities.  The definitions follow
the metrics the paper's authors log in their verl fork (thunlp/OPD,
``verl/trainer/ppo/ray_trainer.py``: ``val-topk/*``, ``val-extrema/*``, ``*_chunk_<a>_<b>``).

**Per-token statistics** (``token_mechanism_stats``; S = log_softmax(z_s / T_s),
T = log_softmax(z_t / T_t) [..., V]; k = cfg.top_k, or cfg.metrics_k when top_k = 0).  Ks / Kt
are the student / teacher top-k sets (members = finite log-prob, as in ``opd.objectives.topk``),
p = exp(S), q = exp(T), shared = Ks n Kt, and for every token c the per-token log-ratio reward

    r_c = max(T[c], F) - max(S[c], F)      F = LOGP_FLOOR = log(float32 tiny) ~ -87.34

i.e. the OPD reward of sampled-token OPD, log q_c - log p_c, evaluated at c with weight 1 (the
objective's weighted reward -(S - T) w is ``reward``; r does not depend on strategy or weight
mode, so runs of different objectives are comparable).  Stats, each [...]:

    overlap_ratio                 |shared| / k
    student_mass_shared           sum_{shared} p          teacher_mass_shared           sum_{shared} q
    student_mass_own_topk         sum_{Ks} p              teacher_mass_own_topk         sum_{Kt} q
    student_mass_on_teacher_topk  sum_{Kt} p              teacher_mass_on_student_topk  sum_{Ks} q
    student_entropy               -sum_V p log p          teacher_entropy               -sum_V q log q
    reward_shared_sum             sum_{Ks n Kt} r_c       n_shared        |Ks n Kt|
    reward_student_only_sum       sum_{Ks \ Kt} r_c       n_student_only  |Ks \ Kt|
    reward_teacher_only_sum       sum_{Kt \ Ks} r_c       n_teacher_only  |Kt \ Ks|
    reward_topk_max / _min        max / min_{c in Ks} r_c     (c+ / c- the tokens attaining them)
    student_p_at_reward_max       p_{c+}                  teacher_p_at_reward_max       q_{c+}
    student_p_at_reward_min       p_{c-}                  teacher_p_at_reward_min       q_{c-}
    student_p_top1                max_V p                 teacher_p_top1                max_V q
    reward                        sum over valid candidates of the objective's reward (score_tokens)

(a position where Ks is empty -- all-(-inf) logits -- gets 0 for the extremes.)

**Aggregates** (``mechanism_metrics(stats, response_mask, n_buckets, chunk_tokens)``): floats
named ``opd/<name>``, means over response tokens (mask > 0), except:

    opd/reward_mean|std|min|max   of ``reward`` over response tokens (population std)
    opd/reward_<class>            sum of reward_<class>_sum / sum of n_<class>: the mean of r_c
                                  over all (token, candidate) pairs of that class (pooled, as
                                  the authors' ``adv[mask].mean()``); omitted when no pair exists
    opd/entropy_gap               mean of teacher_entropy - student_entropy
    opd/<stat>_bucket{i}          mean over tokens in relative-position bucket i: token t of a
                                  response of n tokens (i_t = 0..n-1 among response tokens) is
                                  in bucket floor(i_t / n * n_buckets); bucket 0 = earliest
    opd/<stat>_chunk{j}           mean over tokens with j * C <= i_t < (j + 1) * C, C =
                                  chunk_tokens (cfg.metrics_chunk_tokens; the authors' 1,024)

for <stat> in ``POSITION_STATS`` (overlap, both shared masses, reward, both entropies).  Empty
buckets / chunks are omitted; an empty mask returns {}.

    >>> m = mechanism_metrics(scored.stats, response_mask, chunk_tokens=cfg.metrics_chunk_tokens)
"""
from __future__ import annotations

import torch

from .logprobs import as_logprobs, entropy_from_logp  # noqa: F401 (entropy_from_logp: public here too)
from .topk import LOGP_FLOOR, isin_rows

#: Stats that get relative-position buckets and absolute-position chunks.
POSITION_STATS = ("overlap_ratio", "student_mass_shared", "teacher_mass_shared", "reward",
                  "student_entropy", "teacher_entropy")
#: Kept for callers of the earlier name.
BUCKETED_STATS = POSITION_STATS
#: Token classes of the top-k sets: shared (Ks n Kt), student-only (Ks \ Kt), teacher-only (Kt \ Ks).
TOKEN_CLASSES = ("shared", "student_only", "teacher_only")
#: The default of ``chunk_tokens`` (the authors' chunk length; ``OPDConfig.metrics_chunk_tokens``).
DEFAULT_CHUNK_TOKENS = 1024


def _mass(logp_at: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    p = torch.exp(logp_at)
    return torch.where(keep & torch.isfinite(logp_at), p, torch.zeros_like(p)).sum(-1)


def _floor(x: torch.Tensor) -> torch.Tensor:
    """max(x, LOGP_FLOOR), NaN -> the floor."""
    return torch.where(x > LOGP_FLOOR, x, torch.full_like(x, LOGP_FLOOR))


def _class_sum(r: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, r, torch.zeros_like(r)).sum(-1)


def token_mechanism_stats(student_logp, teacher_logp, k: int,
                          entropies: bool = True) -> dict[str, torch.Tensor]:
    """Per-position statistics of the module doc; S, T [..., V] log-probs (tensors or sources of
    ``opd.objectives.logprobs``) -> dict of [...] tensors.

    ``entropies=False`` leaves out the two entropies (``score_tokens`` computes them itself).
    """
    S, T = as_logprobs(student_logp), as_logprobs(teacher_logp)
    k = min(int(k), S.shape[-1])
    s_val, s_ids = S.topk(k)
    t_val, t_ids = T.topk(k)
    s_mem, t_mem = torch.isfinite(s_val), torch.isfinite(t_val)
    shared = s_mem & isin_rows(s_ids, t_ids, t_mem)            # [..., k] over the student's list
    t_only = t_mem & ~isin_rows(t_ids, s_ids, s_mem)           # [..., k] over the teacher's list
    s_only = s_mem & ~shared
    t_at_s, s_at_t = T.at(s_ids), S.at(t_ids)
    r_s = _floor(t_at_s) - _floor(s_val)                       # r_c on the student's list
    r_t = _floor(t_val) - _floor(s_at_t)                       # r_c on the teacher's list
    out = {
        "overlap_ratio": shared.to(s_val.dtype).sum(-1) / k,
        "student_mass_shared": _mass(s_val, shared),
        "teacher_mass_shared": _mass(t_at_s, shared),
        "student_mass_own_topk": _mass(s_val, s_mem),
        "teacher_mass_own_topk": _mass(t_val, t_mem),
        "student_mass_on_teacher_topk": _mass(s_at_t, t_mem),
        "teacher_mass_on_student_topk": _mass(t_at_s, s_mem),
        "reward_shared_sum": _class_sum(r_s, shared),
        "reward_student_only_sum": _class_sum(r_s, s_only),
        "reward_teacher_only_sum": _class_sum(r_t, t_only),
        "n_shared": shared.to(s_val.dtype).sum(-1),
        "n_student_only": s_only.to(s_val.dtype).sum(-1),
        "n_teacher_only": t_only.to(s_val.dtype).sum(-1),
    }
    any_mem = s_mem.any(-1)
    inf = torch.full_like(r_s, float("inf"))
    i_max = torch.where(s_mem, r_s, -inf).argmax(-1, keepdim=True)
    i_min = torch.where(s_mem, r_s, inf).argmin(-1, keepdim=True)
    p_s = torch.exp(s_val)
    q_s = torch.where(torch.isfinite(t_at_s), torch.exp(t_at_s), torch.zeros_like(t_at_s))  # NaN rows -> 0

    def at(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        v = x.gather(-1, i).squeeze(-1)
        return torch.where(any_mem, v, torch.zeros_like(v))

    out.update({
        "reward_topk_max": at(r_s, i_max), "reward_topk_min": at(r_s, i_min),
        "student_p_at_reward_max": at(p_s, i_max), "teacher_p_at_reward_max": at(q_s, i_max),
        "student_p_at_reward_min": at(p_s, i_min), "teacher_p_at_reward_min": at(q_s, i_min),
        "student_p_top1": torch.where(any_mem, p_s[..., 0], torch.zeros_like(p_s[..., 0])),
        "teacher_p_top1": torch.where(t_mem[..., 0], torch.exp(t_val[..., 0]),
                                      torch.zeros_like(t_val[..., 0])),
    })
    if entropies:
        out["student_entropy"] = S.entropy()
        out["teacher_entropy"] = T.entropy()
    return out


def response_positions(response_mask: torch.Tensor) -> torch.Tensor:
    """Index i_t [B, L] long of each token among its row's response tokens (-1 off-mask)."""
    m = response_mask > 0
    pos = torch.cumsum(m.long(), -1) - 1
    return torch.where(m, pos, torch.full_like(pos, -1))


def relative_position_buckets(response_mask: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket index [B, L] long of each response token by relative position (-1 off-mask)."""
    m = response_mask > 0
    pos = response_positions(response_mask).clamp_min(0)
    n = m.long().sum(-1, keepdim=True).clamp_min(1)
    b = torch.div(pos * n_buckets, n, rounding_mode="floor").clamp(0, n_buckets - 1)
    return torch.where(m, b, torch.full_like(b, -1))


def _grouped_means(values: torch.Tensor, groups: torch.Tensor, prefix: str, out: dict) -> None:
    """out[f"{prefix}{g}"] = mean of ``values`` where ``groups == g``, for every g >= 0 present."""
    for g in torch.unique(groups[groups >= 0]).tolist():
        sel = groups == g
        out[f"{prefix}{g}"] = float(values[sel].sum() / sel.sum())


def mechanism_metrics(stats: dict[str, torch.Tensor], response_mask: torch.Tensor,
                      n_buckets: int = 8, chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS
                      ) -> dict[str, float]:
    """Aggregate per-token stats [B, L] over response tokens into ``opd/...`` floats (module doc).

    ``n_buckets`` 0 or ``chunk_tokens`` None/0 switch the bucket or chunk metrics off.
    """
    m = response_mask > 0
    if int(m.sum().item()) == 0:
        return {}
    for name, v in stats.items():
        if v.shape != m.shape:
            raise ValueError(f"stat {name!r} has shape {tuple(v.shape)}, expected {tuple(m.shape)}")
    x = {name: v.detach().double() for name, v in stats.items()}
    out: dict[str, float] = {}
    pos = response_positions(response_mask)
    buckets = relative_position_buckets(response_mask, n_buckets) if n_buckets > 0 else None
    chunks = torch.div(pos, chunk_tokens, rounding_mode="floor") if chunk_tokens else None
    if chunks is not None:
        chunks = torch.where(m, chunks, torch.full_like(chunks, -1))
    class_keys = {f"reward_{c}_sum" for c in TOKEN_CLASSES} | {f"n_{c}" for c in TOKEN_CLASSES}
    for name, v in x.items():
        if name in class_keys:
            continue
        if name == "reward":
            r = v[m]
            out.update({"opd/reward_mean": float(r.mean()), "opd/reward_std": float(r.std(unbiased=False)),
                        "opd/reward_min": float(r.min()), "opd/reward_max": float(r.max())})
        else:
            out[f"opd/{name}"] = float(v[m].mean())
        if name in POSITION_STATS:
            if buckets is not None:
                _grouped_means(v, buckets, f"opd/{name}_bucket", out)
            if chunks is not None:
                _grouped_means(v, chunks, f"opd/{name}_chunk", out)
    for c in TOKEN_CLASSES:
        if f"reward_{c}_sum" in x and f"n_{c}" in x:
            n = float(x[f"n_{c}"][m].sum())
            if n > 0:
                out[f"opd/reward_{c}"] = float(x[f"reward_{c}_sum"][m].sum()) / n
    if "student_entropy" in x and "teacher_entropy" in x:
        out["opd/entropy_gap"] = float((x["teacher_entropy"] - x["student_entropy"])[m].mean())
    return out
