"""The cost and the effect of the CPU kernel pins: the tiny world built with and without them.

Builds the world (problem splits, tokenizer, every world model: the bulk of ``make run``) up to
its fingerprint, ``snakemake results/fingerprint.json``, in fresh scratch folders, alternating
``kernels: reproducible`` and ``kernels: native`` in the order R N N R (so a drift in the
machine's load weighs on both), each build timed end to end and by its world_model jobs
(Snakemake's benchmark files). The ratio of the mean times is the cost of the pins (target: at
most 1.10). The fingerprints show the effect: the two pinned builds must be identical, and
native differs from pinned where the host's kernels are not the pinned ones (an AVX-512 host;
opd/kernels.py).

    flock /tmp/heavy.lock .venv/bin/python benchmarks/pins_overhead.py             # default world
    .venv/bin/python benchmarks/pins_overhead.py --configfile config/config.yaml tests/configs/small.yaml \\
        --order RN --out /tmp/pins_small.json                                      # a quick check

Writes ``benchmarks/results/pins_overhead.json`` and keeps each build's fingerprint beside it
(``--keep`` keeps the scratch folders).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.fingerprint import compare  # noqa: E402
from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402

MODES = {"R": "reproducible", "N": "native"}


def build(workdir: Path, mode: str, configfiles: list[str], cores: int) -> dict:
    """One world build in ``workdir``: wall seconds, world_model job seconds, the fingerprint."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--cores", str(cores), "--configfile", *configfiles,
           "--config", f"kernels={mode}", "--", "results/fingerprint.json"]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"world build ({mode}) failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    jobs = {}
    for tsv in sorted((workdir / "results/benchmarks/world_model").glob("*.tsv")):
        with open(tsv) as fh:
            jobs[tsv.stem] = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    fp = json.loads((workdir / "results/fingerprint.json").read_text())
    return {"mode": mode, "wall_s": wall, "world_model_s": jobs,
            "world_model_total_s": sum(jobs.values()), "fingerprint": fp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configfile", nargs="+", default=[str(ROOT / "config" / "config.yaml")])
    ap.add_argument("--order", default="RNNR", help="R (reproducible) and N (native), in run order")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pins_overhead.json"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = ap.parse_args()
    if set(args.order) - set(MODES) or not {"R", "N"} <= set(args.order):
        raise SystemExit("--order: a string of R and N with at least one of each, e.g. RNNR")
    scratch = Path(tempfile.mkdtemp(prefix="pins_overhead-"))
    runs = []
    load_before = os.getloadavg()[0]
    try:
        for i, key in enumerate(args.order):
            run = build(scratch / f"{i}{key}", MODES[key], args.configfile, args.cores)
            runs.append(run)
            print(f"{i} {run['mode']:12s} {run['wall_s']:7.1f} s (world_model jobs "
                  f"{run['world_model_total_s']:.1f} s) world {run['fingerprint']['world_sha256'][:12]}",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in MODES.values()}
    mean = {m: {k: statistics.mean(r[k] for r in rs) for k in ("wall_s", "world_model_total_s")}
            for m, rs in by_mode.items()}
    worlds = {m: sorted({r["fingerprint"]["world_sha256"] for r in rs}) for m, rs in by_mode.items()}
    rep, nat = by_mode["reproducible"], by_mode["native"]
    _, native_vs_pinned = compare(rep[0]["fingerprint"], nat[0]["fingerprint"])
    ratio = mean["reproducible"]["wall_s"] / mean["native"]["wall_s"]
    result = {
        "what": "the tiny world built up to results/fingerprint.json with kernels: reproducible "
                "(pinned) and native, alternating; ratio = mean pinned / mean native wall time",
        "configfiles": [os.path.relpath(c, ROOT) for c in args.configfile], "order": args.order,
        "cores": args.cores,
        "runs": [{k: v for k, v in r.items() if k != "fingerprint"} | {
            "world_sha256": r["fingerprint"]["world_sha256"], "artifacts": r["fingerprint"]["artifacts"],
            "kernels": r["fingerprint"]["kernels"]} for r in runs],
        "mean_s": mean,
        "ratio_pinned_over_native": ratio,
        "ratio_world_model_jobs": mean["reproducible"]["world_model_total_s"] / mean["native"]["world_model_total_s"],
        "target_ratio": 1.10, "meets_target": ratio <= 1.10,
        "pinned_builds_identical": len(worlds["reproducible"]) == 1,
        "native_builds_identical": len(worlds["native"]) == 1,
        "native_differs_from_pinned": worlds["native"] != worlds["reproducible"],
        "native_vs_pinned": native_vs_pinned,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                    "native_capability": runs[0]["fingerprint"]["host"]["native_capability"],
                    "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0],
                    "python": platform.python_version()},
    }
    write_json(result, args.out)
    fps = Path(args.out).with_suffix("")
    fps.mkdir(exist_ok=True)
    for i, r in enumerate(runs):
        write_json(r["fingerprint"], fps / f"{i}_{r['mode']}.json")
    print(f"pinned / native: x{ratio:.3f} (world_model jobs x{result['ratio_world_model_jobs']:.3f}); "
          f"pinned builds identical: {result['pinned_builds_identical']}; native differs: "
          f"{result['native_differs_from_pinned']} -> {args.out}")


if __name__ == "__main__":
    main()
