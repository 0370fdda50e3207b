r"""Memory-bounded OPD scoring and policy-loss backward from hidden states (no [B, L, V] logits).

The trainer passes final hidden states (position t predicts ``tokens[:, t]``) and LM-head
weights.  Only response positions (``response_mask > 0``) are processed, at most ``chunk_size``
at a time; fp32 logits / log-probs exist for one chunk only.

``score_tokens`` (no grad):  per chunk S = log_softmax(h_s W_s^T / T_s), T = log_softmax(h_t W_t^T / T_t),
then ``topk_details`` (candidates, validity, rewards -- identical to ``topk_rewards`` on the full
logits) and ``token_mechanism_stats``.  Without a teacher (plain GRPO) the single candidate is
the sampled token, rewards are 0 and only the student entropy is reported.

``policy_loss_backward``:  per chunk, on a detached copy h of the hidden rows (leaf) and a
detached leaf copy of the head,  logp_new = log_softmax(h W^T / T_s)[ids],  chunk loss

    sum_t W_t * (token_loss_t + kl_coef * kl_t)        W = token_weights(response_mask, agg mode)

(``loss_scale`` x that) is back-propagated; the hidden-row gradients are scattered into a
[B, L, H] buffer and the head gradients accumulate on the head copy.  A final
``torch.autograd.backward([student_hidden, student_head], [grad_hidden, grad_head])`` sends them
through the model in ONE pass (tied embeddings and non-leaf heads work; DDP-style hooks fire
once).  Since sum over chunks of the chunk losses equals the full aggregated loss, the
gradients equal those of the non-chunked reference.

    >>> scored = score_tokens(h_s, lm_head.weight, h_t, t_head.weight, tokens, mask, cfg, cfg.chunk_size)
    >>> adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(scored.rewards, scored.valid, mask, outcome, gids, cfg)
    >>> stats = policy_loss_backward(h_s, lm_head.weight, tokens, mask, scored, adv, cfg, cfg.chunk_size)

With one optimiser step per rollout batch, ``opd.objectives.single_forward.score_and_backward``
does both in one pass from the update's own forward (``ChunkedBackward`` holds the backward
bookkeeping the two share).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from .losses import TOKEN_LOSSES, candidate_mask, kl_penalty, token_weights
from .mechanism import entropy_from_logp, token_mechanism_stats
from .topk import candidate_logp, compute_dtype, topk_details

if TYPE_CHECKING:
    from .config import OPDConfig


@dataclass
class Scored:
    """Output of ``score_tokens``; off-response positions hold ids 0, valid False, zeros.

    ids [B,L,M] long, valid [B,L,M] bool, rewards [B,L,M] and old_logp [B,L,M] (= S at ids, 0 where
    invalid) in float32 (float64 for float64 hidden states), token_logp [B,L] (S at the sampled
    token, raw: may be -inf if the student gave it zero probability), stats: name -> [B,L] float32.
    """

    ids: torch.Tensor
    valid: torch.Tensor
    rewards: torch.Tensor
    old_logp: torch.Tensor
    token_logp: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


def chunk_log_probs(hidden_rows: torch.Tensor, head: torch.Tensor, temperature: float,
                    dtype: torch.dtype) -> torch.Tensor:
    """log_softmax((hidden_rows [C,H] @ head[V,H]^T) / temperature) as ``dtype`` [C, V].

    The matmul runs in the head's dtype (as an HF lm_head would); the upcast logits are divided
    by the temperature and normalised in ``dtype``.
    """
    z = torch.matmul(hidden_rows.to(head.dtype), head.t()).to(dtype)
    if temperature != 1.0:
        z = z / temperature
    return F.log_softmax(z, dim=-1)


def _response_index(response_mask: torch.Tensor) -> torch.Tensor:
    return (response_mask.reshape(-1) > 0).nonzero().squeeze(1)


def _check(student_hidden: torch.Tensor, student_head: torch.Tensor, tokens: torch.Tensor,
           response_mask: torch.Tensor, chunk_size: int) -> None:
    if student_hidden.dim() != 3:
        raise ValueError(f"student_hidden must be [B, L, H], got {tuple(student_hidden.shape)}")
    B, L, H = student_hidden.shape
    if student_head.dim() != 2 or student_head.shape[1] != H:
        raise ValueError(f"student_head must be [V, {H}], got {tuple(student_head.shape)}")
    if tuple(tokens.shape) != (B, L) or tuple(response_mask.shape) != (B, L):
        raise ValueError(f"tokens {tuple(tokens.shape)} and response_mask {tuple(response_mask.shape)} "
                         f"must be [{B}, {L}]")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def _check_teacher(student_hidden, student_head, teacher_hidden, teacher_head) -> bool:
    """Whether a teacher is given; raises when its hidden states or head do not fit the student's."""
    if (teacher_hidden is None) != (teacher_head is None):
        raise ValueError("pass both teacher_hidden and teacher_head, or neither")
    if teacher_hidden is None:
        return False
    B, L = student_hidden.shape[:2]
    if teacher_hidden.shape[:2] != student_hidden.shape[:2] or teacher_head.shape[1] != teacher_hidden.shape[2]:
        raise ValueError(f"teacher_hidden {tuple(teacher_hidden.shape)} / teacher_head "
                         f"{tuple(teacher_head.shape)} do not match [B={B}, L={L}, Ht] / [V, Ht]")
    if teacher_head.shape[0] != student_head.shape[0]:
        raise ValueError(f"student and teacher vocabularies differ: {student_head.shape[0]} vs "
                         f"{teacher_head.shape[0]} (slice the heads to a common vocabulary)")
    return True


def stat_names(with_teacher: bool) -> list[str]:
    """The per-token statistic names of ``Scored.stats`` (the key set of an empty batch)."""
    if not with_teacher:
        return ["student_entropy"]
    return list(token_mechanism_stats(torch.zeros(1, 2), torch.zeros(1, 2), 1)) + ["reward"]


@torch.no_grad()
def score_tokens(student_hidden: torch.Tensor, student_head: torch.Tensor,
                 teacher_hidden: Optional[torch.Tensor], teacher_head: Optional[torch.Tensor],
                 tokens: torch.Tensor, response_mask: torch.Tensor, cfg: "OPDConfig",
                 chunk_size: Optional[int] = None) -> Scored:
    """Score response tokens chunk by chunk; returns ``Scored`` (see class doc).

    Args:
        student_hidden [B,L,H], student_head [V,H]; teacher_hidden [B,L,Ht] / teacher_head [V,Ht]
        (both None: no teacher); tokens [B,L] long; response_mask [B,L]; chunk_size: max response
        positions per chunk (default ``cfg.chunk_size``).
    Values at response positions equal ``topk_rewards(h_s W_s^T, h_t W_t^T, cfg...)``.
    """
    chunk_size = cfg.chunk_size if chunk_size is None else chunk_size
    _check(student_hidden, student_head, tokens, response_mask, chunk_size)
    B, L, H = student_hidden.shape
    with_teacher = _check_teacher(student_hidden, student_head, teacher_hidden, teacher_head)
    dev, dtype = student_hidden.device, compute_dtype(student_hidden.dtype)
    M = cfg.num_candidates if with_teacher else 1
    n = B * L
    ids = torch.zeros(n, M, dtype=torch.long, device=dev)
    valid = torch.zeros(n, M, dtype=torch.bool, device=dev)
    rewards = torch.zeros(n, M, dtype=dtype, device=dev)
    old_logp = torch.zeros(n, M, dtype=dtype, device=dev)
    token_logp = torch.zeros(n, dtype=dtype, device=dev)
    stats: dict[str, torch.Tensor] = {}
    hs = student_hidden.reshape(n, H)
    ht = teacher_hidden.reshape(n, -1) if with_teacher else None
    toks = tokens.reshape(n).long()
    metrics_k = cfg.top_k if cfg.top_k > 0 else cfg.metrics_k
    index = _response_index(response_mask)
    for start in range(0, index.numel(), chunk_size):
        sel = index[start:start + chunk_size]
        tok = toks[sel]
        # order chosen so that at most two [C, V] log-prob tensors (+ temporaries) are alive
        S = chunk_log_probs(hs[sel], student_head, cfg.student_temperature, dtype)
        tl = S.gather(-1, tok[:, None]).squeeze(-1)
        token_logp[sel] = tl
        st = {"student_entropy": entropy_from_logp(S)}
        if with_teacher:
            T = chunk_log_probs(ht[sel], teacher_head, cfg.teacher_temperature, dtype)
            d = topk_details(S, T, cfg.top_k, cfg.strategy, cfg.weight_mode, tok, cfg.tail_bucket)
            ids[sel], valid[sel], rewards[sel], old_logp[sel] = d.ids, d.valid, d.rewards, d.student_logp
            st.update(token_mechanism_stats(S, T, metrics_k, entropies=False))
            st["reward"] = d.rewards.sum(-1)
            del S, d
            st["teacher_entropy"] = entropy_from_logp(T)
            del T
        else:
            ok = torch.isfinite(tl)
            ids[sel] = tok[:, None]
            valid[sel] = ok[:, None]
            old_logp[sel] = torch.where(ok, tl, torch.zeros_like(tl))[:, None]
            del S
        for name, v in st.items():
            if name not in stats:
                stats[name] = torch.zeros(n, dtype=torch.float32, device=dev)
            stats[name][sel] = v.float()
    if index.numel() == 0:  # keep the key set stable for empty batches
        stats = {k: torch.zeros(n, dtype=torch.float32, device=dev) for k in stat_names(with_teacher)}
    return Scored(ids.view(B, L, M), valid.view(B, L, M), rewards.view(B, L, M), old_logp.view(B, L, M),
                  token_logp.view(B, L), {k: v.view(B, L) for k, v in stats.items()})


class ChunkedBackward:
    """Bookkeeping shared by the chunked backward passes: leaf copies of the hidden rows and the
    head, the per-chunk loss ``sum_t W_t (token_loss_t + kl_coef kl_t)`` and its backward, the
    scattered hidden-row gradients, the running sums, and the one final backward into the model."""

    def __init__(self, student_hidden, student_head, tokens, response_mask, cfg, ref_logp, loss_scale):
        if cfg.use_kl_loss and ref_logp is None:
            raise ValueError("cfg.use_kl_loss is True but ref_logp is None")
        B, L, H = student_hidden.shape
        self.cfg, self.loss_scale, self.n = cfg, loss_scale, B * L
        self.token_fn = TOKEN_LOSSES.get(cfg.policy_loss)
        self.hidden, self.head = student_hidden, student_head
        self.dtype = compute_dtype(student_hidden.dtype)
        self.W = token_weights(response_mask, cfg.loss_agg_mode, cfg.loss_scale_factor, dtype=self.dtype).reshape(-1)
        self.toks = tokens.reshape(-1).long()
        self.ref = ref_logp.reshape(-1).to(self.dtype) if ref_logp is not None else None
        self.h_flat = student_hidden.detach().reshape(self.n, H)
        self.head_leaf = student_head.detach().requires_grad_(student_head.requires_grad)
        self.need_h = student_hidden.requires_grad
        self.grad_h = torch.zeros_like(self.h_flat) if self.need_h else None
        self.zero = torch.zeros((), dtype=torch.float64, device=self.h_flat.device)
        self.pg_sum, self.kl_sum = self.zero.clone(), self.zero.clone()   # no host sync per chunk
        self.cand_sums: dict[str, torch.Tensor] = {}
        self.n_cand = self.zero.clone()

    def log_probs(self, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(leaf hidden rows h [C,H], log_softmax(h W^T / T_s) [C,V] in the autograd graph)."""
        h = self.h_flat[sel].requires_grad_(self.need_h)           # fresh leaf (advanced indexing copies)
        return h, chunk_log_probs(h, self.head_leaf, self.cfg.student_temperature, self.dtype)

    def backward(self, sel, h, logp, ids, old, adv, valid, cand_mask) -> None:
        """Loss of one chunk (candidates ``ids`` [C,M]) and its backward; frees nothing itself."""
        cfg = self.cfg
        tok_loss, cst = self.token_fn(candidate_logp(logp, ids, valid), old, adv, valid, cfg)
        w = self.W[sel]
        pg = (tok_loss * w).sum()
        total = pg
        if cfg.use_kl_loss:
            tl = logp.gather(-1, self.toks[sel][:, None]).squeeze(-1)
            kl = (kl_penalty(tl, self.ref[sel], cfg.kl_loss_type) * w).sum()
            total = pg + cfg.kl_loss_coef * kl
            self.kl_sum += kl.detach().double()
        if total.requires_grad:
            (total * self.loss_scale).backward()
        if self.need_h and h.grad is not None:
            self.grad_h.index_copy_(0, sel, h.grad)
        self.pg_sum += pg.detach().double()
        self.n_cand += cand_mask.sum()
        for k, v in cst.items():
            self.cand_sums[k] = self.cand_sums.get(k, self.zero) + (v.detach().double() * cand_mask).sum()

    def finish(self, n_tokens: int, M: int) -> dict[str, float]:
        """Send the gathered gradients through the model in one backward; the float stats."""
        roots, grads = [], []
        if self.need_h:
            roots.append(self.hidden)
            grads.append(self.grad_h.view_as(self.hidden))
        if self.head.requires_grad and self.head_leaf.grad is not None:
            roots.append(self.head)
            grads.append(self.head_leaf.grad)
        if roots:
            torch.autograd.backward(roots, grads)
        cand_sums = self.cand_sums
        if not cand_sums:  # no response tokens: report the loss's stat keys as 0
            z = torch.zeros(0, M, dtype=self.dtype)
            cand_sums = {k: self.zero for k in self.token_fn(z, z, z, z.bool(), self.cfg)[1]}
        n_cand = max(int(self.n_cand), 1)
        pg_f, kl_f = float(self.pg_sum), float(self.kl_sum)
        out = {"loss": pg_f + (self.cfg.kl_loss_coef * kl_f if self.cfg.use_kl_loss else 0.0),
               "pg_loss": pg_f, "kl_loss": kl_f, "n_tokens": float(n_tokens)}
        out.update({k: float(v) / n_cand for k, v in cand_sums.items()})
        return out


def policy_loss_backward(student_hidden: torch.Tensor, student_head: torch.Tensor, tokens: torch.Tensor,
                         response_mask: torch.Tensor, scored: Scored, advantages: torch.Tensor,
                         cfg: "OPDConfig", chunk_size: Optional[int] = None,
                         ref_logp: Optional[torch.Tensor] = None, loss_scale: float = 1.0) -> dict[str, float]:
    """Chunked policy-loss (+ optional KL) forward and backward; returns float stats.

    Args:
        student_hidden [B,L,H] (in the model's autograd graph), student_head [V,H] (parameter,
        possibly tied), tokens [B,L], response_mask [B,L], scored: from ``score_tokens``,
        advantages [B,L,M], chunk_size (default ``cfg.chunk_size``), ref_logp [B,L] reference
        log-prob of the sampled token (required when ``cfg.use_kl_loss``), loss_scale: the
        loss is multiplied by it before backward (gradient accumulation).
    Loss = agg(token_loss) + [use_kl_loss] kl_loss_coef * agg(kl_penalty(logp_new[y], ref_logp)).
    Returns {"loss", "pg_loss", "kl_loss", "clipfrac", "pg_clipfrac_lower", "ppo_kl", "n_tokens"}
    (losses unscaled; candidate stats averaged over valid response candidates).
    """
    chunk_size = cfg.chunk_size if chunk_size is None else chunk_size
    _check(student_hidden, student_head, tokens, response_mask, chunk_size)
    if advantages.shape != scored.ids.shape:
        raise ValueError(f"advantages {tuple(advantages.shape)} must match scored.ids {tuple(scored.ids.shape)}")
    run = ChunkedBackward(student_hidden, student_head, tokens, response_mask, cfg, ref_logp, loss_scale)
    n, M = run.n, scored.ids.shape[-1]
    ids, valid = scored.ids.reshape(n, M), scored.valid.reshape(n, M)
    old, adv = scored.old_logp.reshape(n, M).to(run.dtype), advantages.reshape(n, M).to(run.dtype)
    cand_mask = candidate_mask(scored.valid, response_mask).reshape(n, M)
    index = _response_index(response_mask)
    for start in range(0, index.numel(), chunk_size):
        sel = index[start:start + chunk_size]
        h, logp = run.log_probs(sel)
        run.backward(sel, h, logp, ids[sel], old[sel], adv[sel], valid[sel], cand_mask[sel])
        del logp
    return run.finish(index.numel(), M)
