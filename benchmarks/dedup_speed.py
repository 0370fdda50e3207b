"""Deduplication speed: DeepMath-14k against DAPO-Math-17k, end to end, on this machine's CPUs.

Times ``opd.data.dedup.dedup`` on the real files from ``../shared/data/train`` (about 32k questions
to embed with the bundled all-MiniLM-L6-v2): loading both datasets, loading the encoder,
exact matching, embedding both sides, and the exact chunked similarity search. Writes
``benchmarks/results/dedup_speed.json`` with the timings, the counts per phase, the settings,
the machine (cores, load average before and after, the batches run per thread count, and the
process CPU time: other jobs on a shared machine slow the run down, and CPU time over wall
time shows how much of the two cores this run got) and whether the 5-minute target was met,
and prints a table. Run from the
repository root::

    .venv/bin/python benchmarks/dedup_speed.py                      # a few minutes on 2 cores
    .venv/bin/python benchmarks/dedup_speed.py --max-seq-length 256 --precision fp32
    .venv/bin/python benchmarks/dedup_speed.py --limit 2000          # quick smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402
from opd.data.datasets import load_dataset  # noqa: E402
from opd.data.dedup import dedup  # noqa: E402
from opd.data.embeddings import (DEFAULT_BATCH_SIZE, DEFAULT_MAX_SEQ_LENGTH,  # noqa: E402
                            load_encoder, resolve_precision)

TARGET_S = 300.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--max-seq-length", type=int, default=DEFAULT_MAX_SEQ_LENGTH)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--limit", type=int, default=None, help="use the first N rows of each file")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dedup_speed.json"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    data = Path(args.data)
    load_before = os.getloadavg()
    cpu_start = time.process_time()
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    cand = load_dataset(data / "train" / "deepmath-14k.parquet", split="train")
    ref = load_dataset(data / "train" / "dapo-math-17k.parquet", split="train")
    if args.limit:
        cand, ref = cand.head(args.limit), ref.head(args.limit)
    t_load_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = load_encoder(max_seq_length=args.max_seq_length)
    t_load_enc = time.perf_counter() - t0
    kept, report = dedup(cand, ref, threshold=args.threshold, batch_size=args.batch_size,
                         encoder=enc, precision=args.precision, progress=not args.no_progress)
    total = time.perf_counter() - t_all
    cpu_time = time.process_time() - cpu_start
    import torch

    timings = {"load_data_s": round(t_load_data, 2), "load_encoder_s": round(t_load_enc, 2),
               **{k: round(v, 2) for k, v in report["timings"].items()},
               "end_to_end_s": round(total, 2), "process_cpu_s": round(cpu_time, 2)}
    result = {
        "benchmark": "dedup deepmath-14k against dapo-math-17k, end to end",
        "target_s": TARGET_S,
        "target_met": total < TARGET_S,
        "timings": timings,
        "texts_embedded": (report["n_reference"] + report["n_candidates"]
                           - report["removed_exact"] - report["removed_within_candidates"]),
        "counts": {k: report[k] for k in ("n_candidates", "n_reference", "removed_exact",
                                          "removed_within_candidates", "removed_semantic",
                                          "n_kept")},
        "settings": {"threshold": args.threshold, "batch_size": args.batch_size,
                     "max_seq_length": enc.max_seq_length, "precision": args.precision,
                     "precision_used": resolve_precision(args.precision),
                     "limit": args.limit, "encoder": enc.path},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": cpu_model(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads_used": enc.threads_used,
                    "cpu_utilisation": round(cpu_time / total, 2),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "note": (f"wall times on a machine shared with other jobs (load average "
                 f"{load_before[0]:.2f} at the start); this run used {cpu_time / total:.2f} of "
                 f"{os.cpu_count()} cores on average"),
        "kept_similarity_quantiles": report["kept_similarity_quantiles"],
        "examples": {k: v[:3] for k, v in report["examples"].items()},
    }
    write_json(result, args.out)
    _print_table(result)
    print(f"wrote {args.out}")
    return result



def _print_table(r: dict) -> None:
    rows = [(k, f"{v:.2f} s") for k, v in r["timings"].items()]
    rows += [("cpu_utilisation", f"{r['machine']['cpu_utilisation']:.2f} cores")]
    rows += [(k, str(v)) for k, v in r["counts"].items()]
    rows += [("texts_embedded", str(r["texts_embedded"])),
             ("max_seq_length / precision",
              f"{r['settings']['max_seq_length']} / {r['settings']['precision_used']}"),
             ("cores / load before->after",
              f"{r['machine']['cpu_count']} / {r['machine']['loadavg_before'][0]}"
              f"->{r['machine']['loadavg_after'][0]}"),
             (f"target < {r['target_s']:.0f} s", "met" if r["target_met"] else "NOT met")]
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 16))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>12}")
    print("-" * (width + 16))


if __name__ == "__main__":
    main()
