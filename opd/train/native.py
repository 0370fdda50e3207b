"""Native on-policy trainer for OPD and GRPO (the CPU default of the ``train`` stage).

One step, straight through:

1. sample ``prompts_per_step`` training prompts and ``n_samples`` student responses each
   (transformers ``generate`` at the rollout temperature, top_p 1);
2. score every response token without gradients: the student's and the teacher's final hidden
   states go to ``opd.objectives.score_tokens``, which forms the candidate set (the sampled token
   for ``top_k: 0`` and GRPO, a top-k family otherwise), the per-candidate rewards
   ``-(log p_student - log p_teacher) * w`` and the mechanism statistics, one chunk of response
   tokens at a time, so no full ``[tokens, vocab]`` fp32 tensor is ever held;
3. grade each response with ``opd.grading.verify.is_correct`` (the GRPO reward; logged for OPD);
4. turn rewards into advantages with the registered estimator and update the student with the
   registered policy loss through ``opd.objectives.policy_loss_backward`` (chunked backward);
5. log one line of ``metrics.jsonl`` and save a checkpoint every ``save_every`` steps.

Where it departs from the paper's verl runs: one process, no sequence packing, AdamW with a
constant learning rate, and ``mini_batch_size`` counted in sequences.

    trainer = OnPolicyTrainer(cfg, student, tokenizer, teacher=teacher, train_rows=rows)
    trainer.train(out_dir)
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import replace
from pathlib import Path

import torch

from opd import objectives as obj
from opd.generation.config import SamplingParams
from opd.generation.hf import generate
from opd.grading.verify import is_correct
from opd.train.config import TrainConfig
from opd.runlog import MetricsWriter, progress


def check_same_vocabulary(student_tok, teacher_tok, student, teacher) -> None:
    """Fail before any work when the teacher cannot score the student's tokens id for id."""
    problems = []
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        problems.append(f"tokenizers differ (student {len(student_tok)} tokens, teacher {len(teacher_tok)})")
    vs, vt = student.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0]
    if vs != vt:
        problems.append(f"LM heads differ (student vocab {vs}, teacher vocab {vt})")
    if problems:
        raise ValueError("teacher and student do not share a vocabulary: " + "; ".join(problems)
                         + ". OPD scores the student's token ids with the teacher, so pick a teacher "
                         "of the same tokenizer family, or cold-start the student from a model "
                         "with the teacher's tokenizer.")


def response_batch(rows: list[dict], pad_id: int):
    """Left-pad prompts and right-pad responses so every response starts at the same column.

    Returns ``input_ids [B, P+R]``, ``attention_mask``, ``position_ids``, the prompt width ``P``,
    ``tokens [B, R]`` (response ids) and ``mask [B, R]``.
    """
    P = max(len(r["prompt_ids"]) for r in rows)
    R = max(len(r["response_ids"]) for r in rows)
    B = len(rows)
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + R), dtype=torch.long)
    mask = torch.zeros((B, R), dtype=torch.bool)
    for i, r in enumerate(rows):
        p, resp = r["prompt_ids"], r["response_ids"]
        input_ids[i, P - len(p):P] = torch.tensor(p)
        input_ids[i, P:P + len(resp)] = torch.tensor(resp)
        attn[i, P - len(p):P + len(resp)] = 1
        mask[i, :len(resp)] = True
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attn, position_ids, P, input_ids[:, P:], mask


def response_hidden(model, input_ids, attn, position_ids, P: int, R: int):
    """Final (post-norm) hidden states at the positions that predict the response tokens."""
    out = model.model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids)
    return out.last_hidden_state[:, P - 1:P - 1 + R]


def slice_scored(scored, idx, width: int):
    """Rows ``idx`` and the first ``width`` response positions of a ``Scored`` batch."""
    return replace(scored, ids=scored.ids[idx, :width], valid=scored.valid[idx, :width],
                   rewards=scored.rewards[idx, :width], old_logp=scored.old_logp[idx, :width],
                   token_logp=scored.token_logp[idx, :width],
                   stats={k: v[idx, :width] for k, v in scored.stats.items()})


class OnPolicyTrainer:
    """Runs ``cfg.steps`` on-policy steps of OPD or GRPO on a student model, in place."""

    def __init__(self, cfg: TrainConfig, student, tokenizer, train_rows: list[dict],
                 teacher=None, teacher_tokenizer=None):
        if cfg.method == "opd":
            if teacher is None:
                raise ValueError("method 'opd' needs a teacher model")
            check_same_vocabulary(tokenizer, teacher_tokenizer or tokenizer, student, teacher)
        if not train_rows:
            raise ValueError("the training prompt set is empty")
        self.cfg, self.student, self.tok, self.teacher = cfg, student, tokenizer, teacher
        self.rows = train_rows
        self.ref = copy.deepcopy(student).eval() if cfg.objective.use_kl_loss else None
        for m in (self.teacher, self.ref):
            if m is not None:
                m.requires_grad_(False)
        self.opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.999), eps=cfg.adam_eps)
        self.rng = random.Random(cfg.seed)
        self.order: list[int] = []

    def next_prompts(self) -> list[int]:
        """Indices of the next prompts, walking through shuffled epochs of the training set."""
        while len(self.order) < self.cfg.prompts_per_step:
            fresh = list(range(len(self.rows)))
            self.rng.shuffle(fresh)
            self.order += fresh
        idx, self.order = self.order[:self.cfg.prompts_per_step], self.order[self.cfg.prompts_per_step:]
        return idx

    def rollout(self, step: int, prompt_idx: list[int]) -> list[dict]:
        o = self.cfg.objective
        params = SamplingParams(n=self.cfg.n_samples, temperature=o.student_temperature, top_p=1.0,
                                max_new_tokens=self.cfg.max_new_tokens,
                                seed=self.cfg.seed * 100003 + step, batch_size=1024)
        self.student.eval()
        samples = generate(self.student, self.tok, [self.rows[i]["prompt"] for i in prompt_idx],
                           params, enable_thinking=self.cfg.enable_thinking, show_progress=False)
        for s in samples:
            row = self.rows[prompt_idx[s["prompt_index"]]]
            s["group"] = prompt_idx[s["prompt_index"]]
            s["outcome"] = float(is_correct(s["response"], row["ground_truth"]))
        return samples

    @torch.no_grad()
    def score(self, batch):
        input_ids, attn, pos, P, tokens, mask = batch
        o, R = self.cfg.objective, tokens.shape[1]
        h_s = response_hidden(self.student, input_ids, attn, pos, P, R)
        w_s = self.student.get_output_embeddings().weight
        if self.cfg.method == "opd":
            h_t = response_hidden(self.teacher, input_ids, attn, pos, P, R)
            w_t = self.teacher.get_output_embeddings().weight
        else:
            h_t = w_t = None
        scored = obj.score_tokens(h_s, w_s, h_t, w_t, tokens, mask, o, o.chunk_size)
        ref_logp = None
        if self.ref is not None:
            h_r = response_hidden(self.ref, input_ids, attn, pos, P, R)
            ref_logp = obj.score_tokens(h_r, self.ref.get_output_embeddings().weight, None, None,
                                        tokens, mask, o, o.chunk_size).token_logp
        return scored, ref_logp

    def update(self, batch, scored, adv, ref_logp) -> dict:
        """``ppo_epochs`` passes over mini-batches; gradient accumulation over micro-batches."""
        input_ids, attn, pos, P, tokens, mask = batch
        cfg, o, B = self.cfg, self.cfg.objective, tokens.shape[0]
        mini = cfg.mini_batch_size or B
        stats: dict[str, list[float]] = {}
        self.student.train()
        w = self.student.get_output_embeddings().weight
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B, generator=torch.Generator().manual_seed(self.rng.randrange(2**31)))
            for m0 in range(0, B, mini):
                mb = perm[m0:m0 + mini]
                micro = [mb[i:i + cfg.micro_batch_size] for i in range(0, len(mb), cfg.micro_batch_size)]
                self.opt.zero_grad(set_to_none=True)
                for idx in micro:
                    R = int(mask[idx].sum(-1).max())
                    h = response_hidden(self.student, input_ids[idx][:, :P + R], attn[idx][:, :P + R],
                                        pos[idx][:, :P + R], P, R)
                    sub = slice_scored(scored, idx, R)
                    out = obj.policy_loss_backward(
                        h, w, tokens[idx][:, :R], mask[idx][:, :R], sub, adv[idx][:, :R], o,
                        o.chunk_size, ref_logp=None if ref_logp is None else ref_logp[idx][:, :R],
                        loss_scale=1.0 / len(micro))
                    for k, v in out.items():
                        stats.setdefault(k, []).append(float(v))
                gnorm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.grad_clip)
                stats.setdefault("grad_norm", []).append(float(gnorm))
                self.opt.step()
        self.student.eval()
        return {f"train/{k}": sum(v) / len(v) for k, v in stats.items()}

    def step(self, step: int) -> dict:
        t0 = time.time()
        o = self.cfg.objective
        samples = self.rollout(step, self.next_prompts())
        t1 = time.time()
        batch = response_batch(samples, self.tok.pad_token_id)
        scored, ref_logp = self.score(batch)
        mask = batch[5]
        outcome = torch.tensor([s["outcome"] for s in samples])
        groups = torch.tensor([s["group"] for s in samples])
        adv = obj.ADV_ESTIMATORS.get(o.adv_estimator)(scored.rewards, scored.valid, mask, outcome,
                                                      groups, o)
        t2 = time.time()
        metrics = self.update(batch, scored, adv, ref_logp)
        lengths = mask.sum(-1).float()
        metrics.update({
            "rollout/accuracy": outcome.mean().item(),
            "rollout/mean_length": lengths.mean().item(),
            "rollout/clip_ratio": sum(s["finish_reason"] == "length" for s in samples) / len(samples),
            "train/advantage_mean": (adv * scored.valid).sum().item() / max(1, int(scored.valid.sum())),
            "time/rollout_s": t1 - t0, "time/score_s": t2 - t1, "time/update_s": time.time() - t2,
        })
        metrics.update(obj.mechanism_metrics(scored.stats, mask))
        return metrics

    def train(self, out_dir, save_fn) -> None:
        """Run all steps; ``save_fn(step)`` writes a checkpoint at each of ``checkpoint_steps``."""
        writer = MetricsWriter(Path(out_dir) / "metrics.jsonl")
        saves = set(self.cfg.checkpoint_steps())
        bar = progress(range(1, self.cfg.steps + 1), desc=f"{self.cfg.method} steps")
        for step in bar:
            metrics = self.step(step)
            writer.log(step, metrics)
            bar.set_postfix(acc=f"{metrics['rollout/accuracy']:.2f}", loss=f"{metrics.get('train/loss', 0):.3f}")
            if step in saves:
                save_fn(step)


def run_train(*, cfg: TrainConfig, exp: str, student: str, teacher: str | None, prompts: str,
              checkpoints: str, metrics: str, options: dict, stack: str | None = None,
              val: str | None = None) -> None:
    """The ``native`` train backend: ``cfg.steps`` steps in this process, ``step_NNNN``
    checkpoints in ``checkpoints`` and one ``metrics.jsonl`` line per step."""
    from opd.checkpoint import save_hf
    from opd.generation.hf import load_model, load_tokenizer
    from opd.io import flat_view, read_parquet

    rows = flat_view(read_parquet(prompts), prompts)[["problem_id", "prompt", "ground_truth"]].to_dict("records")
    tok, net = load_tokenizer(student), load_model(student)
    teacher_tok = teacher_net = None
    if cfg.method == "opd":
        teacher_tok, teacher_net = load_tokenizer(teacher), load_model(teacher)
    trainer = OnPolicyTrainer(cfg, net, tok, rows, teacher=teacher_net, teacher_tokenizer=teacher_tok)
    trainer.train(Path(metrics).parent, lambda step: save_hf(net, tok, Path(checkpoints) / f"step_{step:04d}"))
