"""Stages of the tiny world: problems, tokenizer and pretrained tiny models (rules/world.smk)."""
from __future__ import annotations

import math
import random
from collections import Counter

from opd.io import flat_view, read_parquet, write_parquet
from opd.world import problems as P

#: In the order they are drawn: a split added last leaves the earlier ones unchanged.
SPLITS = ("pretrain", "train", "eval", "heldout", "pool")


def world_problems(*, problems: dict, seed: int, pretrain: str, train: str, eval: str,
                   heldout: str, pool: str) -> None:
    """Write every split of synthetic problems as parquet in the project's row format."""
    spec = P.ProblemSpec(problems["min_ops"], problems["max_ops"], problems["max_operand"])
    splits = P.make_splits(spec, {s: problems["sizes"].get(s, 1) for s in SPLITS}, seed,
                           families=problems.get("families"))
    for split, path in zip(SPLITS, (pretrain, train, eval, heldout, pool)):
        write_parquet(P.to_frame(splits[split], split), path)
        counts = Counter(p.family for p in splits[split])
        print(f"{split}: {len(splits[split])} problems {dict(counts)} -> {path}")


def read_corpus(pretrain_parquet: str, families=None) -> tuple[list[list[dict]], list[P.Problem]]:
    """Chat prompts and problems of the pretraining split: only ``families``, if given, a list
    or a mapping from family to the share of its problems to keep (the first ones in the split,
    so a smaller share is a subset of a larger one)."""
    df = read_parquet(pretrain_parquet, required=("extra_info",))
    flat = flat_view(df, pretrain_parquet)
    problems = [P.from_info(e) for e in df["extra_info"]]
    shares = families if isinstance(families, dict) else dict.fromkeys(families or (), 1.0)
    keep = [i for i, p in enumerate(problems) if families is None or p.family in shares]
    if families is not None:
        total = Counter(problems[i].family for i in keep)
        quota = {f: max(1, round(shares[f] * n)) for f, n in total.items()}
        seen: Counter = Counter()
        kept = []
        for i in keep:
            seen[problems[i].family] += 1
            if seen[problems[i].family] <= quota[problems[i].family]:
                kept.append(i)
        keep = kept
    if not keep:
        raise ValueError(f"{pretrain_parquet} has no problem of the families {families}; add them "
                         "to world.problems.families.pretrain or change the model's world.families")
    prompts = list(flat["prompt"])
    return [prompts[i] for i in keep], [problems[i] for i in keep]


def world_tokenizer(*, corpus: str, tokenizer: str, vocab_size: int, added_tokens: list) -> None:
    """Train the BPE tokenizer on the chat-formatted pretraining corpus, in every style, with
    ``added_tokens`` ([content, special] pairs: ``opd.world.tokens.ADDED_TOKENS``)."""
    from opd.checkpoint import atomic_dir
    from opd.world.models import train_tokenizer
    from opd.world.styles import STYLES, render

    prompts, problems = read_corpus(corpus)
    rng = random.Random(0)
    texts = [f"<|im_start|>user\n{m[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
             f"{render(p, style, rng)}<|im_end|>\n"
             for m, p in zip(prompts, problems) for style in STYLES]
    tok = train_tokenizer(texts, vocab_size, [tuple(t) for t in added_tokens])
    with atomic_dir(tokenizer) as tmp:  # a killed save leaves no folder that looks complete
        tok.save_pretrained(tmp)
    print(f"tokenizer: {len(tok)} tokens -> {tokenizer}")


def world_model(*, corpus: str, tokenizer: str, spec: dict, seed: int, thinking, model: str,
                metrics: str, kernels: str) -> None:
    """Initialise a tiny Qwen3 model and train it from scratch on solutions of its ``families``
    written in its ``style``, under its chat-template switch ``thinking`` (``enable_thinking``).
    ``kernels`` is the CPU kernel mode the job runs in (set by the adapter, opd/kernels.py): a
    parameter so that switching it rebuilds the models, whose weights depend on it.

    Every drawn example is a fresh rendering (phrasings drawn anew), so the corpus has as many
    renderings of each problem as the step budget draws it."""
    from opd.checkpoint import save_hf
    from opd.generation.hf import load_tokenizer
    from opd.sft.config import SFTConfig
    from opd.sft.native import encode_examples, train_sft
    from opd.world.models import ModelSpec, init_model

    tok = load_tokenizer(tokenizer)
    net = init_model(ModelSpec.from_dict(spec["size"]), tok, seed=seed)
    print(f"model: {sum(p.numel() for p in net.parameters()):,} parameters")
    from opd.world.styles import render

    prompts, problems = read_corpus(corpus, spec.get("families"))
    pre = spec["pretrain"]
    cfg = SFTConfig(lr=pre["lr"], steps=pre["steps"], epochs=None, batch_size=pre["batch_size"],
                    max_len=256, seed=seed, warmup_ratio=0.05)
    copies = max(1, math.ceil(cfg.steps * cfg.batch_size / len(problems)))
    rng = random.Random(seed)
    style = spec.get("style", "terse")
    texts = [render(p, style, rng) for _ in range(copies) for p in problems]
    print(f"corpus: {len(problems)} problems {dict(Counter(p.family for p in problems))} x {copies} "
          f"renderings, style {style}, "
          f"enable_thinking {thinking}")
    examples = encode_examples(tok, prompts * copies, texts, cfg.max_len, enable_thinking=thinking)
    train_sft(net, examples, cfg, tok.pad_token_id, metrics_path=metrics, desc="pretrain")
    save_hf(net, tok, model)

