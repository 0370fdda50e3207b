"""Peak-memory benchmark: chunked OPD path vs naive full-logits path (CPU, fp32).

Both variants do the same work on N response tokens: teacher + student scoring (top-k rewards and
mechanism stats, no grad), then the vanilla policy loss forward + backward through a small model
(hidden = Linear(x)) into the LM head.

* chunked: ``score_tokens`` + ``policy_loss_backward`` (<= chunk_size positions of [., V] at a time)
* naive:   materialise [N, V] fp32 logits for student and teacher, ``topk_rewards`` +
           ``token_mechanism_stats`` on them, then full log_softmax -> gather -> loss -> backward.

Each variant runs in a fresh subprocess; memory = peak RSS (``resource.getrusage().ru_maxrss``)
minus the peak after setup (model, hidden states and heads allocated, kernels warmed up).

Run (defaults N=8192, V=32000, H=256, k=16, chunk 1024; ~1-2 min on 2 cores):

    .venv/bin/python benchmarks/chunked_memory.py [--n 8192 --vocab 32000 --hidden 256 --top-k 16
                                                   --chunk-size 1024 --strategy union --threads 2]

Writes ``benchmarks/results/chunked_memory.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def worker(a: argparse.Namespace) -> dict:
    import torch
    from torch import nn

    from opd.objectives import (ADV_ESTIMATORS, POLICY_LOSSES, OPDConfig, policy_loss_backward, score_tokens,
                                token_mechanism_stats, topk_rewards)

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    L = min(a.resp_len, a.n)
    B = a.n // L
    cfg = OPDConfig(top_k=a.top_k, strategy=a.strategy, weight_mode="student_p", chunk_size=a.chunk_size)
    x = torch.randn(B, L, a.hidden)
    lin = nn.Linear(a.hidden, a.hidden)
    head = nn.Parameter(torch.randn(a.vocab, a.hidden) * a.hidden ** -0.5)
    th = torch.randn(B, L, a.hidden)
    thead = torch.randn(a.vocab, a.hidden) * a.hidden ** -0.5
    tokens = torch.randint(0, a.vocab, (B, L))
    mask = torch.ones(B, L, dtype=torch.bool)
    adv_fn = ADV_ESTIMATORS.get(cfg.adv_estimator)
    # warm up kernels / allocator on a tiny problem so lazy initialisation is not counted
    sc = score_tokens(lin(x[:1, :4]).detach(), head, th[:1, :4], thead, tokens[:1, :4], mask[:1, :4], cfg, 2)
    policy_loss_backward(lin(x[:1, :4]), head, tokens[:1, :4], mask[:1, :4], sc,
                         adv_fn(sc.rewards, sc.valid, mask[:1, :4], None, None, cfg), cfg, 2)
    lin.zero_grad()
    head.grad = torch.zeros_like(head)          # allocate grad buffers before the baseline
    for p in lin.parameters():
        p.grad = torch.zeros_like(p)
    base_max, base_rss = _maxrss_mb(), _rss_mb()

    t0 = time.perf_counter()
    if a.variant == "chunked":
        with torch.no_grad():
            hs = lin(x)
        sc = score_tokens(hs, head, th, thead, tokens, mask, cfg, a.chunk_size)
        adv = adv_fn(sc.rewards, sc.valid, mask, None, None, cfg)
        st = policy_loss_backward(lin(x), head, tokens, mask, sc, adv, cfg, a.chunk_size)
        loss = st["loss"]
    else:
        with torch.no_grad():
            zs, zt = lin(x) @ head.T, th @ thead.T                     # [B, L, V] fp32 each
            r = topk_rewards(zs, zt, cfg.top_k, cfg.strategy, cfg.weight_mode, tokens=tokens)
            token_mechanism_stats(torch.log_softmax(zs, -1), torch.log_softmax(zt, -1), cfg.top_k)
            S_old = torch.log_softmax(zs, -1).gather(-1, r.ids)
            old = torch.where(r.valid, S_old, torch.zeros_like(S_old))
            del zs, zt, S_old
        adv = adv_fn(r.rewards, r.valid, mask, None, None, cfg)
        logp = torch.log_softmax(lin(x) @ head.T, -1)
        lossv, _ = POLICY_LOSSES.get(cfg.policy_loss)(logp.gather(-1, r.ids), old, adv, r.valid, mask, cfg)
        del logp
        lossv.backward()
        loss = float(lossv)
    wall = time.perf_counter() - t0
    return {"variant": a.variant, "peak_rss_delta_mb": round(_maxrss_mb() - base_max, 1),
            "baseline_rss_mb": round(base_rss, 1), "wall_s": round(wall, 3), "loss": loss,
            "head_grad_norm": float(head.grad.norm()), "lin_grad_norm": float(lin.weight.grad.norm())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8192, help="response tokens")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--top-k", type=int, default=16)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--strategy", default="union")
    p.add_argument("--resp-len", type=int, default=1024, help="response length L (B = n // L)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chunked_memory.json"))
    p.add_argument("--variant", choices=["chunked", "naive"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:                                  # subprocess mode
        print(json.dumps(worker(a)))
        return
    results = {}
    for variant in ("chunked", "naive"):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items() if k not in ("variant", "out")]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[variant] = json.loads(res.stdout.strip().splitlines()[-1])
    import torch
    c, n = results["chunked"], results["naive"]
    out = {"config": {k: v for k, v in vars(a).items() if k not in ("variant", "out")},
           "n_tokens": (a.n // min(a.resp_len, a.n)) * min(a.resp_len, a.n),
           "full_logits_fp32_mb": round(a.n * a.vocab * 4 / 2 ** 20, 1),
           "chunked": c, "naive": n,
           "memory_ratio_naive_over_chunked": round(n["peak_rss_delta_mb"] / max(c["peak_rss_delta_mb"], 1e-9), 2),
           "time_ratio_naive_over_chunked": round(n["wall_s"] / c["wall_s"], 2),
           "loss_abs_diff": abs(c["loss"] - n["loss"]),
           "env": {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
                   "cpus": os.cpu_count(), "device": "cpu", "dtype": "float32"}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"N={out['n_tokens']} V={a.vocab} H={a.hidden} k={a.top_k} chunk={a.chunk_size} "
          f"strategy={a.strategy}  (one [N,V] fp32 tensor = {out['full_logits_fp32_mb']} MB)")
    print(f"{'variant':10s} {'peak RSS delta (MB)':>20s} {'wall (s)':>10s} {'loss':>14s}")
    for v in (c, n):
        print(f"{v['variant']:10s} {v['peak_rss_delta_mb']:>20.1f} {v['wall_s']:>10.2f} {v['loss']:>14.6g}")
    print(f"memory naive/chunked = {out['memory_ratio_naive_over_chunked']}x, "
          f"time naive/chunked = {out['time_ratio_naive_over_chunked']}x -> {a.out}")


if __name__ == "__main__":
    main()
