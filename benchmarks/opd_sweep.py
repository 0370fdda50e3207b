"""The learning rate and step count of the default OPD runs, chosen on a validation split by a
rule fixed before the sweep ran (issue 22: "find the learning rate and steps by a sweep that you
record in benchmarks/, fixed before you read the claims").

The sweep trains the `opd` experiment (C1's pair and prompts) at each learning rate of ``--lrs``
for ``--steps`` steps, checkpointing every ``--every``, in ``benchmarks/tmp/opd_sweep/`` on a built
world copied from ``--world`` (default: the repository's ``results/``).  Every checkpoint, the
initial student and the teacher are graded on **``tiny_val``: the world's ``heldout`` split**
(add and mul, disjoint from ``tiny_eval``, the claims' benchmark), never on ``tiny_eval``.

**Selection rule of iteration 6 (written before this sweep ran; not changed after):** every
point of the grid trains with a linear learning-rate warm-up over its first ``--warmup`` (10)
steps, then a constant rate; steps run to 240, graded every 60.  Take the point with the highest
gap recovered on ``tiny_val``, ``(acc - acc_student) / (acc_teacher - acc_student)``; a point
within 0.01 of it with fewer steps, then a lower learning rate, wins the tie.  240 steps is the
most that ``make run`` can afford (0.9 s a step uncontended).  The chosen learning rate and
warm-up become ``train_defaults`` of ``config/config.yaml`` (every OPD experiment); the chosen
steps go to ``train_defaults.steps`` with ``save_every: 60``, so that every claim compares
experiments of one budget -- or, if ``make run`` would then exceed 22 minutes (measured), to
the experiments that C1's gap or gain is compared with (``opd``: C1, C4, C7; ``opd_think``: C2;
``opd_grpo_teacher``: C3), the others keeping 60.  ``grpo`` keeps 60 steps (it makes C3's
teacher).  The claims are read only after that.

Iteration 5's sweep (``benchmarks/results/opd_sweep.json``: no warm-up, 60 and 120 steps) took,
by its own rule, the fewest steps within one standard error of the best: with an SE of 0.18 on
100 problems that rule always picks the shortest run, so the iteration-6 rule takes the best.

``--seed N`` runs the same grid on seed N's world (``--world`` its ``results/``, e.g.
``benchmarks/tmp/claims_seed1/results``) with ``seed: N`` for training and sampling, in
``benchmarks/tmp/opd_sweep_seed<N>/``, writing ``<--name>_seed<N>``; ``opd_sweep_seeds.py`` pools
the seeds by the rule of iteration 8 (its docstring).

``--families mul`` trains on the train split's problems of those families only (iteration 9's
candidate, C1's prompts where the teacher knows more): a parquet of them, written in the sweep's
folder (``benchmarks/tmp/opd_sweep_<families>[_seed<N>]/``), becomes ``data.train``; the world is
not changed. ``--mini-batch-size N`` splits each step's rollouts into optimiser updates of N
sequences (``train.mini_batch_size``: 64 / N updates a step, as verl's ``ppo_mini_batch_size``), in
``benchmarks/tmp/opd_sweep_mb<N>[_seed<N>]/``.

Not part of ``make run``.  The validation benchmark changes the training set's deduplication in
the sweep's folder (it is deduplicated against every benchmark), not in the study's.

    .venv/bin/python benchmarks/opd_sweep.py --world benchmarks/tmp/world/results

Writes ``benchmarks/results/<--name>.{json,png}`` (default ``opd_sweep_warmup``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from opd.claims import gap  # noqa: E402
from opd.io import write_json, write_parquet  # noqa: E402
from study import axes, best_within, host_record, run_study  # noqa: E402

VAL = "tiny_val"
RULE = ("highest gap recovered on tiny_val (the heldout split), each point with a linear warm-up of "
        "--warmup steps; a point within 0.01 of it with fewer steps, then a lower learning rate, wins")
TIE = 0.01


def exp_name(lr: float) -> str:
    return f"opd_lr{lr:.0e}".replace("+", "")


def choose(rows: list[dict]) -> dict:
    """The selection rule (module docstring) applied to the sweep's rows."""
    return best_within(rows, "gap_recovered", TIE, ("step", "lr"))


def family_prompts(world: Path, workdir: Path, families: list[str]) -> Path:
    """Write the train split's rows of ``families`` to ``<workdir>/train_<families>.parquet``."""
    import pandas as pd

    rows = pd.read_parquet(world / "world" / "problems" / "train.parquet")
    keep = rows[rows["extra_info"].map(lambda e: e["family"] in families)]
    if keep.empty:
        raise SystemExit(f"--families {families}: no train problem of these families in {world}")
    keep = keep.reset_index(drop=True)
    out = workdir / f"train_{'_'.join(families)}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    ids = [e["question"] for e in keep["extra_info"]]
    if not (out.exists() and [e["question"] for e in pd.read_parquet(out)["extra_info"]] == ids):
        write_parquet(keep, out)  # rewritten only when the problems differ: the sweep's jobs stay done
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default=str(ROOT / "results"), help="results/ of a built world")
    ap.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 5e-4, 1e-3])
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--warmup", type=int, default=10, help="train.lr_warmup_steps of every point")
    ap.add_argument("--name", default="opd_sweep_warmup", help="benchmarks/results/<name>.{json,png}")
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the world's and the training's seed (--world: that seed's)")
    ap.add_argument("--families", nargs="+", default=None,
                    help="train only on the train split's problems of these families (e.g. mul)")
    ap.add_argument("--mini-batch-size", type=int, default=None,
                    help="train.mini_batch_size of every point (null: one update a step)")
    ap.add_argument("--also", nargs="*", default=[],
                    help="more model keys to grade on tiny_val (e.g. opd_coldstart.sft); not selected on")
    args = ap.parse_args()
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    base = config["experiments"]["opd"]
    suffix = f"_seed{args.seed}" if args.seed else ""
    tag = ("_" + "_".join(args.families) if args.families else "") + (
        f"_mb{args.mini_batch_size}" if args.mini_batch_size else "")
    workdir = ROOT / "benchmarks" / "tmp" / f"opd_sweep{tag}{suffix}"
    dst = workdir / "results" / "world"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(Path(args.world) / "world", dst, copy_function=shutil.copy2)
    train = {"mini_batch_size": args.mini_batch_size} if args.mini_batch_size else {}
    exps = {exp_name(lr): dict(base, train={"lr": lr, "lr_warmup_steps": args.warmup, **train}) for lr in args.lrs}
    overlay = {"data": {"benchmarks": {VAL: {"source": "world:heldout", "prompt_style": "keep"}}},
               "figures": {"benchmark": VAL}, "experiments": exps,
               "train_defaults": {"steps": args.steps, "save_every": args.every}}
    if args.seed:
        overlay["seed"] = args.seed
    if args.families:
        overlay["data"]["train"] = {"source": str(family_prompts(Path(args.world), workdir, args.families)),
                                    "prompt_style": "keep"}
    steps = list(range(args.every, args.steps + 1, args.every))
    keys = [base["student"], base["teacher"]] + [f"{e}.step{s:04d}" for e in exps for s in steps]
    _, wall = run_study(workdir, [f"results/grades/{k}/{VAL}.json" for k in keys + args.also],
                        config=overlay, cores=args.cores)
    also = {k: json.loads((workdir / "results" / "grades" / k / f"{VAL}.json").read_text()) for k in args.also}
    grades = {k: json.loads((workdir / "results" / "grades" / k / f"{VAL}.json").read_text()) for k in keys}
    rows = []
    for lr in args.lrs:
        e = exp_name(lr)
        for s in steps:
            at = {k: v for k, v in grades.items() if ".step" not in k or k == f"{e}.step{s:04d}"}
            g = gap(at, exps, e)
            ck = grades[f"{e}.step{s:04d}"]
            rows.append({"lr": lr, "step": s, "accuracy": ck["mean_score"], "accuracy_se": ck["mean_score_se"],
                         "gap_recovered": g[0], "gap_recovered_se": g[1]})
            print(f"lr {lr:.0e} step {s}: {VAL} {ck['mean_score']:.3f} ± {ck['mean_score_se']:.3f}, gap "
                  f"{g[0]:.2f} ± {g[1]:.2f}", flush=True)
    pick = choose(rows)
    print(f"chosen by the rule: lr {pick['lr']:.0e}, {pick['step']} steps", flush=True)
    out = ROOT / "benchmarks" / "results" / f"{args.name}{suffix}"
    ref = {k: {"accuracy": grades[k]["mean_score"], "se": grades[k]["mean_score_se"]}
           for k in (base["student"], base["teacher"])}
    write_json({"benchmark": VAL, "split": "world:heldout", "seed": args.seed, "rule": RULE, "warmup": args.warmup, "chosen": pick, "base": ref,
                "rows": rows, "also": {k: {"accuracy": g["mean_score"], "se": g["mean_score_se"]} for k, g in also.items()},
                "wall_s": wall, **host_record(args.cores)}, f"{out}.json")
    fig, ax = axes()
    for lr in args.lrs:
        r = [x for x in rows if x["lr"] == lr]
        ax.errorbar([0] + steps, [0.0] + [x["gap_recovered"] for x in r],
                    yerr=[0.0] + [x["gap_recovered_se"] for x in r], marker="o", capsize=3, label=f"lr {lr:.0e}")
    ax.axhline(0.5, ls=":", color="gray", label="half the gap")
    ax.set(xlabel="OPD step", ylabel=f"gap recovered on {VAL}", title=f"opd: learning-rate sweep (warm-up {args.warmup})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=110)


if __name__ == "__main__":
    main()
