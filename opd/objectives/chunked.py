r"""Memory-bounded OPD scoring and policy-loss backward from hidden states (no [B, L, V] logits).

The trainer passes final hidden states (position t predicts ``tokens[:, t]``) and LM-head
weights.  Only response positions (``response_mask > 0``) are processed, at most ``chunk_size``
at a time; the logits z = h W^T exist for one chunk only, read through
``opd.objectives.logprobs.ChunkLogProbs`` (on CUDA one fused pass per model and chunk).

One scoring function, ``score_chunk``, serves every path: per chunk it forms
S = log_softmax(z_s / T_s) and T = log_softmax(z_t / T_t), then ``topk_details`` (candidates,
validity, rewards -- identical to ``topk_rewards`` on the full logits) and
``token_mechanism_stats``.  Without a teacher (plain GRPO) the single candidate is the sampled
token, rewards are 0 and only the student entropy is reported.

The backward (``ChunkedBackward``) never builds an autograd graph of vocabulary width: per chunk
the loss

    sum_t W_t * (token_loss_t + kl_coef * kl_t)        W = token_weights(response_mask, agg mode)

(``loss_scale`` x that) is a function of S at a few ids only (the candidates and, for the KL,
the sampled token), so autograd runs on those [C, M] values; the logits' gradient is then
``ChunkLogProbs.softmax_grad`` (log_softmax's backward written out), and the hidden-row and
head gradients are two matmuls, G W and G^T h.  The hidden-row gradients are scattered into a
[B, L, H] buffer, the head's accumulate in one [V, H] buffer, and a final
``torch.autograd.backward([student_hidden, student_head], [grad_hidden, grad_head])`` sends them
through the model in ONE pass (tied embeddings and non-leaf heads work).  Since the chunk losses
sum to the full aggregated loss, the gradients equal those of the non-chunked reference.

    >>> scored = score_tokens(h_s, lm_head.weight, h_t, t_head.weight, tokens, mask, cfg, cfg.chunk_size)
    >>> adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(scored.rewards, scored.valid, mask, outcome, gids, cfg)
    >>> stats = policy_loss_backward(h_s, lm_head.weight, tokens, mask, scored, adv, cfg, cfg.chunk_size)

With one optimiser step per rollout batch, ``opd.objectives.single_forward.score_and_backward``
does both in one pass from the update's own forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from .logprobs import ChunkLogProbs
from .losses import TOKEN_LOSSES, candidate_mask, kl_penalty, token_weights
from .mechanism import token_mechanism_stats
from .topk import TAIL_ID, compute_dtype, topk_details, with_tail

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


def chunk_logits(hidden_rows: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """hidden_rows [C, H] @ head [V, H]^T in the head's dtype (as an HF lm_head): [C, V], outside
    autograd (the backward writes the logits' gradient itself; a graph through them would keep
    every chunk's logits alive, since ``gather`` saves its input)."""
    return torch.matmul(hidden_rows.detach().to(head.dtype), head.detach().t())


def chunk_log_probs(hidden_rows: torch.Tensor, head: torch.Tensor, temperature: float,
                    dtype: torch.dtype) -> torch.Tensor:
    """log_softmax((hidden_rows [C,H] @ head[V,H]^T) / temperature) as ``dtype`` [C, V], in full."""
    z = chunk_logits(hidden_rows, head).to(dtype)
    if temperature != 1.0:
        z = z / temperature
    return F.log_softmax(z, dim=-1)


def response_index(response_mask: torch.Tensor) -> torch.Tensor:
    """Flat indices b * L + l of the response positions, row-major [n_response] long."""
    return (response_mask.reshape(-1) > 0).nonzero().squeeze(1)


def check_shapes(student_hidden: torch.Tensor, student_head: torch.Tensor, tokens: torch.Tensor,
                 response_mask: torch.Tensor, chunk_size: int) -> None:
    """Raise ``ValueError`` naming the argument whose shape does not fit."""
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


def check_teacher(student_hidden, student_head, teacher_hidden, teacher_head) -> bool:
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


def chunk_sources(hs_rows: torch.Tensor, student_head: torch.Tensor, ht_rows: Optional[torch.Tensor],
                  teacher_head: Optional[torch.Tensor], cfg: "OPDConfig", dtype: torch.dtype):
    """(S, T or None): ``ChunkLogProbs`` of the student's and the teacher's logits of one chunk,
    scored for the top-k that ``score_chunk`` will ask (``cfg.stats_k``; 0 without a teacher)."""
    k = cfg.stats_k if ht_rows is not None else 0
    S = ChunkLogProbs(chunk_logits(hs_rows, student_head), cfg.student_temperature, dtype, k)
    if ht_rows is None:
        return S, None
    return S, ChunkLogProbs(chunk_logits(ht_rows, teacher_head), cfg.teacher_temperature, dtype, k)


def score_chunk(S: ChunkLogProbs, T: Optional[ChunkLogProbs], tok: torch.Tensor, cfg: "OPDConfig"):
    """The scoring of one chunk (every path runs this): ``(ids, valid, rewards, old_logp)`` [C, M],
    ``token_logp`` [C] and the statistics name -> [C]."""
    tl = S.at(tok[:, None])[:, 0]
    stats = {"student_entropy": S.entropy()}
    if T is not None:
        d = topk_details(S, T, cfg.top_k, cfg.strategy, cfg.weight_mode, tok, cfg.tail_bucket)
        stats.update(token_mechanism_stats(S, T, cfg.stats_k, entropies=False))
        stats["reward"] = d.rewards.sum(-1)
        stats["teacher_entropy"] = T.entropy()
        return (d.ids, d.valid, d.rewards, d.student_logp), tl, stats
    ok = torch.isfinite(tl)
    old = torch.where(ok, tl, torch.zeros_like(tl))[:, None]
    return (tok[:, None], ok[:, None], torch.zeros_like(old), old), tl, stats


class ScoreStore:
    """The [B*L]-row buffers of a ``Scored`` (and advantages), filled chunk by chunk."""

    def __init__(self, B: int, L: int, M: int, dtype: torch.dtype, device, with_teacher: bool):
        n = B * L
        self.B, self.L, self.M, self.with_teacher = B, L, M, with_teacher
        self.ids = torch.zeros(n, M, dtype=torch.long, device=device)
        self.valid = torch.zeros(n, M, dtype=torch.bool, device=device)
        self.rewards, self.old_logp, self.adv = (torch.zeros(n, M, dtype=dtype, device=device) for _ in range(3))
        self.token_logp = torch.zeros(n, dtype=dtype, device=device)
        self.stats: dict[str, torch.Tensor] = {}

    def put(self, sel: torch.Tensor, cand, token_logp: torch.Tensor, stats: dict) -> None:
        """Write ``score_chunk``'s output for the flat positions ``sel``."""
        self.ids[sel], self.valid[sel], self.rewards[sel], self.old_logp[sel] = cand
        self.token_logp[sel] = token_logp
        for name, v in stats.items():
            if name not in self.stats:
                self.stats[name] = torch.zeros(self.ids.shape[0], dtype=torch.float32, device=self.ids.device)
            self.stats[name][sel] = v.float()

    def scored(self) -> Scored:
        B, L, M = self.B, self.L, self.M
        stats = self.stats or {k: torch.zeros(B * L, dtype=torch.float32, device=self.ids.device)
                               for k in stat_names(self.with_teacher)}   # empty batch: a stable key set
        return Scored(self.ids.view(B, L, M), self.valid.view(B, L, M), self.rewards.view(B, L, M),
                      self.old_logp.view(B, L, M), self.token_logp.view(B, L),
                      {k: v.view(B, L) for k, v in stats.items()})


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
    check_shapes(student_hidden, student_head, tokens, response_mask, chunk_size)
    B, L, H = student_hidden.shape
    with_teacher = check_teacher(student_hidden, student_head, teacher_hidden, teacher_head)
    dtype = compute_dtype(student_hidden.dtype)
    store = ScoreStore(B, L, cfg.num_candidates if with_teacher else 1, dtype, student_hidden.device, with_teacher)
    hs = student_hidden.reshape(B * L, H)
    ht = teacher_hidden.reshape(B * L, -1) if with_teacher else None
    toks = tokens.reshape(-1).long()
    index = response_index(response_mask)
    for start in range(0, index.numel(), chunk_size):
        sel = index[start:start + chunk_size]
        S, T = chunk_sources(hs[sel], student_head, ht[sel] if with_teacher else None, teacher_head, cfg, dtype)
        store.put(sel, *score_chunk(S, T, toks[sel], cfg))
        del S, T
    return store.scored()


class ChunkedBackward:
    """The chunked backward (module doc): per chunk the loss on S at the candidates and its
    gradient through ``softmax_grad``; the running sums; one final backward into the model."""

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
        self.need_h, self.need_head = student_hidden.requires_grad, student_head.requires_grad
        self.grad_h = torch.zeros_like(self.h_flat) if self.need_h else None
        self.grad_head = torch.zeros_like(student_head, memory_format=torch.contiguous_format) if self.need_head else None
        self.zero = torch.zeros((), dtype=torch.float64, device=self.h_flat.device)
        self.pg_sum, self.kl_sum = self.zero.clone(), self.zero.clone()   # no host sync per chunk
        self.cand_sums: dict[str, torch.Tensor] = {}
        self.n_cand = self.zero.clone()

    def student(self, sel: torch.Tensor, k: int = 0) -> tuple[torch.Tensor, ChunkLogProbs]:
        """(hidden rows [C, H], the student's ``ChunkLogProbs`` of the chunk ``sel``)."""
        h = self.h_flat[sel]
        return h, ChunkLogProbs(chunk_logits(h, self.head), self.cfg.student_temperature, self.dtype, k)

    def backward(self, sel, h, S: ChunkLogProbs, ids, old, adv, valid, cand_mask) -> None:
        """Loss of one chunk (candidates ``ids`` [C,M], hidden rows ``h`` [C,H]) and its gradients."""
        cfg = self.cfg
        tail = cfg.tail_bucket and ids.shape[-1] == cfg.num_candidates > 1
        real = torch.where(ids == TAIL_ID, torch.zeros_like(ids), ids) if tail else ids
        leaves = [S.at(real).detach().requires_grad_(True)]
        gids = [real]
        w = self.W[sel]
        with torch.enable_grad():
            lp = with_tail(leaves[0], valid) if tail else leaves[0]
            tok_loss, cst = self.token_fn(lp, old, adv, valid, cfg)
            pg = (tok_loss * w).sum()
            total = pg
            if cfg.use_kl_loss:
                tok = self.toks[sel][:, None]
                leaves.append(S.at(tok).detach().requires_grad_(True))
                gids.append(tok)
                kl = (kl_penalty(leaves[1][:, 0], self.ref[sel], cfg.kl_loss_type) * w).sum()
                total = pg + cfg.kl_loss_coef * kl
                self.kl_sum += kl.detach().double()
            if self.need_h or self.need_head:
                grads = torch.autograd.grad(total * self.loss_scale, leaves, allow_unused=True)
        if self.need_h or self.need_head:
            g = torch.cat([torch.zeros_like(x) if gx is None else gx for x, gx in zip(leaves, grads)], -1)
            G = S.softmax_grad(torch.cat(gids, -1), g.detach(), self.head.dtype)
            if self.need_h:
                self.grad_h.index_copy_(0, sel, torch.matmul(G, self.head.detach()).to(self.grad_h.dtype))
            if self.need_head:
                self.grad_head.addmm_(G.t(), h.to(self.head.dtype))
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
        if self.need_head:
            roots.append(self.head)
            grads.append(self.grad_head)
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
    check_shapes(student_hidden, student_head, tokens, response_mask, chunk_size)
    if advantages.shape != scored.ids.shape:
        raise ValueError(f"advantages {tuple(advantages.shape)} must match scored.ids {tuple(scored.ids.shape)}")
    run = ChunkedBackward(student_hidden, student_head, tokens, response_mask, cfg, ref_logp, loss_scale)
    n, M = run.n, scored.ids.shape[-1]
    ids, valid = scored.ids.reshape(n, M), scored.valid.reshape(n, M)
    old, adv = scored.old_logp.reshape(n, M).to(run.dtype), advantages.reshape(n, M).to(run.dtype)
    cand_mask = candidate_mask(scored.valid, response_mask).reshape(n, M)
    index = response_index(response_mask)
    for start in range(0, index.numel(), chunk_size):
        sel = index[start:start + chunk_size]
        h, S = run.student(sel)
        run.backward(sel, h, S, ids[sel], old[sel], adv[sel], valid[sel], cand_mask[sel])
        del S
    return run.finish(index.numel(), M)
