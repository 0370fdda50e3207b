"""Native on-policy trainer for OPD and GRPO (the CPU default of the ``train`` stage).

One step, straight through:

1. sample ``prompts_per_step`` training prompts and ``n_samples`` student responses each at
   the rollout temperature, top_p 1 (``opd.train.sampler``: the model calls of transformers
   ``generate`` with less work per token; prompts are chat-templated once);
2. grade each response with ``opd.grading.verify.is_correct`` (the GRPO reward; logged for OPD;
   its math-verify worker is started with the trainer, so it never stalls a step);
3. score every response token without gradients: the student's final hidden states (kept by
   the sampler as it drew each token, so the student needs no second forward) and the
   teacher's go to ``opd.objectives.score_tokens``, which forms the candidate set (the sampled token
   for ``top_k: 0`` and GRPO, a top-k family otherwise), the per-candidate rewards
   ``-(log p_student - log p_teacher) * w`` and the mechanism statistics, one chunk of response
   tokens at a time, so no full ``[tokens, vocab]`` fp32 tensor is ever held;
4. turn rewards into advantages with the registered estimator and update the student with the
   registered policy loss through ``opd.objectives.policy_loss_backward`` (chunked backward);
5. log one line of ``metrics.jsonl`` and save a checkpoint every ``save_every`` steps.

**One student forward per step** where the math allows it: with one optimiser step per rollout
batch (``ppo_epochs: 1``, one mini-batch: the paper's recipe; the tiny world takes four) the sampling
policy is the updated one, every PPO ratio is exactly 1, and the student's scoring forward would
duplicate the update's.  Then step 3 scores only the teacher (and the reference model), and
steps 3-4's student half runs inside the update's own forward
(``opd.objectives.single_forward.score_and_backward``: old log-probs = the update's, detached),
giving the same losses, gradients and metrics.  Wherever old and new policies differ (several
epochs or mini-batches), or the estimator is not position-local, the two-forward path runs; its
first forward is the sampler's own (the states it kept while drawing: the sampling policy's
old log-probs, equal to a scoring forward's up to float rounding; verl recomputes them with a
forward of the actor, which the tiny world's step cannot afford).

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
from opd.generation.hf import encode_prompts
from opd.grading.pool import start_shared
from opd.grading.verify import is_correct
from opd.objectives.chunked import Scored
from opd.objectives.single_forward import POSITION_LOCAL_ESTIMATORS, estimator_fn, score_and_backward
from opd.train.config import TrainConfig
from opd.train.sampler import rollout_hidden, sample
from opd.runlog import MetricsWriter, progress


def to_device(batch, device):
    """A ``response_batch`` tuple (or None) with its tensors on ``device``."""
    if batch is None:
        return None
    return tuple(t.to(device) if torch.is_tensor(t) else t for t in batch)


class PhaseClock:
    """Seconds (``time/<phase>_s``) and, on CUDA, peak memory (``memory/<phase>_peak_gib``) of
    the phases of a step; on CUDA it synchronises first, so queued work counts where it ran."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.out: dict[str, float] = {}
        self._sync_reset()
        self.t = time.time()

    def _sync_reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def mark(self, phase: str) -> None:
        """End ``phase`` now."""
        if self.cuda:
            torch.cuda.synchronize()
            self.out[f"memory/{phase}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        now = time.time()
        self.out[f"time/{phase}_s"] = now - self.t
        self._sync_reset()
        self.t = time.time()

    def metrics(self) -> dict[str, float]:
        return dict(self.out)


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


def merge_scored(parts: list, B: int, L: int):
    """One ``Scored`` [B, L, ...] and advantages [B, L, M] from micro-batch pieces
    ``(idx, scored, adv)``, each covering rows ``idx`` and their first positions."""
    s0, a0 = parts[0][1], parts[0][2]

    def new(x):
        return x.new_zeros((B, L) + tuple(x.shape[2:]))
    out = Scored(new(s0.ids), new(s0.valid), new(s0.rewards), new(s0.old_logp), new(s0.token_logp),
                 {k: new(v) for k, v in s0.stats.items()})
    adv = new(a0)
    for idx, s, a in parts:
        R = s.ids.shape[1]
        for dst, src in ((out.ids, s.ids), (out.valid, s.valid), (out.rewards, s.rewards),
                         (out.old_logp, s.old_logp), (out.token_logp, s.token_logp), (adv, a)):
            dst[idx, :R] = src
        for k, v in s.stats.items():
            out.stats[k][idx, :R] = v
    return out, adv


class OnPolicyTrainer:
    """Runs ``cfg.steps`` on-policy steps of OPD or GRPO on a student model, in place."""

    def __init__(self, cfg: TrainConfig, student, tokenizer, train_rows: list[dict],
                 teacher=None, teacher_tokenizer=None, single_forward: bool | None = None):
        """``single_forward``: None = one student forward per step whenever the math allows it
        (see the module doc), False = always the two-forward path, True = required (raises if
        the config does not allow it)."""
        if cfg.method == "opd":
            if teacher is None:
                raise ValueError("method 'opd' needs a teacher model")
            check_same_vocabulary(tokenizer, teacher_tokenizer or tokenizer, student, teacher)
        if not train_rows:
            raise ValueError("the training prompt set is empty")
        self.cfg, self.student, self.tok, self.teacher = cfg, student, tokenizer, teacher
        self.device = next(student.parameters()).device
        self.teacher_tok = teacher_tokenizer or tokenizer
        self.teacher_prompt_ids: dict[int, list[int]] = {}
        self.rows = train_rows
        self.ref = copy.deepcopy(student).eval() if cfg.objective.use_kl_loss else None
        for m in (self.teacher, self.ref):
            if m is not None:
                m.requires_grad_(False)
        self.opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.999), eps=cfg.adam_eps)
        self.rng = random.Random(cfg.seed)
        self.order: list[int] = []
        self.prompt_ids: dict[int, list[int]] = {}   # chat-templated prompts, by row index
        allowed = (cfg.ppo_epochs == 1 and cfg.mini_batches_per_step() == 1
                   and cfg.objective.adv_estimator in POSITION_LOCAL_ESTIMATORS)
        if single_forward and not allowed:
            raise ValueError("single_forward needs ppo_epochs 1, one mini-batch per step and a "
                             f"position-local advantage estimator ({sorted(POSITION_LOCAL_ESTIMATORS)})")
        self.single_forward = allowed if single_forward is None else bool(single_forward)
        start_shared()  # the grader's worker imports math-verify now, not inside the first step

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
        for i in prompt_idx:
            if i not in self.prompt_ids:
                self.prompt_ids[i] = encode_prompts(self.tok, [self.rows[i]["prompt"]], self.cfg.enable_thinking)[0]
        samples = sample(self.student, self.tok, [self.prompt_ids[i] for i in prompt_idx], params,
                         keep_hidden=not self.single_forward)
        for s in samples:
            row = self.rows[prompt_idx[s["prompt_index"]]]
            s["group"] = prompt_idx[s["prompt_index"]]
            s["outcome"] = float(is_correct(s["response"], row["ground_truth"]))
        return samples

    def teacher_batch(self, samples: list[dict]):
        """With ``teacher_prompt: own``: the same responses behind the prompt rendered by the
        teacher's chat template and thinking switch (``response_batch`` layout); else None."""
        if self.cfg.method != "opd" or self.cfg.teacher_prompt != "own":
            return None
        for i in {s["group"] for s in samples}:
            if i not in self.teacher_prompt_ids:
                self.teacher_prompt_ids[i] = encode_prompts(self.teacher_tok, [self.rows[i]["prompt"]],
                                                            self.cfg.teacher_enable_thinking)[0]
        rows = [dict(s, prompt_ids=self.teacher_prompt_ids[s["group"]]) for s in samples]
        return response_batch(rows, self.teacher_tok.pad_token_id)

    @torch.no_grad()
    def score(self, batch, teacher_batch=None, student_hidden=None):
        """Two-forward path: (``Scored`` of the student and teacher, ref log-probs or None).
        Single-forward path: (the teacher's response hidden states or None, ref log-probs).
        ``teacher_batch``: the teacher's own-prompt batch (``teacher_batch``), if any.
        ``student_hidden`` [B, R, H]: the sampling student's states (``rollout_hidden``); None
        runs the student's scoring forward."""
        input_ids, attn, pos, P, tokens, mask = batch
        o, R = self.cfg.objective, tokens.shape[1]
        if self.cfg.method == "opd":
            t_ids, t_attn, t_pos, t_P = (teacher_batch or batch)[:4]
            h_t = response_hidden(self.teacher, t_ids, t_attn, t_pos, t_P, R)
            w_t = self.teacher.get_output_embeddings().weight
        else:
            h_t = w_t = None
        if self.single_forward:
            scored = h_t
        else:
            h_s = (response_hidden(self.student, input_ids, attn, pos, P, R) if student_hidden is None
                   else student_hidden)
            w_s = self.student.get_output_embeddings().weight
            scored = obj.score_tokens(h_s, w_s, h_t, w_t, tokens, mask, o, o.chunk_size)
        ref_logp = None
        if self.ref is not None:
            h_r = response_hidden(self.ref, input_ids, attn, pos, P, R)
            ref_logp = obj.score_tokens(h_r, self.ref.get_output_embeddings().weight, None, None,
                                        tokens, mask, o, o.chunk_size).token_logp
        return scored, ref_logp

    def update(self, batch, scored, adv, ref_logp, outcome=None, groups=None):
        """``ppo_epochs`` passes over mini-batches; gradient accumulation over micro-batches.

        Returns ``(metrics, scored, adv)``.  Single-forward path: ``scored`` is the teacher's
        hidden states (or None) and ``adv`` None on input; each micro-batch is scored inside its
        own forward, the estimator seeing the whole batch's ``outcome`` and ``groups`` [B]; the
        ``Scored`` and advantages of the whole batch are merged from the micro-batches.
        """
        input_ids, attn, pos, P, tokens, mask = batch
        cfg, o, B = self.cfg, self.cfg.objective, tokens.shape[0]
        mini = cfg.mini_batch_size or B
        stats: dict[str, list[float]] = {}
        parts: list = []
        self.student.train()
        w = self.student.get_output_embeddings().weight
        w_t = self.teacher.get_output_embeddings().weight if cfg.method == "opd" else None
        est = obj.ADV_ESTIMATORS.get(o.adv_estimator)
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B, generator=torch.Generator().manual_seed(self.rng.randrange(2**31)))
            for m0 in range(0, B, mini):
                mb = perm[m0:m0 + mini]
                micro = [mb[i:i + cfg.micro_batch_size].to(tokens.device)
                         for i in range(0, len(mb), cfg.micro_batch_size)]
                self.opt.zero_grad(set_to_none=True)
                for idx in micro:
                    R = int(mask[idx].sum(-1).max())
                    h = response_hidden(self.student, input_ids[idx][:, :P + R], attn[idx][:, :P + R],
                                        pos[idx][:, :P + R], P, R)
                    ref = None if ref_logp is None else ref_logp[idx][:, :R]
                    if self.single_forward:
                        h_t = None if scored is None else scored[idx][:, :R]
                        sub, a, out = score_and_backward(
                            h, w, h_t, w_t, tokens[idx][:, :R], mask[idx][:, :R],
                            estimator_fn(est, outcome, groups, o, rows=idx), o, o.chunk_size,
                            ref_logp=ref, loss_scale=1.0 / len(micro))
                        parts.append((idx, sub, a))
                    else:
                        out = obj.policy_loss_backward(
                            h, w, tokens[idx][:, :R], mask[idx][:, :R], slice_scored(scored, idx, R),
                            adv[idx][:, :R], o, o.chunk_size, ref_logp=ref, loss_scale=1.0 / len(micro))
                    for k, v in out.items():
                        stats.setdefault(k, []).append(float(v))
                gnorm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.grad_clip)
                stats.setdefault("grad_norm", []).append(float(gnorm))
                self.opt.step()
        self.student.eval()
        metrics = {f"train/{k}": sum(v) / len(v) for k, v in stats.items()}
        if self.single_forward:
            scored, adv = merge_scored(parts, B, tokens.shape[1])
        return metrics, scored, adv

    def step(self, step: int) -> dict:
        o = self.cfg.objective
        lr = self.cfg.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        clock = PhaseClock(self.device)
        samples = self.rollout(step, self.next_prompts())
        clock.mark("rollout")
        batch = to_device(response_batch(samples, self.tok.pad_token_id), self.device)
        scored, ref_logp = self.score(batch, to_device(self.teacher_batch(samples), self.device),
                                      rollout_hidden(samples, batch[4].shape[1]))
        mask = batch[5]
        outcome = torch.tensor([s["outcome"] for s in samples], device=self.device)
        groups = torch.tensor([s["group"] for s in samples], device=self.device)
        if self.single_forward:  # scored holds the teacher's hidden states; scoring is in the update
            clock.mark("score")
            metrics, scored, adv = self.update(batch, scored, None, ref_logp, outcome, groups)
        else:
            adv = obj.ADV_ESTIMATORS.get(o.adv_estimator)(scored.rewards, scored.valid, mask, outcome,
                                                          groups, o)
            clock.mark("score")
            metrics, scored, adv = self.update(batch, scored, adv, ref_logp)
        clock.mark("update")
        lengths = mask.sum(-1).float()
        metrics.update({
            "train/lr": lr,
            "rollout/accuracy": outcome.mean().item(),
            "rollout/mean_length": lengths.mean().item(),
            "rollout/clip_ratio": sum(s["finish_reason"] == "length" for s in samples) / len(samples),
            "train/advantage_mean": (adv * scored.valid).sum().item() / max(1, int(scored.valid.sum())),
            **clock.metrics(),
        })
        metrics.update(obj.mechanism_metrics(scored.stats, mask, chunk_tokens=o.metrics_chunk_tokens))
        return metrics

    def train(self, out_dir, save_fn) -> None:
        """Run all steps; ``save_fn(step)`` writes a checkpoint at each of ``checkpoint_steps``."""
        writer = MetricsWriter(Path(out_dir) / "metrics.jsonl", **self.cfg.logging)
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
    checkpoints in ``checkpoints`` and one ``metrics.jsonl`` line per step. Raises
    ``ValueError`` before loading a model when a prompt plus ``max_new_tokens`` does not fit the
    student's context, or the teacher's (it scores the same sequences)."""
    from opd.checkpoint import save_hf
    from opd.generation.context import check_prompt_lengths, model_context, prompt_lengths
    from opd.generation.hf import load_model, load_tokenizer
    from opd.io import flat_view, read_parquet

    rows = flat_view(read_parquet(prompts), prompts)[["problem_id", "prompt", "ground_truth"]].to_dict("records")
    tok = load_tokenizer(student)
    lengths = prompt_lengths(tok, [r["prompt"] for r in rows], cfg.enable_thinking)
    for model_dir in [student] + ([teacher] if cfg.method == "opd" else []):
        check_prompt_lengths(lengths, context=model_context(model_dir), model=str(model_dir),
                             max_new_tokens=cfg.max_new_tokens, dataset=str(prompts),
                             budget_key=f"experiments.{exp}.train.max_new_tokens")
    net = load_model(student)
    teacher_tok = teacher_net = None
    if cfg.method == "opd":
        teacher_tok, teacher_net = load_tokenizer(teacher), load_model(teacher)
    trainer = OnPolicyTrainer(cfg, net, tok, rows, teacher=teacher_net, teacher_tokenizer=teacher_tok)
    trainer.train(Path(metrics).parent, lambda step: save_hf(net, tok, Path(checkpoints) / f"step_{step:04d}"))
