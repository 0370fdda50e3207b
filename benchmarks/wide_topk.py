"""The objective at k near the vocabulary: the sorted / scattered set operations against the
pairwise ones they replace there.

``top_k: V`` (the whole vocabulary: the exact reverse KL, the TRL peer's objective) made two
steps of the head O(k^2) per token: the membership test of the set strategies and the mechanism
metrics (``opd.objectives.topk.isin_rows``) and the sum over repeated candidate ids in the
log-softmax backward (``opd.objectives.logprobs.sum_repeated``). Above ``PAIRWISE_MAX`` pairs /
k^2 > V they now sort and bisect, and scatter into the vocabulary. This times one
``score_and_backward`` (the trainer's single-forward update of the head) on random inputs of the
default study's shape (64 sequences x 50 tokens, hidden 96, V 384), at k = 16 (unchanged: the
pairwise forms) and k = V, each with the dispatch and with the pairwise forms forced, in one
process, alternated, and reports the ratio.

    .venv/bin/python benchmarks/wide_topk.py            # about a minute on 2 cores

Writes ``benchmarks/results/wide_topk.json``.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402
from opd.objectives import OPDConfig, logprobs, topk  # noqa: E402
from opd.objectives.single_forward import estimator_fn, score_and_backward  # noqa: E402
from opd.objectives import ADV_ESTIMATORS  # noqa: E402
from study import host_record  # noqa: E402


def inputs(B: int, L: int, H: int, V: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hs = (torch.randn(B, L, H, generator=g) * 2).requires_grad_(True)
    head = torch.randn(V, H, generator=g) * 0.3
    ht, thead = torch.randn(B, L, H, generator=g) * 2, torch.randn(V, H, generator=g) * 0.3
    tokens = torch.randint(0, V, (B, L), generator=g)
    lengths = torch.randint(L // 2, L + 1, (B,), generator=g)
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    return hs, head, ht, thead, tokens, mask


def one_update(x, cfg: OPDConfig) -> float:
    hs, head, ht, thead, tokens, mask = x
    hs.grad = None
    est = estimator_fn(ADV_ESTIMATORS.get(cfg.adv_estimator), None, None, cfg)
    t0 = time.perf_counter()
    score_and_backward(hs, head, ht, thead, tokens, mask, est, cfg, cfg.chunk_size)
    return time.perf_counter() - t0


def forced_pairwise(on: bool):
    """Patch the two dispatches to their pairwise forms (on) or restore them (off)."""
    topk.PAIRWISE_MAX = float("inf") if on else ORIGINAL[0]
    logprobs.sum_repeated = functools.partial(ORIGINAL[1], pairwise=True) if on else ORIGINAL[1]


ORIGINAL = (topk.PAIRWISE_MAX, logprobs.sum_repeated)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "wide_topk.json"))
    args = ap.parse_args()
    B, L, H, V = 64, 50, 96, 384
    x = inputs(B, L, H, V)
    rows = []
    for k in (16, V):
        # the default study's objective, and union (2k candidates: the largest membership test)
        for strategy in ("only_stu", "union"):
            cfg = OPDConfig(top_k=k, strategy=strategy, weight_mode="student_p", tail_bucket=False)
            times = {"dispatch": [], "pairwise": []}
            for _ in range(args.repeats):
                for mode in ("dispatch", "pairwise", "pairwise", "dispatch"):
                    forced_pairwise(mode == "pairwise")
                    times[mode].append(one_update(x, cfg))
            forced_pairwise(False)
            med = {m: statistics.median(t) for m, t in times.items()}
            rows.append({"top_k": k, "strategy": strategy, "seconds_dispatch": med["dispatch"],
                         "seconds_pairwise": med["pairwise"], "speedup": med["pairwise"] / med["dispatch"]})
            print(f"k={k:4d} {strategy:9s} dispatch {med['dispatch']:.3f} s  pairwise {med['pairwise']:.3f} s  "
                  f"x{rows[-1]['speedup']:.1f}", flush=True)
    write_json({"benchmark": "score_and_backward, one update of the head (64 x 50 tokens, H 96, V 384)",
                          "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
                          "rows": rows, "host": host_record(torch.get_num_threads())}, args.out)


if __name__ == "__main__":
    main()
