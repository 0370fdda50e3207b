"""The cold start's SFT budget (C5), chosen on the cold-started student's own validation accuracy
before any OPD run from it (issue 22: "a cold start that lets the student carry the teacher's
style before OPD").

In iteration 5, two epochs of SFT (75 steps at lr 5e-4) on 1,200 ``teacher_think`` rollouts left
the student at 0.02-0.06 in thinking mode, and OPD from there collapsed. This sweep trains the
cold start of ``opd_coldstart`` (the ``sft`` section: ``lr`` x ``epochs`` of the grid) on a built
world copied from ``--world``, in one working directory (``benchmarks/tmp/coldstart_sweep/``,
the teacher's rollouts made once), and grades each cold-started student on **``tiny_val``, the
world's ``heldout`` split**, in the experiment's thinking mode -- never on ``tiny_eval``.

**Selection rule (written before the sweep ran; not changed after):** the highest ``tiny_val``
accuracy of ``opd_coldstart.sft``; a point within 0.01 of it with fewer epochs, then a lower
learning rate, wins the tie.  The chosen ``lr`` and ``epochs`` become ``sft`` of
``config/config.yaml``; the claims are read only after that.

Not part of ``make run``.

    .venv/bin/python benchmarks/coldstart_sweep.py

Writes ``benchmarks/results/coldstart_sweep.{json,png}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from opd.io import write_json  # noqa: E402
from study import axes, best_within, host_record, run_study, seed_world  # noqa: E402

VAL = "tiny_val"
EXP = "opd_coldstart"
TIE = 0.01
RULE = ("highest tiny_val accuracy of the cold-started student (thinking mode); a point within 0.01 "
        "of it with fewer epochs, then a lower learning rate, wins")


def choose(rows: list[dict]) -> dict:
    """The selection rule (module docstring) applied to the sweep's rows."""
    return best_within(rows, "accuracy", TIE, ("epochs", "lr"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 1e-3])
    ap.add_argument("--epochs", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    workdir = ROOT / "benchmarks" / "tmp" / "coldstart_sweep"
    seed_world(workdir, ("world",))
    rows, wall = [], 0.0
    key = f"{EXP}.sft"
    for lr in args.lrs:
        for epochs in args.epochs:
            overlay = {"data": {"benchmarks": {VAL: {"source": "world:heldout", "prompt_style": "keep"}}},
                       "figures": {"benchmark": VAL}, "sft": {"lr": lr, "epochs": epochs}}
            _, took = run_study(workdir, [f"results/grades/{key}/{VAL}.json"], config=overlay, cores=args.cores)
            wall += took
            g = json.loads((workdir / "results" / "grades" / key / f"{VAL}.json").read_text())
            rows.append({"lr": lr, "epochs": epochs, "accuracy": g["mean_score"], "accuracy_se": g["mean_score_se"]})
            print(f"sft lr {lr:.0e} epochs {epochs}: {VAL} {g['mean_score']:.3f} ± {g['mean_score_se']:.3f}",
                  flush=True)
    pick = choose(rows)
    print(f"chosen by the rule: sft lr {pick['lr']:.0e}, {pick['epochs']} epochs", flush=True)
    out = ROOT / "benchmarks" / "results" / "coldstart_sweep"
    write_json({"benchmark": VAL, "split": "world:heldout", "experiment": EXP, "rule": RULE, "chosen": pick,
                "rows": rows, "wall_s": wall, **host_record(args.cores)}, f"{out}.json")
    fig, ax = axes()
    for lr in args.lrs:
        r = [x for x in rows if x["lr"] == lr]
        ax.errorbar([x["epochs"] for x in r], [x["accuracy"] for x in r], yerr=[x["accuracy_se"] for x in r],
                    marker="o", capsize=3, label=f"sft lr {lr:.0e}")
    ax.set(xlabel="SFT epochs on the teacher's rollouts", ylabel=f"{VAL} accuracy (thinking mode)",
           title=f"{EXP}: the cold start before OPD")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=110)


if __name__ == "__main__":
    main()
