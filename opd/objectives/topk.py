r"""Top-k candidate construction and per-candidate OPD rewards.

At every response position, with student / teacher log-probs

    S = log_softmax(z_s / T_s),     T = log_softmax(z_t / T_t)            (shape [..., V])

and ``S_ids`` / ``T_ids`` the top-k token ids of S / T, a *strategy* picks M candidates and a
validity mask, a *weight mode* gives weights w, and each valid candidate c gets the reward

    r_c = -(S[c] - T[c]) * w_c                      (0 at invalid candidates)

Strategies (M):  only_stu (k: S_ids), only_tch (k: T_ids), intersection (k: S_ids, valid if in
T_ids), union (2k: S_ids ++ T_ids, the T_ids already in S_ids invalid so each token counts once),
union-intersection (2k: S_ids ++ T_ids, valid = symmetric difference).
Weights: source = S (student_p), T (teacher_p) or 0 (none) at the candidates; softmax of the
source over the valid candidates (none -> uniform), except union-intersection which uses
exp(source) on valid candidates without renormalisation (none -> 1).
``top_k = 0`` is sampled-token OPD: one candidate, the sampled token y, r = -(S[y] - T[y]).

Non-finite log-probs (``-inf`` logits, e.g. masked vocabulary) -- the choices made here:

1. *Membership.*  An entry of S_ids (T_ids) belongs to the student's (teacher's) top-k set only
   if its own log-prob is finite.  ``topk`` must return k ids even when fewer than k tokens
   have non-zero probability; those padding picks are zero-probability tokens, never members,
   so set operations (intersection, union, ...) ignore them and their candidate is invalid.
2. *Student support.*  A candidate with non-finite S is invalid: the student cannot put mass
   there, the importance ratio exp(logp_new - logp_old) is undefined and -(S - T) is not
   finite.  (Masked positions of a row whose logits are all -inf thus have no valid candidate.)
3. *Teacher floor.*  The teacher log-prob is clamped from below at ``LOGP_FLOOR`` =
   log(float32 tiny) ~ -87.34, the log of the smallest normal float32 probability: every
   probability below it is 0 at float32 resolution anyway, and a student candidate the
   teacher rules out gets the large but finite penalty -(S - LOGP_FLOOR) * w instead of -inf.
   (NaN teacher log-probs also map to the floor.)

A position with no valid candidate gets all-zero weights and rewards (never NaN).
Computation runs in float32, or float64 for float64 inputs.

Tail bucket (``tail_bucket=True``, beyond the paper): one extra candidate per position, last
(M+1 in all), id ``TAIL_ID``, standing for every token outside the position's valid candidates
C. Its log-probs are ``S_tail = log(1 - sum_{c in C} exp S[c])`` and ``T_tail`` likewise
(``log1mexp`` of a logsumexp, stable on both ends; T floored like the others), it is valid when
C is non-empty and ``S_tail`` is above the rounding noise of the sum, ``log(4 M eps)`` (a C
covering the whole vocabulary leaves a zero-mass tail: invalid, no NaN; a teacher tail below
that noise takes the floor), its weight takes part in the weight mode's normalisation and
its reward is ``-(S_tail - T_tail) * w_tail``. Pushing a candidate down then moves mass into a
bucket the objective sees, instead of out of sight (the leak docs/world.md describes).

    >>> out = topk_rewards(student_logits, teacher_logits, top_k=16, strategy="union",
    ...                    weight_mode="student_p", student_temperature=0.7)
    >>> out.ids.shape, out.rewards.shape, out.valid.shape        # [..., 32] each
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .config import STRATEGIES, WEIGHT_MODES
from .logprobs import as_logprobs

#: Teacher log-prob floor, log(torch.finfo(torch.float32).tiny) ~ -87.3365.
LOGP_FLOOR = math.log(torch.finfo(torch.float32).tiny)
#: The id of the tail-bucket candidate (not a token).
TAIL_ID = -1


class TopkRewards(NamedTuple):
    """ids [..., M] long, rewards [..., M] float, valid [..., M] bool."""

    ids: torch.Tensor
    rewards: torch.Tensor
    valid: torch.Tensor


class TopkDetails(NamedTuple):
    """Everything ``topk_details`` computes, each [..., M].

    ``student_logp`` is S at the candidates (0 where invalid), ``teacher_logp`` the floored T
    at the candidates (0 where invalid), ``weights`` the candidate weights w (0 where invalid).
    """

    ids: torch.Tensor
    rewards: torch.Tensor
    valid: torch.Tensor
    weights: torch.Tensor
    student_logp: torch.Tensor
    teacher_logp: torch.Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for everything else (bf16 / fp16 / fp32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_names(strategy: str, weight_mode: str) -> None:
    """Raise ``ValueError`` listing the valid names if ``strategy`` / ``weight_mode`` is unknown."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if weight_mode not in WEIGHT_MODES:
        raise ValueError(f"unknown weight_mode {weight_mode!r}; valid: {', '.join(WEIGHT_MODES)}")


#: Largest Ma * Mb that ``isin_rows`` compares pair by pair; above it (k near the vocabulary,
#: as top_k = V for the exact reverse KL) it sorts and bisects instead.
PAIRWISE_MAX = 1024


def isin_rows(a: torch.Tensor, b: torch.Tensor, b_member: torch.Tensor) -> torch.Tensor:
    """Row-wise membership: ``out[..., i] = any_j (a[..., i] == b[..., j] and b_member[..., j])``.

    a [..., Ma], b [..., Mb] (same integer dtype), b_member [..., Mb] bool -> [..., Ma] bool.
    Cost O(Ma * Mb) up to ``PAIRWISE_MAX`` pairs (one broadcast comparison: the paper's k = 16),
    O((Ma + Mb) log Mb) above it (sort each row of b, bisect a into it); both give the same bits.
    """
    Ma, Mb = a.shape[-1], b.shape[-1]
    if Ma * Mb <= PAIRWISE_MAX or a.numel() == 0 or b.numel() == 0:
        return ((a.unsqueeze(-1) == b.unsqueeze(-2)) & b_member.unsqueeze(-2)).any(-1)
    # non-members become a value no entry of a holds, so they can never be found
    absent = torch.maximum(a.max(), b.max()) + 1
    sorted_b = torch.where(b_member, b, absent).sort(-1).values
    pos = torch.searchsorted(sorted_b, a.contiguous()).clamp_(max=Mb - 1)
    return sorted_b.gather(-1, pos) == a


def floor_teacher(t: torch.Tensor) -> torch.Tensor:
    """max(t, LOGP_FLOOR), mapping NaN to the floor too."""
    return torch.where(t > LOGP_FLOOR, t, torch.full_like(t, LOGP_FLOOR))


def candidate_weights(student_c: torch.Tensor, teacher_c: torch.Tensor, valid: torch.Tensor,
                      weight_mode: str, renormalise: bool) -> torch.Tensor:
    r"""Candidate weights w [..., M].

    source = student_c (student_p) | teacher_c (teacher_p) | 0 (none), then
    ``renormalise``: w = softmax over valid candidates of source, i.e.
    w_c = exp(src_c - max) / \sum_{valid} exp(src - max); else w_c = exp(src_c).
    w = 0 at invalid candidates; all-invalid rows give all-zero weights.
    """
    if weight_mode == "student_p":
        src = student_c
    elif weight_mode == "teacher_p":
        src = teacher_c
    elif weight_mode == "none":
        src = torch.zeros_like(student_c)
    else:
        raise ValueError(f"unknown weight_mode {weight_mode!r}; valid: {', '.join(WEIGHT_MODES)}")
    src = torch.where(valid, src, torch.zeros_like(src))
    if not renormalise:
        return torch.where(valid, torch.exp(src), torch.zeros_like(src))
    neg_inf = torch.full_like(src, float("-inf"))
    m = torch.where(valid, src, neg_inf).amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.where(valid, torch.exp(src - m), torch.zeros_like(src))
    return e / e.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def candidates(s_val: torch.Tensor, s_ids: torch.Tensor, t_val: torch.Tensor, t_ids: torch.Tensor,
               strategy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate ids and validity [..., M] of ``strategy`` from the student's and teacher's top-k
    values and ids [..., k]. A -inf pick (a masked vocabulary) is not a member (choice 1)."""
    s_mem, t_mem = torch.isfinite(s_val), torch.isfinite(t_val)
    if strategy == "only_stu":
        return s_ids, s_mem
    if strategy == "only_tch":
        return t_ids, t_mem
    if strategy == "intersection":
        return s_ids, s_mem & isin_rows(s_ids, t_ids, t_mem)
    ids = torch.cat([s_ids, t_ids], -1)
    if strategy == "union":
        return ids, torch.cat([s_mem, t_mem & ~isin_rows(t_ids, s_ids, s_mem)], -1)
    # union-intersection (symmetric difference)
    return ids, torch.cat([s_mem & ~isin_rows(s_ids, t_ids, t_mem),
                           t_mem & ~isin_rows(t_ids, s_ids, s_mem)], -1)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable near 0 and for very negative x; -inf at x >= 0."""
    x = x.clamp(max=0.0)
    small = x > -math.log(2.0)
    a = torch.log(-torch.expm1(torch.where(small, x, torch.full_like(x, -1.0))))
    b = torch.log1p(-torch.exp(torch.where(small, torch.full_like(x, -1.0), x)))
    return torch.where(small, a, b)


def tail_logp(logp_c: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """log(1 - sum_{valid c} exp logp_c): the log-mass outside the valid candidates; [..., M] -> [...].

    The candidates' log-sum is capped at ``-2 M eps`` (``eps`` of the dtype), so a tail that
    rounds to zero mass reads ``log(2 M eps)``, below the noise level ``log(4 M eps)`` at which
    ``append_tail`` calls a tail invalid, and its gradient is finite (an uncapped ``log(0)`` gives
    an infinite derivative, and 0 * inf = NaN in the backward of a masked-out tail)."""
    masked = torch.where(valid, logp_c, torch.full_like(logp_c, float("-inf")))
    cap = -2.0 * max(logp_c.shape[-1], 1) * torch.finfo(logp_c.dtype).eps
    return log1mexp(torch.logsumexp(masked, dim=-1).clamp(max=cap))


def with_tail(logp_c: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``logp_c`` [..., M+1] (S at the M candidates, then any value) with the last column replaced
    by the tail's log-mass ``log(1 - sum exp logp_c)`` over the valid candidates of the others."""
    return torch.cat([logp_c[..., :-1], tail_logp(logp_c[..., :-1], valid[..., :-1]).unsqueeze(-1)], -1)


def candidate_logp(logp, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``logp`` [..., V] (or a source, ``opd.objectives.logprobs``) at the candidates ``ids``
    [..., M]; a ``TAIL_ID`` column gets the tail's log-mass ``log(1 - sum exp logp)`` over the
    other valid candidates (the policy loss's ``logp_new`` with ``tail_bucket``: the ratio of the
    tail is exp(S_tail,new - S_tail,old))."""
    tail = ids == TAIL_ID
    out = as_logprobs(logp).at(torch.where(tail, torch.zeros_like(ids), ids))
    if not bool(tail.any()):
        return out
    return with_tail(out, valid & ~tail)


def append_tail(d: TopkDetails, weight_mode: str, renormalise: bool) -> TopkDetails:
    """``d`` [..., M] with the tail-bucket candidate appended ([..., M+1]); weights and rewards of
    every candidate recomputed so the tail's weight takes part in the normalisation."""
    s_tail = tail_logp(d.student_logp, d.valid)
    t_tail = tail_logp(d.teacher_logp, d.valid)
    # below the rounding noise of summing the candidates' probabilities the tail has no mass
    noise = math.log(max(d.valid.shape[-1], 1) * 4 * torch.finfo(s_tail.dtype).eps)
    t_tail = floor_teacher(torch.where(t_tail > noise, t_tail, torch.full_like(t_tail, LOGP_FLOOR)))
    tail_valid = d.valid.any(-1) & (s_tail > noise)
    zero = torch.zeros_like(s_tail)
    s_c = torch.cat([d.student_logp, torch.where(tail_valid, s_tail, zero).unsqueeze(-1)], -1)
    t_c = torch.cat([d.teacher_logp, torch.where(tail_valid, t_tail, zero).unsqueeze(-1)], -1)
    valid = torch.cat([d.valid, tail_valid.unsqueeze(-1)], -1)
    ids = torch.cat([d.ids, torch.full_like(d.ids[..., :1], TAIL_ID)], -1)
    weights = candidate_weights(s_c, t_c, valid, weight_mode, renormalise)
    rewards = torch.where(valid, -(s_c - t_c) * weights, torch.zeros_like(s_c))
    return TopkDetails(ids, rewards, valid, weights, s_c, t_c)


def topk_details(student_logp, teacher_logp, top_k: int, strategy: str,
                 weight_mode: str, tokens: Optional[torch.Tensor] = None,
                 tail_bucket: bool = False) -> TopkDetails:
    """Candidates, validity, weights and rewards from *log-probabilities* S, T [..., V].

    Same semantics as ``topk_rewards`` but the caller already applied the temperatures and
    log_softmax (used by the chunked path).  S and T are tensors or sources of
    ``opd.objectives.logprobs`` (``ChunkLogProbs``: a chunk's logits read once).  ``tokens``
    [...] long is needed for top_k = 0.
    Returns ``TopkDetails``, each field [..., M] ([..., M+1] with ``tail_bucket``).
    """
    check_names(strategy, weight_mode)
    S, T = as_logprobs(student_logp), as_logprobs(teacher_logp)
    if S.shape != T.shape:
        raise ValueError(f"student/teacher shapes differ: {tuple(S.shape)} vs {tuple(T.shape)}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
    if top_k == 0:
        if tokens is None:
            raise ValueError("top_k=0 (sampled-token OPD) needs `tokens` (the sampled ids, shape [...])")
        if tokens.shape != S.shape[:-1]:
            raise ValueError(f"tokens shape {tuple(tokens.shape)} must equal logits shape without "
                             f"the vocab dim {tuple(S.shape[:-1])}")
        ids = tokens.long().unsqueeze(-1)
        s_c, t_c = S.at(ids), T.at(ids)
        valid = torch.isfinite(s_c)
        s_c = torch.where(valid, s_c, torch.zeros_like(s_c))
        t_c = torch.where(valid, floor_teacher(t_c), torch.zeros_like(t_c))
        weights = valid.to(s_c.dtype)
        d = TopkDetails(ids, -(s_c - t_c) * weights, valid, weights, s_c, t_c)
        return append_tail(d, "none", renormalise=False) if tail_bucket else d

    V = S.shape[-1]
    if top_k > V:
        raise ValueError(f"top_k={top_k} exceeds the vocabulary size {V}")
    s_val, s_ids = S.topk(top_k)
    t_val, t_ids = T.topk(top_k)
    ids, valid = candidates(s_val, s_ids, t_val, t_ids, strategy)
    s_c, t_c = S.at(ids), T.at(ids)
    valid = valid & torch.isfinite(s_c)  # choice 2: no student support -> invalid
    zero = torch.zeros_like(s_c)
    s_c = torch.where(valid, s_c, zero)
    t_c = torch.where(valid, floor_teacher(t_c), zero)  # choice 3: teacher floor
    weights = candidate_weights(s_c, t_c, valid, weight_mode,
                                renormalise=strategy != "union-intersection")
    rewards = torch.where(valid, -(s_c - t_c) * weights, zero)
    d = TopkDetails(ids, rewards, valid, weights, s_c, t_c)
    return append_tail(d, weight_mode, strategy != "union-intersection") if tail_bucket else d


def log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / temperature) in ``compute_dtype(logits.dtype)``; [..., V] -> [..., V]."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite float > 0, got {temperature!r}")
    return F.log_softmax(logits.to(compute_dtype(logits.dtype)) / temperature, dim=-1)


def topk_rewards(student_logits: torch.Tensor, teacher_logits: torch.Tensor, top_k: int, strategy: str,
                 weight_mode: str, student_temperature: float = 1.0, teacher_temperature: float = 1.0,
                 tokens: Optional[torch.Tensor] = None, tail_bucket: bool = False) -> TopkRewards:
    """Per-candidate OPD rewards from full logits.

    Args:
        student_logits, teacher_logits: [..., V] (same shape; any float dtype).
        top_k: k >= 0; 0 = sampled-token OPD (needs ``tokens``).
        strategy: one of ``STRATEGIES``; weight_mode: one of ``WEIGHT_MODES``.
        student_temperature, teacher_temperature: T_s, T_t > 0.
        tokens: [...] long sampled ids (only used when top_k = 0).
        tail_bucket: append the tail-bucket candidate (module docstring); M grows by one.
    Returns:
        ``TopkRewards(ids [..., M] long, rewards [..., M] float, valid [..., M] bool)`` with
        M = k (only_stu, only_tch, intersection), 2k (union, union-intersection), 1 (top_k=0).
        rewards_c = -(S[c] - max(T[c], LOGP_FLOOR)) * w_c at valid candidates, 0 elsewhere.
    """
    check_names(strategy, weight_mode)
    S = log_probs(student_logits, student_temperature)
    T = log_probs(teacher_logits, teacher_temperature).to(S.dtype)
    d = topk_details(S, T, top_k, strategy, weight_mode, tokens, tail_bucket)
    return TopkRewards(d.ids, d.rewards, d.valid)
