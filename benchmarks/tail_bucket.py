"""Top-k OPD with and without the tail bucket, across learning rates, on the tiny world.

Top-k OPD only sees the student's top-k: candidates with negative advantages are pushed down and
their mass flows to the untracked rest of the vocabulary (README, "The tiny world"). The tail
bucket (``objective.tail_bucket``) adds one candidate for that rest, so the objective sees where
the mass goes. For each learning rate, both variants train the same student from the same seed
on the same prompts (the paper's default objective: top-16, ``only_stu``, ``student_p``), and we
record per step the student's mass on its own top-k (``opd/student_mass_own_topk``) and the
rollout accuracy. Needs the tiny world (``make run`` first)::

    .venv/bin/python benchmarks/tail_bucket.py                   # 3 lrs x 2 variants x 40 steps
    .venv/bin/python benchmarks/tail_bucket.py --steps 5 --lrs 1e-4   # smoke run
    .venv/bin/python benchmarks/tail_bucket.py --replot          # redraw the figure from the JSON

Writes ``benchmarks/results/tail_bucket.json`` and ``benchmarks/results/tail_bucket.png``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(lr: float, tail: bool, steps: int, world: Path, seed: int) -> list[dict]:
    import torch

    from opd.generation.hf import load_model, load_tokenizer
    from opd.io import flat_view, read_parquet
    from opd.train.config import TrainConfig
    from opd.train.native import OnPolicyTrainer

    torch.manual_seed(seed)
    prompts = world / "problems" / "train.parquet"
    rows = flat_view(read_parquet(prompts), str(prompts))[["problem_id", "prompt", "ground_truth"]].to_dict("records")
    import yaml

    from opd.model_refs import thinking_of

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = TrainConfig.from_dict({"steps": steps, "prompts_per_step": 32, "n_samples": 2, "max_new_tokens": 96,
                                 "lr": lr, "micro_batch_size": 64, "seed": seed,
                                 "enable_thinking": thinking_of(config, "student"),
                                 "teacher_enable_thinking": thinking_of(config, "teacher"),
                                 "objective": {"top_k": 16, "strategy": "only_stu", "weight_mode": "student_p",
                                               "student_temperature": 0.7, "tail_bucket": tail,
                                               "metrics_chunk_tokens": 16}})
    tok = load_tokenizer(world / "models" / "student")
    trainer = OnPolicyTrainer(cfg, load_model(world / "models" / "student"), tok, rows,
                              teacher=load_model(world / "models" / "teacher"), teacher_tokenizer=tok)
    out = []
    for step in range(1, steps + 1):
        m = trainer.step(step)
        out.append({"step": step, "mass_own_topk": m["opd/student_mass_own_topk"],
                    "accuracy": m["rollout/accuracy"], "student_entropy": m["opd/student_entropy"]})
        print(f"lr {lr:g} tail {tail}: step {step} mass {out[-1]['mass_own_topk']:.4f} "
              f"acc {out[-1]['accuracy']:.3f}", flush=True)
    return out


def plot(runs: dict, lrs: list[float], out: Path, window: int = 5) -> None:
    """Left: the student's mass outside its own top-k (the leak; log scale). Right: the rollout
    accuracy, a ``window``-step running mean (one step is 64 responses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, lr in enumerate(lrs):
        for tail, ls in ((False, "--"), (True, "-")):
            v = pd.DataFrame(runs[f"lr={lr:g} tail={tail}"])
            label = f"lr {lr:g}, {'tail bucket' if tail else 'top-k only'}"
            axes[0].plot(v["step"], (1 - v["mass_own_topk"]).clip(lower=1e-9), ls, color=f"C{i}", label=label)
            axes[1].plot(v["step"], v["accuracy"].rolling(window, min_periods=1).mean(), ls, color=f"C{i}",
                         label=label)
    axes[0].set(xlabel="step", ylabel="student mass outside its own top-16", yscale="log",
                title="mass leak (1 - mass on own top-16)")
    axes[1].set(xlabel="step", ylabel=f"rollout accuracy ({window}-step mean)", title="accuracy")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", default=str(ROOT / "results" / "world"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tail_bucket.json"))
    ap.add_argument("--replot", action="store_true", help="redraw the figure from --out's JSON only")
    args = ap.parse_args()
    if args.replot:
        import json

        saved = json.loads(Path(args.out).read_text())
        lrs = sorted({float(k.split()[0].split("=")[1]) for k in saved["runs"]})
        plot(saved["runs"], lrs, Path(args.out).with_suffix(".png"))
        return
    world = Path(args.world)
    if not (world / "models" / "student" / "config.json").exists():
        raise SystemExit(f"no tiny world in {world}: run `make run` first (or pass --world)")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    runs = {f"lr={lr:g} tail={tail}": run(lr, tail, args.steps, world, args.seed)
            for lr in args.lrs for tail in (False, True)}
    tenth = max(1, args.steps // 10)
    summary = {k: {"final_mass_own_topk": mean(r["mass_own_topk"] for r in v[-tenth:]),
                   "final_accuracy": mean(r["accuracy"] for r in v[-tenth:]),
                   "final_student_entropy": mean(r["student_entropy"] for r in v[-tenth:])}
               for k, v in runs.items()}
    from opd.io import write_json
    from opd.runlog import cpu_model

    write_json({"what": "top-16 only_stu student_p OPD on the tiny world, with and without the tail bucket",
                "steps": args.steps, "seed": args.seed, "final": f"mean of the last {tenth} steps",
                "summary": summary, "runs": runs,
                "machine": {"cpu": cpu_model(), "load_avg_1m": os.getloadavg()[0]}}, args.out)
    plot(runs, args.lrs, Path(args.out).with_suffix(".png"))
    for k, s in summary.items():
        print(f"{k}: mass {s['final_mass_own_topk']:.4f}, accuracy {s['final_accuracy']:.3f}")


if __name__ == "__main__":
    main()
