r"""Log-probabilities of one chunk of positions, read through a small interface.

The objective and the mechanism statistics (``opd.objectives.topk``, ``.mechanism``) need only a
few things of the log-probabilities S = log_softmax(z / T) [C, V] at each position: the top-k
values and ids, S at a handful of ids, and the entropy. Two sources give them:

* ``Dense(S)``: S given in full (the reference; tests and the full-logits helpers).
* ``ChunkLogProbs(z, T, dtype, k)``: from the logits z [C, V] of one chunk, as the trainer and the
  probe compute them (``opd.objectives.chunked``). On a CUDA device it reads z once with a fused
  Triton kernel (``opd.objectives.triton_head``: logsumexp, entropy and the top-k in one pass,
  no fp32 [C, V] tensor); elsewhere it forms S with ``log_softmax`` and asks torch.

``ChunkLogProbs.softmax_grad`` gives the gradient of a loss through S back to the logits,

    dL/dz_j = (1/T) (g_j - p_j sum_i g_i),     p = softmax(z / T),  g_i = dL/dS_i

for a loss that reads S only at a few ids (g sparse): the backward of ``log_softmax`` written
out, so no autograd graph of width V is built.

Backend choice (``head_backend``): the environment variable ``OPD_HEAD_KERNELS`` = ``auto``
(default: Triton on CUDA for 16/32-bit logits, torch otherwise), ``torch`` or ``triton`` (also on
the CPU, through ``TRITON_INTERPRET=1``, which tests use).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

#: Values of ``OPD_HEAD_KERNELS``.
HEAD_BACKENDS = ("auto", "torch", "triton")


def entropy_from_logp(logp: torch.Tensor) -> torch.Tensor:
    """-sum_V p log p with p = exp(logp), [..., V] -> [...] (two [..., V] temporaries).

    Uses ``torch.special.entr`` (entr(0) = 0, so -inf entries contribute 0); rows whose
    log-probs are NaN (all-(-inf) logits) get entropy 0.
    """
    h = torch.special.entr(torch.exp(logp)).sum(-1)
    return torch.where(torch.isfinite(h), h, torch.zeros_like(h))


def sum_repeated(ids: torch.Tensor, g: torch.Tensor, V: int, pairwise: bool | None = None) -> torch.Tensor:
    """``out[c, i] = sum_j g[c, j] over the j with ids[c, j] == ids[c, i]``: ids [C, m] long,
    g [C, m] -> [C, m].  ``pairwise`` None: an [m, m] comparison per row while m * m <= V (the
    paper's k = 16), else a scatter-add into [C, V] zeros and a gather (k near V, as top_k = V);
    True / False force one (benchmarks/wide_topk.py)."""
    m = ids.shape[-1]
    if m * m <= V if pairwise is None else pairwise:
        same = ids[:, :, None] == ids[:, None, :]
        return (same.to(g.dtype) * g[:, None, :]).sum(-1)
    return g.new_zeros(ids.shape[0], V).scatter_add_(-1, ids, g).gather(-1, ids)


class Dense:
    """Log-probabilities S [..., V] given in full."""

    def __init__(self, logp: torch.Tensor):
        self.logp = logp
        self.shape, self.dtype, self.device = logp.shape, logp.dtype, logp.device

    def topk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, ids) [..., k] of the k largest log-probs, values descending."""
        return self.logp.topk(k, dim=-1)

    def at(self, ids: torch.Tensor) -> torch.Tensor:
        """S at ``ids`` [..., m] -> [..., m]."""
        return self.logp.gather(-1, ids)

    def entropy(self) -> torch.Tensor:
        """Entropy [...] in nats."""
        return entropy_from_logp(self.logp)


def as_logprobs(x) -> "Dense | ChunkLogProbs":
    """A tensor of log-probabilities becomes ``Dense``; a source passes through."""
    return Dense(x) if isinstance(x, torch.Tensor) else x


def head_backend(z: torch.Tensor) -> str:
    """``torch`` or ``triton``: which implementation reads the logits ``z`` (module doc)."""
    choice = os.environ.get("OPD_HEAD_KERNELS", "auto")
    if choice not in HEAD_BACKENDS:
        raise ValueError(f"OPD_HEAD_KERNELS={choice!r}; valid: {', '.join(HEAD_BACKENDS)}")
    if choice == "auto":
        fits = z.is_cuda and z.dtype in (torch.bfloat16, torch.float16, torch.float32)
        if not fits:
            return "torch"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch"
        return "triton"
    return choice


class ChunkLogProbs:
    """S = log_softmax(z / T) of a chunk of logits z [C, V], in ``dtype`` (float32 or float64).

    ``k``: the largest top-k that will be asked for (0: none). The Triton backend computes it
    once with the logsumexp and the entropy; ties are broken towards the lower token id.
    """

    def __init__(self, z: torch.Tensor, temperature: float, dtype: torch.dtype, k: int = 0):
        if z.dim() != 2:
            raise ValueError(f"logits must be [C, V], got {tuple(z.shape)}")
        self.z, self.temperature, self.dtype, self.k = z, float(temperature), dtype, int(k)
        self.shape, self.device = z.shape, z.device
        self.backend = head_backend(z) if dtype != torch.float64 else "torch"
        if self.backend == "triton":
            from .triton_head import row_stats
            self.lse, self._entropy, self._top_val, self._top_ids = row_stats(z, self.temperature, self.k)
            self.S = None
        else:
            zf = z.to(dtype)
            self.S = F.log_softmax(zf / self.temperature if self.temperature != 1.0 else zf, dim=-1)
            self._entropy = self._top = None

    def topk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values [C, k] descending, ids [C, k] long)."""
        if self.S is not None:
            if self._top is None or self._top[0].shape[-1] != k:
                self._top = self.S.topk(k, dim=-1)
            return self._top
        if k > self.k:
            raise ValueError(f"top-{k} asked of a chunk scored for top-{self.k}")
        return self._top_val[:, :k], self._top_ids[:, :k]

    def at(self, ids: torch.Tensor) -> torch.Tensor:
        """S at ``ids`` [C, m] -> [C, m] (``dtype``)."""
        if self.S is not None:
            return self.S.gather(-1, ids)
        return self.z.gather(-1, ids).to(self.dtype) * (1.0 / self.temperature) - self.lse[:, None]

    def entropy(self) -> torch.Tensor:
        """Entropy [C] in nats (0 for rows of all -inf logits)."""
        if self._entropy is None:
            self._entropy = entropy_from_logp(self.S)
        return self._entropy

    def softmax_grad(self, ids: torch.Tensor, g: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """dL/dz [C, V] in ``out_dtype`` for a loss with dL/dS = ``g`` [C, m] at ``ids`` [C, m]
        (zero elsewhere); repeated ids add up. Formula in the module doc."""
        gsum = g.sum(-1)
        scale = 1.0 / self.temperature
        if self.S is not None:
            G = torch.exp(self.S) * (-gsum * scale)[:, None]
        else:
            from .triton_head import softmax_grad_dense
            G = softmax_grad_dense(self.z, self.temperature, self.lse, -gsum * scale, out_dtype)
        # the sparse part: at each id, the dense value plus the g of every copy of that id
        g_tot = sum_repeated(ids, g, G.shape[-1])
        s_at = self.at(ids)
        p_at = torch.where(torch.isfinite(s_at), torch.exp(s_at), torch.zeros_like(s_at))
        vals = (g_tot - p_at * gsum[:, None]) * scale
        G = G.to(out_dtype)
        G.scatter_(-1, ids, vals.to(out_dtype))
        return G
