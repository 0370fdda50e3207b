"""TRL's side of ``benchmarks/trl_speed.py``: ``GKDTrainer`` steps, timed; run in the TRL venv.

Imports only TRL, transformers and datasets (``benchmarks/.venv-trl``, never the project's
environment).  Fully on-policy reverse-KL GKD (``lmbda=1``, ``beta=1``) on the prompts and
models ``trl_speed.py`` wrote, gradient checkpointing and bf16 off (on by default, useless on
a CPU), constant lr.  Prints one JSON line: per-step wall times (between the ends of
consecutive steps, after ``--warmup``), response tokens per step (sampled tokens up to and
including eos, as GKD's labels count them) and the median ``generate`` time.

    benchmarks/.venv-trl/bin/python benchmarks/trl_gkd_worker.py --worker trl --student DIR --teacher DIR
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "tmp" / "trl_speed"


def worker_trl(a) -> dict:
    import torch
    torch.set_num_threads(a.threads)
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    rows = json.loads((WORK / "prompts.json").read_text())
    tok = AutoTokenizer.from_pretrained(a.student)
    student = AutoModelForCausalLM.from_pretrained(a.student, dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(a.teacher, dtype=torch.float32)
    data = Dataset.from_list([{"messages": r["prompt"] + [{"role": "assistant", "content": r["solution"]}]}
                              for r in rows for _ in range(a.samples)])
    counts, gen_s = [], []

    class Timed(GKDTrainer):
        @staticmethod
        def generate_on_policy_outputs(model, inputs, generation_config):
            t0 = time.perf_counter()
            out = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
            gen_s.append(time.perf_counter() - t0)
            counts.append(int((out[2] != -100).sum()))
            return out

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    args = GKDConfig(
        output_dir=str(WORK / "trl_out"), per_device_train_batch_size=len(data), gradient_accumulation_steps=1,
        max_steps=a.warmup + a.steps, learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, lmbda=1.0, beta=1.0, temperature=a.temperature,
        max_new_tokens=a.max_new_tokens, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0,
        dataloader_num_workers=0)
    trainer = Timed(model=student, teacher_model=teacher, args=args, train_dataset=data, processing_class=tok,
                    callbacks=[Clock()])
    trainer.train()
    step_s = [b - e for e, b in zip(ends[a.warmup - 1:], ends[a.warmup:])]
    return {"step_s": step_s, "tokens": counts[a.warmup:], "trl": trl.__version__,
            "phases_s": {"generate": statistics.median(gen_s[a.warmup:])}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=("trl",), default="trl")
    ap.add_argument("--student", required=True)
    ap.add_argument("--teacher", required=True)
    for name, kind in (("--steps", int), ("--warmup", int), ("--threads", int), ("--samples", int),
                       ("--max-new-tokens", int), ("--lr", float), ("--temperature", float)):
        ap.add_argument(name, type=kind, required=True)
    print(json.dumps(worker_trl(ap.parse_args())))


if __name__ == "__main__":
    main()
