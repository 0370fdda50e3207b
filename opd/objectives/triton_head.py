r"""Triton kernels of the chunked top-k head: one read of the logits per model and chunk.

The chunked head (``opd.objectives.chunked``) holds the logits z [C, V] of one chunk of C
response positions (bf16 at Qwen3 scale: V = 151,936). Its cost beyond the ``lm_head`` matmuls
is the passes over z. With torch ops each statistic is a pass or more (an fp32 upcast, a
``log_softmax``, an entropy, and ``topk``, a multi-pass radix select), so the head ran at about
twice its floor. Here:

``row_stats(z, T, k)``: one pass over z per (row, segment of ``SEGMENT`` columns) computing, with
x = z / T in fp32, the running max m, s = sum exp(x - m), t = sum exp(x - m)(x - m) and the
top-k of x (a running list; a block is searched only where it holds values above the list's
minimum, and ties go to the lower id). Segments are merged on [C, segments * k] tensors:

    lse = m + log s,     entropy = log s - t / s,     top-k log-probs = top-k of x - lse

``softmax_grad_dense(z, T, lse, c)``: c_r * exp(z / T - lse_r), written once in the output dtype
(the dense part of ``ChunkLogProbs.softmax_grad``; the caller adds the sparse part).

Liger-Kernel's fused linear losses were the first thing to reach for, but their interface takes
a fixed loss of the full distribution (cross-entropy, JSD); the top-k candidate rewards, their
weights and the PPO ratio do not fit through it. ``torch.compile`` fuses the elementwise passes
but not ``topk``, which it leaves to the multi-pass ATen kernel.

Tested on the CPU through ``TRITON_INTERPRET=1`` against float64 references
(``tests/test_triton_head.py``); timed on a GPU by ``benchmarks/gpu_check.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

#: Columns per loaded block of ``row_stats`` and warps per program (``benchmarks/gpu_check.py
#: --tune-kernels`` times the alternatives on an H200).
BLOCK = 2048
NUM_WARPS = 4
#: ``row_stats`` splits rows into segments (one program each) until a launch has about this many
#: programs: each program's work is a chain of block reductions, so a launch needs many
#: programs in flight, but every segment refills its own top-k list.
TARGET_PROGRAMS = 4096
#: Smallest segment, in columns.
SEGMENT = 2048


@triton.jit
def _row_stats_kernel(z_ptr, stride, V, n_blocks, inv_t, m_ptr, s_ptr, t_ptr, val_ptr, idx_ptr,
                      n_seg, K: tl.constexpr, KP: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    seg = tl.program_id(1)
    base = z_ptr + row.to(tl.int64) * stride
    lo = seg * n_blocks * BLOCK
    offs = tl.arange(0, BLOCK)
    kk = tl.arange(0, KP)
    neg = float("-inf")
    m = tl.max(tl.full([BLOCK], neg, tl.float32), 0)
    s = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    t = tl.sum(tl.zeros([BLOCK], tl.float32), 0)
    # running top-k: slots >= K hold +inf so the minimum is always over the K real slots
    rv = tl.where(kk < K, neg, float("inf"))
    ri = tl.zeros([KP], tl.int32)
    thr = tl.min(rv, 0)
    # the next block is loaded before the current one is reduced, so its memory latency overlaps
    # the reductions (a while loop: Triton's interpreter cannot range() over a runtime bound)
    nxt = tl.load(base + lo + offs, mask=(lo + offs < V) & (n_blocks > 0), other=neg)
    i = 0
    while i < n_blocks:
        cols = lo + i * BLOCK + offs
        i += 1
        x = nxt.to(tl.float32) * inv_t
        ncols = cols + BLOCK
        nxt = tl.load(base + ncols, mask=(ncols < V) & (i < n_blocks), other=neg)
        v = tl.max(x, 0)                                   # the block's max, then the next candidate
        m_new = tl.maximum(m, v)
        shift = tl.where(m_new == neg, 0.0, m_new)
        alpha = tl.exp(m - shift)
        e = tl.exp(x - shift)
        d = tl.where(e > 0, x - shift, 0.0)
        # t' = sum e (x - m): rescale the old sum to the new max before adding the block's
        t = alpha * (t + tl.where(s > 0, s * (m - shift), 0.0)) + tl.sum(e * d, 0)
        s = alpha * s + tl.sum(e, 0)
        m = m_new
        if K > 0:
            while v > thr:                                 # the block still beats the list's minimum
                j = tl.min(tl.where(x == v, cols, 2147483647), 0)
                low = tl.min(rv, 0)
                out_id = tl.max(tl.where(rv == low, ri, -1), 0)      # evict the highest id of the lowest value
                slot = tl.min(tl.where((rv == low) & (ri == out_id), kk, KP), 0)
                rv = tl.where(kk == slot, v, rv)
                ri = tl.where(kk == slot, j, ri)
                thr = tl.min(rv, 0)
                x = tl.where(cols == j, neg, x)
                v = tl.max(x, 0)
    out = row * n_seg + seg
    tl.store(m_ptr + out, m)
    tl.store(s_ptr + out, s)
    tl.store(t_ptr + out, t)
    if K > 0:
        tl.store(val_ptr + out * K + kk, rv, mask=kk < K)
        tl.store(idx_ptr + out * K + kk, ri, mask=kk < K)


@triton.jit
def _softmax_grad_kernel(z_ptr, stride, V, inv_t, lse_ptr, c_ptr, g_ptr, g_stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    keep = cols < V
    x = tl.load(z_ptr + row.to(tl.int64) * stride + cols, mask=keep, other=float("-inf")).to(tl.float32)
    lse = tl.load(lse_ptr + row)
    c = tl.load(c_ptr + row)
    p = tl.where(lse == float("-inf"), 0.0, tl.exp(x * inv_t - lse))
    tl.store(g_ptr + row.to(tl.int64) * g_stride + cols, (c * p).to(g_ptr.dtype.element_ty), mask=keep)


def _canonical_topk(vals: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of ``vals`` [C, n] with their ``ids``, by value descending, ties by id ascending."""
    order = ids.argsort(dim=-1, stable=True)
    vals, ids = vals.gather(-1, order), ids.gather(-1, order)
    order = vals.argsort(dim=-1, descending=True, stable=True)[:, :k]
    return vals.gather(-1, order), ids.gather(-1, order)


def row_stats(z: torch.Tensor, temperature: float, k: int, n_seg: int | None = None):
    """(lse [C], entropy [C], top-k log-probs [C, k], their ids [C, k] long) of S = log_softmax(z / T).

    z [C, V] (bf16, fp16 or fp32; contiguous rows); outputs in fp32. Rows of all -inf logits get
    lse -inf, entropy 0 and -inf values. ``n_seg``: segments per row (default: enough for about
    ``TARGET_PROGRAMS`` programs, each at least ``SEGMENT`` columns). Raises ``ValueError`` for k > V.
    """
    C, V = z.shape
    if k > V:
        raise ValueError(f"top-{k} of a vocabulary of {V}")
    if z.stride(-1) != 1:
        z = z.contiguous()
    if n_seg is None:
        n_seg = min(triton.cdiv(TARGET_PROGRAMS, max(C, 1)), triton.cdiv(V, SEGMENT))
    n_seg = max(1, min(n_seg, triton.cdiv(V, BLOCK)))
    seg_len = triton.cdiv(triton.cdiv(V, n_seg), BLOCK) * BLOCK
    n_seg = triton.cdiv(V, seg_len)
    f32 = dict(dtype=torch.float32, device=z.device)
    m, s, t = (torch.empty(C, n_seg, **f32) for _ in range(3))
    kk = max(k, 1)
    vals = torch.empty(C, n_seg, kk, **f32)
    idx = torch.zeros(C, n_seg, kk, dtype=torch.int32, device=z.device)
    if C:
        _row_stats_kernel[(C, n_seg)](z, z.stride(0), V, seg_len // BLOCK, 1.0 / temperature, m, s, t, vals, idx,
                                      n_seg, K=k, KP=triton.next_power_of_2(kk), BLOCK=BLOCK,
                                      num_warps=NUM_WARPS)
    m_row = m.amax(-1)
    shift = torch.where(torch.isfinite(m_row), m_row, torch.zeros_like(m_row))
    a = torch.exp(m - shift[:, None])                                 # 0 for empty segments
    s_row = (a * s).sum(-1)
    t_row = (a * torch.where(s > 0, t + s * (m - shift[:, None]), torch.zeros_like(t))).sum(-1)
    lse = torch.where(s_row > 0, shift + torch.log(s_row), torch.full_like(s_row, float("-inf")))
    entropy = torch.where(s_row > 0, torch.log(s_row) - t_row / s_row.clamp_min(1e-30), torch.zeros_like(s_row))
    entropy = torch.where(torch.isfinite(entropy), entropy, torch.zeros_like(entropy))
    if k == 0:
        empty = torch.empty(C, 0, **f32)
        return lse, entropy, empty, empty.long()
    top_val, top_ids = _canonical_topk(vals.view(C, -1), idx.view(C, -1).long(), k)
    return lse, entropy, top_val - lse[:, None], top_ids


def softmax_grad_dense(z: torch.Tensor, temperature: float, lse: torch.Tensor, c: torch.Tensor,
                       out_dtype: torch.dtype) -> torch.Tensor:
    """c[:, None] * exp(z / T - lse[:, None]) as ``out_dtype`` [C, V]; z [C, V], lse and c [C] fp32."""
    C, V = z.shape
    if z.stride(-1) != 1:
        z = z.contiguous()
    G = torch.empty(C, V, dtype=out_dtype, device=z.device)
    if C:
        _softmax_grad_kernel[(C, triton.cdiv(V, BLOCK))](z, z.stride(0), V, 1.0 / temperature,
                                                         lse.float().contiguous(), c.float().contiguous(),
                                                         G, G.stride(0), BLOCK=BLOCK)
    return G
