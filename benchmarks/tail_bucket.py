"""Top-k OPD with and without the tail bucket, across learning rates, on the tiny world.

Top-k OPD only sees the student's top-k: candidates with negative advantages are pushed down and
their mass can flow to the untracked rest of the vocabulary (docs/configuration.md, "Objectives"). The tail
bucket (``objective.tail_bucket``) adds one candidate for that rest, so the objective sees where
the mass goes. This retrains one OPD experiment of the default run exactly as ``make run`` trained
it (``results/train/<experiment>/config.json``: resolved config, start model, teacher, prompts,
seed), for each learning rate with and without the tail, and records per step the student's mass
on its own top-k (``opd/student_mass_own_topk``), its entropy and the rollout accuracy. Needs
``make run`` first::

    .venv/bin/python benchmarks/tail_bucket.py                          # opd: 3 lrs x 2 x 40 steps
    .venv/bin/python benchmarks/tail_bucket.py --experiment opd_coldstart   # the cold-started pair
    .venv/bin/python benchmarks/tail_bucket.py --steps 5 --lrs 1e-4     # smoke run
    .venv/bin/python benchmarks/tail_bucket.py --replot                 # redraw from the JSON

Writes ``benchmarks/results/tail_bucket_<experiment>.{json,png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(exp: str, lr: float, tail: bool, steps: int) -> list[dict]:
    """Train experiment ``exp`` as the default run did (``results/train/<exp>/config.json``: its
    resolved config, start model, teacher, prompts and seed) for ``steps`` steps at ``lr``, with or
    without the tail bucket; one record per step."""
    import torch

    from opd.generation.hf import load_model, load_tokenizer
    from opd.io import flat_view, read_parquet
    from opd.train.config import TrainConfig
    from opd.train.native import OnPolicyTrainer

    run_cfg = json.loads((ROOT / "results" / "train" / exp / "config.json").read_text())
    train = run_cfg["resolved"] | {"steps": steps, "lr": lr, "seed": run_cfg["seed"]}
    train["objective"] = train["objective"] | {"tail_bucket": tail}
    cfg = TrainConfig.from_dict(train)
    torch.manual_seed(run_cfg["seed"])
    prompts = str(ROOT / run_cfg["prompts"])
    rows = flat_view(read_parquet(prompts), prompts)[["problem_id", "prompt", "ground_truth"]].to_dict("records")
    student, teacher = ROOT / run_cfg["student"], ROOT / run_cfg["teacher"]
    trainer = OnPolicyTrainer(cfg, load_model(student), load_tokenizer(student), rows,
                              teacher=load_model(teacher), teacher_tokenizer=load_tokenizer(teacher))
    out = []
    for step in range(1, steps + 1):
        m = trainer.step(step)
        out.append({"step": step, "mass_own_topk": m["opd/student_mass_own_topk"],
                    "accuracy": m["rollout/accuracy"], "student_entropy": m["opd/student_entropy"]})
        print(f"{exp} lr {lr:g} tail {tail}: step {step} mass {out[-1]['mass_own_topk']:.4f} "
              f"acc {out[-1]['accuracy']:.3f}", flush=True)
    return out


def plot(runs: dict, lrs: list[float], out: Path, experiment: str, window: int = 5) -> None:
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
    fig.suptitle(f"{experiment}: top-k OPD with and without the tail bucket", fontsize=10)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", default="opd", help="an OPD experiment of the default run (make run first)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 2e-4, 1e-3])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default=None, help="default: benchmarks/results/tail_bucket_<experiment>.json")
    ap.add_argument("--replot", action="store_true", help="redraw the figure from --out's JSON only")
    args = ap.parse_args()
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"tail_bucket_{args.experiment}.json")
    if args.replot:
        saved = json.loads(Path(args.out).read_text())
        lrs = sorted({float(k.split()[0].split("=")[1]) for k in saved["runs"]})
        plot(saved["runs"], lrs, Path(args.out).with_suffix(".png"), saved["experiment"])
        return
    if not (ROOT / "results" / "train" / args.experiment / "config.json").exists():
        raise SystemExit(f"no trained experiment {args.experiment!r} in results/train: run `make run` first")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    runs = {f"lr={lr:g} tail={tail}": run(args.experiment, lr, tail, args.steps)
            for lr in args.lrs for tail in (False, True)}
    tenth = max(1, args.steps // 10)
    summary = {k: {"final_mass_own_topk": mean(r["mass_own_topk"] for r in v[-tenth:]),
                   "final_accuracy": mean(r["accuracy"] for r in v[-tenth:]),
                   "final_student_entropy": mean(r["student_entropy"] for r in v[-tenth:])}
               for k, v in runs.items()}
    from opd.io import write_json
    from opd.runlog import cpu_model

    write_json({"what": f"experiment {args.experiment} of the default run, with and without the tail bucket",
                "experiment": args.experiment, "steps": args.steps, "final": f"mean of the last {tenth} steps",
                "summary": summary, "runs": runs,
                "machine": {"cpu": cpu_model(), "load_avg_1m": os.getloadavg()[0]}}, args.out)
    plot(runs, args.lrs, Path(args.out).with_suffix(".png"), args.experiment)
    for k, s in summary.items():
        print(f"{k}: mass {s['final_mass_own_topk']:.4f}, accuracy {s['final_accuracy']:.3f}")


if __name__ == "__main__":
    main()
