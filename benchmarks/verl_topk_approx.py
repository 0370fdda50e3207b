"""Error of the verl backend's approximate top-k strategies against the exact native computation.

verl's vLLM teacher returns only its own top-K' log-probs (``backends.verl.teacher_topk`` = K').
For ``only_stu``, ``union`` and ``union-intersection`` the verl backend looks the teacher's
log-prob at each candidate up among those K' and, where the id is not there, uses the bound
``min(T_(K'), log(1 - sum_{K'} exp T))`` (``opd.train.verl.ext.approx_topk_details``).  This
script measures what that costs in the tiny world, on real student samples:

1. sample one response per prompt from the tiny student (``results/world/models/student``) on the
   first ``--prompts`` training problems, temperature 0.7, up to 64 new tokens;
2. score every response position with the student and the teacher: full log-probs
   S = log_softmax(z_s / T_s), T = log_softmax(z_t) (T_s = ``--student-temperature``, 1 by default);
3. per strategy and K': the exact ``opd.objectives.topk_details(S, T, k)`` against
   ``approx_topk_details(S, top-K' ids of T, their log-probs, k)``, and the gradient of the native
   per-token loss (vanilla PPO surrogate at ratio 1, token-mean) w.r.t. the student logits.

Reported per (strategy, K'): the fraction of the student's top-k ids outside the teacher's top-K',
the fraction of valid candidates whose T is the bound, the mean over-estimate of T there (nats),
the mean |exact - approx| of the per-token reward sum, the mean exact |reward sum| (their ratio is
the relative error), the mean signed error, the max abs error, and the relative L2 error and cosine
of the loss gradient.  K' = V (the whole vocabulary) is a sanity row: the error must be 0.

The tiny vocabulary (338 tokens) makes K' a large share of it (K' = 64 is 19 %); at paper scale
(V ~ 151k) the same K' covers a tiny share, so the numbers here say how the bound behaves, not
what it costs at scale -- no larger real models are available here to measure that.

Run from the repository root (under a minute on 2 CPU cores)::

    .venv/bin/python benchmarks/verl_topk_approx.py
    .venv/bin/python benchmarks/verl_topk_approx.py --weight-modes student_p --student-temperature 0.7

Writes ``benchmarks/results/verl_topk_approx.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from opd.train.verl.ext import _approx_details  # noqa: E402
from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402
from opd.generation.config import SamplingParams  # noqa: E402
from opd.generation.hf import generate, load_model, load_tokenizer  # noqa: E402
from opd.objectives import OPDConfig, TOKEN_LOSSES, TopkDetails, topk_details  # noqa: E402

STRATEGIES = ("only_stu", "union", "union-intersection")


@torch.no_grad()
def response_logits(model, rows: list[dict]) -> torch.Tensor:
    """[N, V] float32 logits at the positions that predict each response token, all rows concatenated."""
    out = []
    for r in rows:
        p, resp = r["prompt_ids"], r["response_ids"]
        if not resp:
            continue
        ids = torch.tensor([p + resp])
        logits = model(input_ids=ids).logits[0].float()
        out.append(logits[len(p) - 1:len(p) + len(resp) - 1])
    return torch.cat(out)


def token_loss_grad(z_s: torch.Tensor, T: torch.Tensor, k: int, strategy: str, weight_mode: str,
                    s_temp: float, teacher: tuple[torch.Tensor, torch.Tensor] | None):
    """(details, bounded-or-None, d token-mean loss / d z_s): exact when ``teacher`` is None,
    else approximate on the given (ids, log-probs) top-K'."""
    z = z_s.clone().requires_grad_(True)
    S = F.log_softmax(z / s_temp, -1)
    bounded = None
    if teacher is None:
        d = topk_details(S, T, k, strategy, weight_mode)
    else:
        d, bounded = _approx_details(S, teacher[0], teacher[1], k, strategy, weight_mode)
    cfg = OPDConfig(top_k=k, strategy=strategy, weight_mode=weight_mode)
    loss, _ = TOKEN_LOSSES.get("vanilla")(d.student_logp, d.student_logp.detach(), d.rewards.detach(), d.valid, cfg)
    g, = torch.autograd.grad(loss.mean(), z)
    return TopkDetails(*(t.detach() for t in d)), bounded, g


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default=str(ROOT / "results" / "world"))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the student")
    ap.add_argument("--student-temperature", type=float, default=1.0, help="T_s of the scored log-probs")
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--teacher-topk", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--weight-modes", nargs="+", default=["student_p", "teacher_p", "none"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verl_topk_approx.json"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    world = Path(args.world)
    tok = load_tokenizer(world / "models" / "student")
    student, teacher = load_model(world / "models" / "student"), load_model(world / "models" / "teacher")
    problems = pd.read_parquet(world / "problems" / "train.parquet").head(args.prompts)
    prompts = [[dict(m) for m in p] for p in problems["prompt"]]
    params = SamplingParams(n=1, temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                            seed=args.seed)
    rows = generate(student, tok, prompts, params, show_progress=False)
    z_s, z_t = response_logits(student, rows), response_logits(teacher, rows)
    N, V = z_s.shape
    T = F.log_softmax(z_t, -1)
    S = F.log_softmax(z_s / args.student_temperature, -1)
    k = args.top_k
    kps = sorted({kp for kp in args.teacher_topk if k <= kp < V} | {V})
    s_ids = S.topk(k, -1).indices

    results = []
    for wm in args.weight_modes:
        for strategy in STRATEGIES:
            e, _, g_e = token_loss_grad(z_s, T, k, strategy, wm, args.student_temperature, None)
            r_e = e.rewards.sum(-1)
            for kp in kps:
                t_val, t_ids = T.topk(kp, -1)
                a, bounded, g_a = token_loss_grad(z_s, T, k, strategy, wm, args.student_temperature, (t_ids, t_val))
                r_a = a.rewards.sum(-1)
                err = (r_a - r_e).abs()
                outside = ~(s_ids.unsqueeze(-1) == t_ids.unsqueeze(-2)).any(-1)
                n_b = int(bounded.sum())
                results.append({
                    "strategy": strategy, "weight_mode": wm, "top_k": k, "teacher_topk": kp,
                    "student_topk_outside_teacher_topk": float(outside.float().mean()),
                    "bounded_candidate_fraction": float(bounded.sum() / a.valid.sum().clamp_min(1)),
                    "tokens_with_bounded_candidate": float(bounded.any(-1).float().mean()),
                    "mean_T_overestimate_at_bounded": (float((a.teacher_logp - e.teacher_logp)[bounded].mean())
                                                       if n_b else 0.0),
                    "mean_abs_reward_sum_error": float(err.mean()),
                    "mean_abs_exact_reward_sum": float(r_e.abs().mean()),
                    "relative_reward_sum_error": float(err.mean() / r_e.abs().mean().clamp_min(1e-12)),
                    "mean_signed_reward_sum_error": float((r_a - r_e).mean()),
                    "max_abs_reward_sum_error": float(err.max()),
                    "grad_relative_l2_error": float((g_a - g_e).norm() / g_e.norm().clamp_min(1e-30)),
                    "grad_cosine": float(F.cosine_similarity(g_a.flatten(), g_e.flatten(), dim=0)),
                })
    elapsed = time.perf_counter() - t0
    n_resp = sum(1 for r in rows if r["response_ids"])
    import transformers

    result = {
        "benchmark": "verl approximate top-k strategies (teacher top-K' lookup + tail bound) vs exact topk_details",
        "date": datetime.date.today().isoformat(),
        "setting": {"world": str(Path(args.world).resolve().relative_to(ROOT)) if Path(args.world).resolve()
                    .is_relative_to(ROOT) else args.world,
                    "prompts": len(prompts), "responses": n_resp, "response_tokens": N, "vocab": V,
                    "sampling_temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
                    "student_temperature": args.student_temperature, "teacher_temperature": 1.0,
                    "top_k": k, "teacher_topk": kps, "weight_modes": args.weight_modes, "seed": args.seed,
                    "loss": "vanilla PPO surrogate at ratio 1, token-mean over all response tokens"},
        "results": results,
        "machine": {"cpu_count": os.cpu_count(), "processor": cpu_model(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "device": "cpu", "elapsed_s": round(elapsed, 1)},
        "note": (f"tiny world only (vocabulary {V}, so K' = 64 already covers {64 / V:.0%} of it); no larger "
                 "real student/teacher pair is available here, so the error at paper scale (V ~ 151k) is not "
                 "measured. The reward error is one-sided by construction for weight modes student_p / none: "
                 "the bound over-estimates T, so the approximate reward is >= the exact one. "
                 f"CPU run ({os.cpu_count()} cores) on {datetime.date.today().isoformat()}."),
    }
    write_json(result, args.out)
    _print_table(result)
    print(f"wrote {args.out}")
    return result



def _print_table(r: dict) -> None:
    s = r["setting"]
    print(f"{s['response_tokens']} response tokens from {s['responses']} student samples, V = {s['vocab']}, "
          f"top_k = {s['top_k']}")
    head = (f"{'strategy':<19}{'weights':<10}{'K_prime':>7}{'stu_out':>9}{'bounded':>9}{'T_over':>8}"
            f"{'mean_err':>10}{'mean_|r|':>10}{'rel_err':>9}{'signed':>9}{'max_err':>9}{'grad_rel':>9}"
            f"{'grad_cos':>9}")
    print("-" * len(head))
    print(head)
    print("-" * len(head))
    for x in r["results"]:
        print(f"{x['strategy']:<19}{x['weight_mode']:<10}{x['teacher_topk']:>7}"
              f"{x['student_topk_outside_teacher_topk']:>9.3f}{x['bounded_candidate_fraction']:>9.3f}"
              f"{x['mean_T_overestimate_at_bounded']:>8.2f}{x['mean_abs_reward_sum_error']:>10.1e}"
              f"{x['mean_abs_exact_reward_sum']:>10.4f}{x['relative_reward_sum_error']:>9.3f}"
              f"{x['mean_signed_reward_sum_error']:>9.1e}{x['max_abs_reward_sum_error']:>9.3f}"
              f"{x['grad_relative_l2_error']:>9.3f}{x['grad_cosine']:>9.3f}")
    print("-" * len(head))
    print("stu_out: student top-k ids outside the teacher top-K'; bounded: valid candidates with T = bound; "
          "T_over: mean bound - true T there (nats); errors on the per-token reward sum; grad: d loss / d logits")


if __name__ == "__main__":
    main()
