"""GPU check of the chunked OPD path: same numbers as full logits, a fraction of the memory.

Runs the trainer's chunked path (``opd.objectives.score_tokens`` + ``policy_loss_backward``)
and a naive full-logits version on one CUDA device at a Qwen3-like scale (hidden 2048,
vocabulary 151,936), in one process: peak ``torch.cuda.max_memory_allocated`` above the inputs
for each, wall time, and whether loss and gradients agree. Writes
``benchmarks/results/chunked_memory_gpu.json``. Needs a GPU (it is not part of the test suite)::

    python3 benchmarks/chunked_memory_gpu.py                  # H100/H200: about a minute
    python3 benchmarks/chunked_memory_gpu.py --n 4096 --vocab 32000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(variant: str, a, inputs, cfg) -> dict:
    import torch

    from opd.objectives import (ADV_ESTIMATORS, POLICY_LOSSES, policy_loss_backward, score_tokens,
                                topk_rewards)

    x, lin, head, th, thead, tokens, mask = inputs
    adv_fn = ADV_ESTIMATORS.get(cfg.adv_estimator)
    lin.zero_grad(set_to_none=False)
    head.grad.zero_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    if variant == "chunked":
        with torch.no_grad():
            hs = lin(x)
        sc = score_tokens(hs, head, th, thead, tokens, mask, cfg, a.chunk_size)
        adv = adv_fn(sc.rewards, sc.valid, mask, None, None, cfg)
        loss = policy_loss_backward(lin(x), head, tokens, mask, sc, adv, cfg, a.chunk_size)["loss"]
    else:
        with torch.no_grad():
            zs, zt = lin(x) @ head.T, th @ thead.T
            r = topk_rewards(zs, zt, cfg.top_k, cfg.strategy, cfg.weight_mode, tokens=tokens)
            old = torch.log_softmax(zs, -1).gather(-1, r.ids)
            old = torch.where(r.valid, old, torch.zeros_like(old))
            del zs, zt
        adv = adv_fn(r.rewards, r.valid, mask, None, None, cfg)
        logp = torch.log_softmax(lin(x) @ head.T, -1)
        lossv, _ = POLICY_LOSSES.get(cfg.policy_loss)(logp.gather(-1, r.ids), old, adv, r.valid, mask, cfg)
        del logp
        lossv.backward()
        loss = lossv.item()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"variant": variant, "peak_mb_above_inputs": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1),
            "wall_s": round(wall, 3), "loss": float(loss),
            "head_grad": head.grad.detach().clone(), "lin_grad": lin.weight.grad.detach().clone()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16384, help="response tokens")
    p.add_argument("--resp-len", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--top-k", type=int, default=16)
    p.add_argument("--strategy", default="union")
    p.add_argument("--chunk-size", type=int, default=2048)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chunked_memory_gpu.json"))
    a = p.parse_args()

    import torch
    from torch import nn

    from opd.objectives import OPDConfig

    if not torch.cuda.is_available():
        sys.exit("chunked_memory_gpu.py needs a CUDA device; the CPU benchmark is chunked_memory.py")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    B, L = a.n // a.resp_len, a.resp_len
    cfg = OPDConfig(top_k=a.top_k, strategy=a.strategy, weight_mode="student_p", chunk_size=a.chunk_size)
    x = torch.randn(B, L, a.hidden, device=dev)
    lin = nn.Linear(a.hidden, a.hidden).to(dev)
    head = nn.Parameter(torch.randn(a.vocab, a.hidden, device=dev) * a.hidden ** -0.5)
    th = torch.randn(B, L, a.hidden, device=dev)
    thead = torch.randn(a.vocab, a.hidden, device=dev) * a.hidden ** -0.5
    tokens = torch.randint(0, a.vocab, (B, L), device=dev)
    mask = torch.ones(B, L, dtype=torch.bool, device=dev)
    mask[:, -L // 8:] = False  # a ragged tail, as real responses have
    head.grad = torch.zeros_like(head)
    for q in lin.parameters():
        q.grad = torch.zeros_like(q)
    inputs = (x, lin, head, th, thead, tokens, mask)
    run("chunked", a, inputs, cfg)  # warm-up: kernels and allocator
    c = run("chunked", a, inputs, cfg)
    n = run("naive", a, inputs, cfg)
    head_err = float((c["head_grad"] - n["head_grad"]).abs().max() / n["head_grad"].abs().max())
    lin_err = float((c["lin_grad"] - n["lin_grad"]).abs().max() / n["lin_grad"].abs().max())
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_grad")}  # noqa: E731
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "config": {k: v for k, v in vars(a).items() if k != "out"},
           "full_logits_fp32_mb": round(a.n * a.vocab * 4 / 2**20, 1),
           "chunked": strip(c), "naive": strip(n),
           "memory_ratio_naive_over_chunked": round(n["peak_mb_above_inputs"] / c["peak_mb_above_inputs"], 2),
           "loss_abs_diff": abs(c["loss"] - n["loss"]),
           "grad_rel_max_err": {"head": head_err, "lin": lin_err}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    ok = out["loss_abs_diff"] < 1e-3 * max(1.0, abs(n["loss"])) and max(head_err, lin_err) < 1e-3
    sys.exit(0 if ok else "chunked and naive results disagree")


if __name__ == "__main__":
    main()
