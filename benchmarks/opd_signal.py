"""Where OPD's signal goes, before any training: per-token reverse KL and gradient norms of a
student-teacher pair by problem family and by token kind (digits or other), on the student's own
samples.  The method of ``../shared/notes/opd-diagnosis-2026-12-04.md``, rerun on a new world.

For each family (from the training prompts of a built world) it samples ``--prompts`` prompts x
``--n`` responses from the student at temperature 1 (the rollout temperature), then measures:

- the exact reverse KL ``KL(student || teacher)`` per response token (full vocabulary), its mean
  on digit tokens and on the others, and the share of the KL on digits;
- the (sampled token, teacher's most likely token) pairs that carry the most KL, with their share
  (``top_pairs``): where a pair such as ('\n', '<think>') dominates, the student writes another
  format than the teacher, not other knowledge (docs/world.md, iteration 7);
- the student's accuracy on those samples (exact match of the boxed answer);
- the norm of the gradient of the mean per-token KL over the family's batch, and the cosine of
  each family's gradient with the mixed batch's (all families pooled).

Not part of ``make run``; about a minute on 2 cores.

    .venv/bin/python benchmarks/opd_signal.py --world benchmarks/tmp/world/results \\
        --student student --teacher teacher

    .venv/bin/python benchmarks/opd_signal.py --student-dir results/sft/opd_coldstart/model \
        --teacher teacher_think --thinking --name coldstart      # C5's pair, in thinking mode

Writes ``benchmarks/results/opd_signal_<--name or --student>.json``.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.generation.config import SamplingParams  # noqa: E402
from opd.generation.hf import generate, left_pad, load_model, load_tokenizer  # noqa: E402
from opd.io import flat_view, read_parquet, write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402


def batch_kl(student, teacher, rows, pad):
    """Per-token reverse KL [B, W-1] (with grad through the student), the response mask, the
    sampled tokens and the teacher's most likely tokens (all [B, W-1])."""
    seqs = [r["prompt_ids"] + r["response_ids"] for r in rows]
    ids, attn = left_pad(seqs, pad)
    width = ids.shape[1]
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for b, r in enumerate(rows):
        n = len(r["response_ids"])
        mask[b, width - n:] = True
    logp_s = torch.log_softmax(student(input_ids=ids, attention_mask=attn).logits[:, :-1], -1)
    with torch.no_grad():
        logp_t = torch.log_softmax(teacher(input_ids=ids, attention_mask=attn).logits[:, :-1], -1)
    kl = (logp_s.exp() * (logp_s - logp_t)).sum(-1)           # [B, W-1]: predicts token t+1
    return kl, mask[:, 1:], ids[:, 1:], logp_t.argmax(-1)


def top_pairs(tok, kl, mask, sampled, teacher_top, n: int = 8) -> list[dict]:
    """The ``n`` (sampled token, teacher's top token) pairs with the largest summed KL, each with
    its share of the KL on ``mask`` and its count."""
    total = float(kl[mask].sum())
    sums: dict[tuple[int, int], list[float]] = {}
    for k, a, b in zip(kl[mask].tolist(), sampled[mask].tolist(), teacher_top[mask].tolist()):
        acc = sums.setdefault((a, b), [0.0, 0])
        acc[0] += k
        acc[1] += 1
    best = sorted(sums.items(), key=lambda kv: -kv[1][0])[:n]
    return [{"sampled": tok.convert_ids_to_tokens(a), "teacher_top": tok.convert_ids_to_tokens(b),
             "share": v[0] / total, "count": v[1]} for (a, b), v in best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default=str(ROOT / "results"), help="a results/ folder of a built world")
    ap.add_argument("--student", default="student")
    ap.add_argument("--teacher", default="teacher")
    ap.add_argument("--student-dir", default=None, help="a model dir instead of world/models/<student>")
    ap.add_argument("--data", default="world/problems/train.parquet",
                    help="prompts with their family (extra_info.family), relative to --world")
    ap.add_argument("--prompts", type=int, default=24, help="prompts per family")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--thinking", action="store_true", help="the student's prompts in thinking mode")
    ap.add_argument("--name", default=None, help="results/opd_signal_<name>.json (default: --student)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    world = Path(args.world)
    tok = load_tokenizer(world / "world" / "tokenizer")
    student = load_model(args.student_dir or world / "world" / "models" / args.student)
    teacher = load_model(world / "world" / "models" / args.teacher)
    df = read_parquet(world / args.data)
    flat = flat_view(df, args.data)
    fams = [e["family"] for e in df["extra_info"]]
    digit_ids = torch.tensor([tok.convert_tokens_to_ids(str(d)) for d in range(10)])
    params = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_new_tokens=96, seed=args.seed,
                            batch_size=256)
    out, grads = {}, {}
    for fam in sorted(set(fams)):
        idx = [i for i, f in enumerate(fams) if f == fam][:args.prompts]
        prompts = [list(flat["prompt"].iloc[i]) for i in idx]
        truth = [str(flat["ground_truth"].iloc[i]) for i in idx]
        rows = generate(student, tok, prompts, params, enable_thinking=args.thinking, show_progress=False)
        correct = [bool(re.search(r"\\boxed\{" + re.escape(truth[r["prompt_index"]]) + r"\}", r["response"]))
                   for r in rows]
        student.zero_grad()
        kl, mask, tgt, t_top = batch_kl(student, teacher, rows, tok.pad_token_id)
        digit = mask & torch.isin(tgt, digit_ids)
        loss = kl[mask].mean()
        loss.backward()
        grads[fam] = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None]).clone()
        k = kl.detach()
        out[fam] = {"samples": len(rows), "student_acc_t1": sum(correct) / len(correct),
                    "kl_per_token": float(k[mask].mean()), "kl_digits": float(k[digit].mean()),
                    "kl_other": float(k[mask & ~digit].mean()),
                    "share_on_digits": float(k[digit].sum() / k[mask].sum()),
                    "grad_norm": float(grads[fam].norm()),
                    "top_pairs": top_pairs(tok, k, mask, tgt, t_top)}
    mixed = sum(grads.values())
    for fam in out:
        out[fam]["cos_with_mixed"] = float(torch.nn.functional.cosine_similarity(grads[fam], mixed, 0))
    for fam, v in out.items():
        print(fam, {k: round(x, 3) for k, x in v.items() if k != "top_pairs"}, flush=True)
        print("   ", ", ".join(f"{p['sampled']!r}->{p['teacher_top']!r} {p['share']:.2f}" for p in v["top_pairs"][:4]))
    write_json({"student": args.student_dir or args.student, "teacher": args.teacher, "data": args.data,
                "thinking": args.thinking,
                "families": out, "cpu": cpu_model(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "load_avg_after": os.getloadavg()},
               ROOT / "benchmarks" / "results" / f"opd_signal_{args.name or args.student}.json")


if __name__ == "__main__":
    main()
