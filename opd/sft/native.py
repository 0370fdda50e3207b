"""Native supervised fine-tuning loop: chat prompts and responses, loss on response tokens only.

Used twice in the pipeline: to pretrain the tiny world's models from scratch on reference
solutions, and for the off-policy SFT cold start on teacher rollouts (paper §5.1).

    cfg = SFTConfig(lr=1e-3, steps=200, batch_size=32)
    examples = encode_examples(tokenizer, prompts, responses, max_len=128)
    train_sft(model, examples, cfg, tok.pad_token_id, metrics_path="results/.../metrics.jsonl")
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from opd.sft.config import SFTConfig
from opd.runlog import MetricsWriter, progress

IGNORE = -100


def fit_examples(tokenizer, prompts: list[list[dict]], responses: list[str], max_len: int,
                 enable_thinking: bool | None = None) -> tuple[list[tuple[list[int], list[int]]], dict]:
    """Token ids and labels per example, cut to ``max_len`` tokens, and what the cut cost.

    Labels are ``-100`` on the prompt (chat template); the response ends with the eos token.
    Returns ``(examples, counts)``; ``counts``: ``total`` examples given, ``kept``, ``truncated``
    (kept, but prompt + response + eos longer than ``max_len``: the tail, eos included, is
    cut) and ``dropped`` (not one response token within ``max_len``). Raises ``ValueError``
    when every example is dropped.
    """
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    out = []
    truncated = dropped = 0
    for messages, response in zip(prompts, responses):
        prompt_ids = tokenizer.apply_chat_template(
            list(messages), tokenize=True, add_generation_prompt=True, return_dict=False, **kwargs)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
            prompt_ids = prompt_ids["input_ids"]
        resp_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (list(prompt_ids) + resp_ids)[:max_len]
        labels = ([IGNORE] * len(prompt_ids) + resp_ids)[:max_len]
        if len(prompt_ids) >= max_len:
            dropped += 1
            continue
        truncated += len(prompt_ids) + len(resp_ids) > max_len
        out.append((ids, labels))
    counts = {"total": len(out) + dropped, "kept": len(out), "truncated": truncated,
              "dropped": dropped}
    if not out:
        raise ValueError(f"no SFT example has a response token within max_len={max_len} (all "
                         f"{dropped} prompts are at least that long); raise max_len")
    return out, counts


def length_report(counts: dict, max_len: int) -> str:
    """One log line: how many examples ``max_len`` dropped and truncated (``fit_examples``)."""
    return (f"sft: max_len={max_len}: {counts['kept']} of {counts['total']} examples kept, "
            f"{counts['truncated']} truncated (response cut, no eos), {counts['dropped']} dropped "
            "(prompt alone fills max_len)")


def encode_examples(tokenizer, prompts: list[list[dict]], responses: list[str],
                    max_len: int, enable_thinking: bool | None = None) -> list[tuple[list[int], list[int]]]:
    """``fit_examples``'s examples; prints its counts (``length_report``) to the job log."""
    examples, counts = fit_examples(tokenizer, prompts, responses, max_len, enable_thinking)
    print(length_report(counts, max_len))
    return examples


def collate(batch, pad_id: int):
    """Right-pad a batch of (ids, labels) into tensors."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(lab)] = torch.tensor(lab)
        attn[i, :len(ids)] = 1
    return input_ids, labels, attn


def lr_lambda(total: int, warmup: int):
    """Linear warm-up then cosine decay to 10% of the peak learning rate."""
    def f(step):
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def train_sft(model, examples, cfg: SFTConfig, pad_id: int, metrics_path=None,
              desc: str = "sft") -> list[dict]:
    """Train ``model`` in place on ``examples``; return the logged metrics."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, int(cfg.warmup_ratio * total)))
    writer = MetricsWriter(metrics_path) if metrics_path else None
    model.train()
    order: list[int] = []
    history = []
    bar = progress(range(total), desc=desc)
    for step in bar:
        if len(order) < cfg.batch_size:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        batch = [examples[i] for i in order[:cfg.batch_size]]
        del order[:cfg.batch_size]
        input_ids, labels, attn = collate(batch, pad_id)
        logits = model(input_ids=input_ids, attention_mask=attn).logits[:, :-1]
        target = labels[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1),
                               ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        row = {"train/loss": loss.item(), "train/grad_norm": float(gnorm),
               "train/lr": sched.get_last_lr()[0],
               "train/response_tokens": int((target != IGNORE).sum())}
        history.append(row)
        if writer:
            writer.log(step + 1, row)
        if (step + 1) % cfg.log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return history


def cold_start(*, student: str, rows, sft: dict, options: dict, stack: str | None, model: str,
               metrics: str, seed: int, enable_thinking: bool | None = None) -> None:
    """The ``native`` SFT backend: fine-tune ``student`` on ``rows`` (``prompt``, ``response``)
    with this loop, loss on response tokens only, and save it to ``model``."""
    from opd.checkpoint import save_hf
    from opd.generation.context import model_context
    from opd.generation.hf import load_model, load_tokenizer

    tok = load_tokenizer(student)
    cfg = SFTConfig.from_dict(sft | {"seed": seed})
    examples, counts = fit_examples(tok, [list(p) for p in rows["prompt"]], list(rows["response"]),
                                    cfg.max_len, enable_thinking=enable_thinking)
    print(length_report(counts, cfg.max_len))
    check_fits_context(examples, model_context(student), student)
    net = load_model(student)
    train_sft(net, examples, cfg, tok.pad_token_id, metrics_path=metrics, desc="sft")
    save_hf(net, tok, model)


def check_fits_context(examples, context: int | None, model: str) -> None:
    """Raise ``ValueError`` when an encoded example is longer than ``context`` tokens (None: skip)."""
    longest = max((len(ids) for ids, _ in examples), default=0)
    if context is not None and longest > context:
        n = sum(len(ids) > context for ids, _ in examples)
        raise ValueError(f"sft: {n} of {len(examples)} examples are longer than the context of "
                         f"{model} ({context} tokens; the longest has {longest}). Fix: set "
                         f"sft.max_len to at most {context}, or use a student with a larger context.")
