"""One experiment's OPD with TRL's trainer, in the TRL stack: ``python runner.py PLAN.json``.

Runs in the TRL stack's interpreter (``make env-trl``, or ``stacks.trl``) and imports only TRL,
transformers, datasets and torch, never ``opd``: the plan (``opd.train.trl.plan.make_plan``)
carries everything. ``plan["trainer"]`` picks the trainer:

* ``full_vocab``: ``trl.DistillationTrainer`` (reverse KL over the whole vocabulary, ``beta=1``).
  Its sampler is replaced by one that puts each of ``prompts_per_step`` shuffled prompts
  ``n_samples`` times into a rollout batch (TRL's own repeats each prompt once), and its prompt
  tokenisation by the token ids the project's chat template gave (``prompt`` column).
* ``sampled_token``: ``trl.experimental.iw_opd.IWOPDTrainer`` (IW-OPD with ``iw_opd_gamma=0``:
  sampled-token OPD), fed the same prompt ids by a collator; ``num_generations`` repeats them.
  Its loss divisor is replaced by the count of generated tokens in the step's whole batch
  (transformers counts the prompt-only labels, 0), the token mean ``DistillationTrainer`` takes.

Writes, per ``plan["paths"]``: ``saves/step_NNNN`` (``save_pretrained`` of the student and its
tokenizer) at each of ``checkpoint_steps``; ``log``: one JSON line ``{"step": N, ...TRL's logged
values}`` per step; ``rollouts``: one JSON line per generated sequence ``{"step", "row",
"response_ids", "finish_reason"}`` (``row``: the line of the prompts file), graded afterwards.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DistillationConfig, DistillationTrainer
from trl.experimental.iw_opd import IWOPDConfig, IWOPDTrainer
from trl.trainer.utils import RepeatSampler


class Rollouts:
    """Appends each generated sequence as one JSON line (response ids up to and including eos)."""

    def __init__(self, path, eos_ids: list[int]):
        self.path, self.eos = Path(path), set(eos_ids)
        self.path.write_text("")

    def add(self, step: int, rows: list[int], responses: list[list[int]]) -> None:
        with self.path.open("a") as fh:
            for row, ids in zip(rows, responses, strict=True):
                finish = "stop" if ids and ids[-1] in self.eos else "length"
                fh.write(json.dumps({"step": step, "row": int(row), "response_ids": [int(t) for t in ids],
                                     "finish_reason": finish}) + "\n")


class Checkpoints(TrainerCallback):
    """``save_pretrained`` of the student and tokenizer at the plan's checkpoint steps, and one
    log line per step (TRL's ``logs``, numbers only; the end-of-training summary is skipped)."""

    def __init__(self, saves, steps, tokenizer, log_path):
        self.saves, self.steps, self.tok, self.log = Path(saves), set(steps), tokenizer, Path(log_path)
        self.log.write_text("")

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step in self.steps:
            out = self.saves / f"step_{state.global_step:04d}"
            model.save_pretrained(out, safe_serialization=True)
            self.tok.save_pretrained(out)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "train_runtime" not in logs:
            row = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            with self.log.open("a") as fh:
                fh.write(json.dumps({"step": state.global_step, **row}) + "\n")


class FullVocabTrainer(DistillationTrainer):
    """``DistillationTrainer`` with the project's batch (prompts x ``n_samples``), the project's
    prompt ids, and its generated sequences recorded."""

    def __init__(self, *a, n_samples: int, prompts_per_step: int, rollouts: Rollouts, **kw):
        self.n_samples, self.prompts_per_step, self.rollouts = n_samples, prompts_per_step, rollouts
        super().__init__(*a, **kw)

    def _get_train_sampler(self, dataset=None):
        return RepeatSampler(data_source=dataset if dataset is not None else self.train_dataset,
                             mini_repeat_count=self.n_samples, batch_size=self.prompts_per_step,
                             repeat_count=self.args.gradient_accumulation_steps, shuffle=True, seed=self.args.seed)

    def _tokenize_prompts(self, prompts):
        return [list(p) for p in prompts], None, {}

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        mask = out["completion_mask"].bool().cpu()
        responses = [ids[m].tolist() for ids, m in zip(out["completion_ids"].cpu(), mask)]
        self.rollouts.add(self.state.global_step + 1, [x["row"] for x in inputs], responses)
        return out


def prompt_collator(pad_id: int):
    """IW-OPD's batch from prompt-id rows: left-padded ``prompts`` (= ``input_ids``), masks,
    all-ignored ``labels`` (on-policy generation fills them) and the rows' ``row`` numbers."""
    def collate(examples):
        width = max(len(e["prompt"]) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(examples):
            ids[i, width - len(e["prompt"]):] = torch.tensor(e["prompt"])
            mask[i, width - len(e["prompt"]):] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.full_like(ids, -100),
                "prompts": ids.clone(), "prompt_attention_mask": mask.clone(),
                "row": torch.tensor([e["row"] for e in examples])}
    return collate


class SampledTokenTrainer(IWOPDTrainer):
    """IW-OPD at ``iw_opd_gamma=0`` dividing by the generated-token count of the step's batch."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's token count

    def __init__(self, *a, rollouts: Rollouts, **kw):
        self.rollouts = rollouts
        super().__init__(*a, **kw)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.model.training:
            num_items_in_batch = sum((b["labels"] != -100).sum() for b in self._buffered_inputs).clamp(min=1)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _generate_with_model(self, slices, on_policy_indices):
        super()._generate_with_model(slices, on_policy_indices)
        for i in on_policy_indices:
            b = self._buffered_inputs[i]
            width = b["prompts"].shape[1]
            keep = (b["labels"][:, width:] != -100).cpu()
            responses = [ids[m].tolist() for ids, m in zip(b["input_ids"][:, width:].cpu(), keep)]
            self.rollouts.add(self.state.global_step + 1, b["row"].tolist(), responses)


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    paths, kind = plan["paths"], plan["trainer"]
    print(f"trl {trl.__version__}: {plan['trainer_class']} ({kind}), torch {torch.__version__}", flush=True)
    rows = [json.loads(line) for line in Path(paths["prompts"]).read_text().splitlines() if line.strip()]
    if len(rows) < plan["prompts_per_step"]:
        raise ValueError(f"{len(rows)} training prompts, fewer than prompts_per_step={plan['prompts_per_step']}: "
                         "TRL's sampler draws whole batches of distinct prompts")
    data = Dataset.from_list([{"prompt": r["prompt_ids"], "row": i} for i, r in enumerate(rows)])
    tok = AutoTokenizer.from_pretrained(paths["student"], local_files_only=True, padding_side="left")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    dtype = torch.bfloat16 if plan["args"].get("bf16") else torch.float32
    student, teacher = (AutoModelForCausalLM.from_pretrained(paths[m], dtype=dtype, local_files_only=True)
                        for m in ("student", "teacher"))
    eos = student.generation_config.eos_token_id
    if eos is None:  # IW-OPD stops only at the model's declared eos
        student.generation_config.eos_token_id = tok.eos_token_id
    eos_ids = sorted({tok.eos_token_id, *([] if eos is None else [eos] if isinstance(eos, int) else eos)})
    rollouts = Rollouts(paths["rollouts"], eos_ids)
    callbacks = [Checkpoints(paths["saves"], plan["checkpoint_steps"], tok, paths["log"])]
    if kind == "full_vocab":
        trainer = FullVocabTrainer(model=student, teacher_model=teacher, args=DistillationConfig(**plan["args"]),
                                   train_dataset=data, processing_class=tok, callbacks=callbacks,
                                   n_samples=plan["n_samples"], prompts_per_step=plan["prompts_per_step"],
                                   rollouts=rollouts)
    else:
        args = IWOPDConfig(**plan["args"], remove_unused_columns=False)
        trainer = SampledTokenTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                                      processing_class=tok, data_collator=prompt_collator(tok.pad_token_id),
                                      callbacks=callbacks, rollouts=rollouts)
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1])
