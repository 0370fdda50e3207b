"""Accuracy by problem family (add, mul) of the models behind the claims, on each seed's run of
``benchmarks/claims_seeds.py``: where OPD's gain comes from (the student lacks mul, not add).

Reads the graded samples of ``figures.benchmark`` (``results/grades/<model>/<bench>.verdicts.parquet``)
and the benchmark's source split (``world:<split>``), whose rows name their family. Seed 0 is the repository's
``results/``; seed N is ``benchmarks/tmp/claims_seed<N>/results/``. Runs nothing.

    .venv/bin/python benchmarks/family_accuracy.py              # seeds 0, 1 and 2

Writes ``benchmarks/results/family_accuracy.json``: per seed and model, avg@n overall and by family.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402


def final_step(results: Path, exp: str, bench: str) -> str | None:
    """The model key of ``exp``'s last graded checkpoint, or None."""
    steps = sorted(p.parent.name for p in results.glob(f"grades/{exp}.step*/{bench}.verdicts.parquet"))
    return steps[-1] if steps else None


def by_family(results: Path, key: str, bench: str, families: dict[str, str]) -> dict:
    """avg@n of model ``key`` overall and per family (``families``: benchmark problem id -> family)."""
    v = pd.read_parquet(results / "grades" / key / f"{bench}.verdicts.parquet")
    v["family"] = v["problem_id"].map(families)
    if v["family"].isna().any():
        raise SystemExit(f"{key}: graded problems without a family in the benchmark's split")
    out = {"all": float(v["correct"].mean())}
    out.update({f: float(g["correct"].mean()) for f, g in v.groupby("family")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    bench = config["figures"]["benchmark"]
    exps = config["experiments"]
    rows = {}
    for seed in args.seeds:
        results = ROOT / "results" if seed == 0 else ROOT / "benchmarks" / "tmp" / f"claims_seed{seed}" / "results"
        if not (results / "tables" / "claims.csv").exists():
            raise SystemExit(f"seed {seed}: no finished run in {results} (run benchmarks/claims_seeds.py)")
        source = config["data"]["benchmarks"][bench]["source"]
        if not source.startswith("world:"):
            raise SystemExit(f"data.benchmarks.{bench}.source is {source!r}: families exist in the tiny world only")
        split = pd.read_parquet(results / "world" / "problems" / f"{source[len('world:'):]}.parquet")
        families = {f"{bench}-{e['problem_id']}": e["family"] for e in split["extra_info"]}
        keys = {m: m for m in ("student", "teacher", "teacher_think", "grpo_student")}
        keys.update({e: final_step(results, e, bench) for e in exps if exps[e]["method"] == "opd"})
        keys.update({f"{e}.sft": f"{e}.sft" for e in exps if exps[e].get("cold_start")})
        rows[seed] = {name: {"model": key, **by_family(results, key, bench, families)}
                      for name, key in keys.items() if key and (results / "grades" / key).exists()}
        for name, r in rows[seed].items():
            fams = " ".join(f"{f} {v:.3f}" for f, v in r.items() if f not in ("model", "all"))
            print(f"seed {seed} {name:18s} {r['all']:.3f}  ({fams})")
    write_json({"benchmark": bench, "seeds": rows}, ROOT / "benchmarks" / "results" / "family_accuracy.json")


if __name__ == "__main__":
    main()
