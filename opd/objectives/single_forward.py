r"""Score and back-propagate from ONE student forward, when the old policy is the current one.

When every rollout batch gets exactly one optimiser step (``ppo_epochs == 1``, one mini-batch),
the policy that is updated is the policy that sampled the batch, so logp_old = logp_new: the PPO
ratio r = exp(logp_new - logp_old) is exactly 1, clipping is inactive, and the gradient of the
vanilla loss is that of  sum_t W_t sum_c -A_tc logp_new(c | t)  (the paper's on-policy
objective).  The scoring forward's student half then duplicates the update's, so
``score_and_backward`` takes the student's hidden states from the update's forward (in the
autograd graph) and, for each chunk of at most ``chunk_size`` response tokens,

1. S = log_softmax(h W_s^T / T_s) and T = log_softmax(h_t W_t^T / T_t) (``chunk_sources``:
   ``ChunkLogProbs`` of the logits, outside autograd);
2. forms candidates, validity, rewards and mechanism statistics with ``score_chunk``, as
   ``score_tokens`` does; old_logp = S at the candidates (so every ratio is exactly 1);
3. gets the chunk's advantages from ``advantage_fn``;
4. computes the chunk's policy loss (+ KL) and its gradients as ``policy_loss_backward`` does,
   then one final backward through the model (``ChunkedBackward``).

[C, V] tensors exist for one chunk only (the two logits, then the student's and the gradient).

Advantages chunk by chunk.  Chunks are taken position-major (every row at position l, then l + 1,
...), so a chunk covers a block of columns l0:l1 of the [B, L] grid.  ``advantage_fn(rewards
[B, w, M], valid [B, w, M], mask [B, w]) -> [B, w, M]`` is called on that block with everything
outside the chunk masked out.  That gives the whole-batch values of every *position-local*
estimator -- one whose A[b, l, c] depends only on rewards / valid / mask at (b, l) and on
per-sequence data of the whole batch (outcome, group ids): the names in
``POSITION_LOCAL_ESTIMATORS`` (``token_reward_direct``, ``grpo``,
``token_reward_direct_plus_grpo``; add a user estimator's name if it is position-local).
``estimator_fn`` wraps a registered estimator, embedding a micro-batch's rows in the whole batch
so that ``grpo``'s group statistics are those of the whole batch.

    >>> fn = estimator_fn(ADV_ESTIMATORS.get(cfg.adv_estimator), outcome, group_ids, cfg, rows=idx)
    >>> scored, adv, stats = score_and_backward(h_s, W_s, h_t, W_t, tokens, mask, fn, cfg)

Tests: ``tests/test_single_forward.py`` (same losses, gradients and metrics as
``score_tokens`` + estimator + ``policy_loss_backward``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

from .chunked import ChunkedBackward, Scored, ScoreStore, check_shapes, check_teacher, chunk_sources, score_chunk

if TYPE_CHECKING:
    from .config import OPDConfig

#: Estimators whose values at a position need only that position and per-sequence data.
POSITION_LOCAL_ESTIMATORS = {"token_reward_direct", "grpo", "token_reward_direct_plus_grpo"}

AdvantageFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def estimator_fn(estimator: Callable, outcome: Optional[torch.Tensor], group_ids: Optional[torch.Tensor],
                 cfg: "OPDConfig", rows: Optional[torch.Tensor] = None) -> AdvantageFn:
    """``advantage_fn`` for ``score_and_backward`` from a registered estimator.

    outcome, group_ids [N] of the whole batch; ``rows`` [B] long: which of the N sequences the
    hidden states passed to ``score_and_backward`` are (None: all N, in order).  The block is
    scattered into [N, w, M] zeros (mask False elsewhere) so per-sequence statistics are the
    whole batch's; the estimator's values at ``rows`` are returned.
    """
    def fn(rewards: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if rows is None or outcome is None:
            return estimator(rewards, valid, mask, outcome, group_ids, cfg)
        n = outcome.shape[0]
        full_r = rewards.new_zeros((n,) + tuple(rewards.shape[1:]))
        full_v = valid.new_zeros((n,) + tuple(valid.shape[1:]))
        full_m = mask.new_zeros((n,) + tuple(mask.shape[1:]))
        full_r[rows], full_v[rows], full_m[rows] = rewards, valid, mask
        return estimator(full_r, full_v, full_m, outcome, group_ids, cfg)[rows]
    return fn


def _position_major(response_mask: torch.Tensor) -> torch.Tensor:
    """Row-major flat indices b * L + l of the response positions, ordered by (l, b)."""
    B, L = response_mask.shape
    j = (response_mask.t().reshape(-1) > 0).nonzero().squeeze(1)     # j = l * B + b
    return (j % B) * L + torch.div(j, B, rounding_mode="floor")


def score_and_backward(student_hidden: torch.Tensor, student_head: torch.Tensor,
                       teacher_hidden: Optional[torch.Tensor], teacher_head: Optional[torch.Tensor],
                       tokens: torch.Tensor, response_mask: torch.Tensor, advantage_fn: AdvantageFn,
                       cfg: "OPDConfig", chunk_size: Optional[int] = None,
                       ref_logp: Optional[torch.Tensor] = None,
                       loss_scale: float = 1.0) -> tuple[Scored, torch.Tensor, dict[str, float]]:
    """Score, estimate advantages and back-propagate the policy loss in one chunked pass.

    Args:
        student_hidden [B,L,H] (in the model's autograd graph), student_head [V,H];
        teacher_hidden [B,L,Ht] / teacher_head [V,Ht] (both None: no teacher, as GRPO);
        tokens [B,L] long, response_mask [B,L]; advantage_fn: see the module doc
        (``estimator_fn``); chunk_size (default ``cfg.chunk_size``); ref_logp [B,L] (needed
        when ``cfg.use_kl_loss``); loss_scale: the loss is multiplied by it before backward.
    Returns ``(scored, advantages [B,L,M], stats)``: ``scored`` as ``score_tokens`` would give
    for the same hidden states, with old_logp = the current log-probs; the advantages
    ``advantage_fn`` gave; the float stats of ``policy_loss_backward`` (ratio 1: clipfrac 0).
    """
    chunk_size = cfg.chunk_size if chunk_size is None else chunk_size
    check_shapes(student_hidden, student_head, tokens, response_mask, chunk_size)
    with_teacher = check_teacher(student_hidden, student_head, teacher_hidden, teacher_head)
    run = ChunkedBackward(student_hidden, student_head, tokens, response_mask, cfg, ref_logp, loss_scale)
    B, L, _ = student_hidden.shape
    M = cfg.num_candidates if with_teacher else 1
    store = ScoreStore(B, L, M, run.dtype, student_hidden.device, with_teacher)
    ht = teacher_hidden.reshape(run.n, -1) if with_teacher else None
    index = _position_major(response_mask)
    cols = (index % L).cpu()                  # the column bounds of each chunk, read once
    for start in range(0, index.numel(), chunk_size):
        sel = index[start:start + chunk_size]
        h = run.h_flat[sel]
        S, T = chunk_sources(h, student_head, ht[sel] if with_teacher else None, teacher_head, cfg, run.dtype)
        cand, tl, stats = score_chunk(S, T, run.toks[sel], cfg)
        del T
        store.put(sel, cand, tl, stats)
        c_ids, c_valid, c_rew, c_old = cand
        # the chunk's advantages, from the block of columns it spans (position-major: l rises)
        b, l = torch.div(sel, L, rounding_mode="floor"), sel % L
        l0 = int(cols[start])
        w = int(cols[min(start + chunk_size, index.numel()) - 1]) - l0 + 1
        blk_r = torch.zeros(B, w, M, dtype=run.dtype, device=sel.device)
        blk_v = torch.zeros(B, w, M, dtype=torch.bool, device=sel.device)
        blk_m = torch.zeros(B, w, dtype=torch.bool, device=sel.device)
        blk_r[b, l - l0], blk_v[b, l - l0], blk_m[b, l - l0] = c_rew, c_valid, True
        a = advantage_fn(blk_r, blk_v, blk_m)[b, l - l0].to(run.dtype)
        store.adv[sel] = a
        run.backward(sel, h, S, c_ids, c_old, a, c_valid, c_valid)
        del S
    out = run.finish(index.numel(), M)
    return store.scored(), store.adv.view(B, L, M), out
