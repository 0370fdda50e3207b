"""Stages of the tiny world: problems, tokenizer and pretrained tiny models (rules/world.smk)."""
from __future__ import annotations

from opd.io import flat_view, read_parquet, write_parquet
from opd.world import problems as P

SPLITS = ("pretrain", "train", "eval", "heldout")


def world_problems(*, problems: dict, seed: int, pretrain: str, train: str, eval: str,
                   heldout: str) -> None:
    """Write every split of synthetic problems as parquet in the project's row format."""
    spec = P.ProblemSpec(problems["min_ops"], problems["max_ops"], problems["max_operand"])
    splits = P.make_splits(spec, {s: problems["sizes"][s] for s in SPLITS}, seed)
    for split, path in zip(SPLITS, (pretrain, train, eval, heldout)):
        write_parquet(P.to_frame(splits[split], split), path)
        print(f"{split}: {len(splits[split])} problems -> {path}")


def read_corpus(pretrain_parquet: str) -> tuple[list[list[dict]], list[str]]:
    """Chat prompts and reference solutions of the pretraining split."""
    df = read_parquet(pretrain_parquet, required=("extra_info",))
    flat = flat_view(df, pretrain_parquet)
    solutions = [e["solution"] for e in df["extra_info"]]
    return list(flat["prompt"]), solutions


def world_tokenizer(*, corpus: str, tokenizer: str, vocab_size: int) -> None:
    """Train the BPE tokenizer on the chat-formatted pretraining corpus."""
    from opd.checkpoint import atomic_dir
    from opd.world.models import train_tokenizer

    prompts, solutions = read_corpus(corpus)
    texts = [f"<|im_start|>user\n{m[0]['content']}<|im_end|>\n<|im_start|>assistant\n{s}<|im_end|>\n"
             for m, s in zip(prompts, solutions)]
    tok = train_tokenizer(texts, vocab_size)
    with atomic_dir(tokenizer) as tmp:  # a killed save leaves no folder that looks complete
        tok.save_pretrained(tmp)
    print(f"tokenizer: {len(tok)} tokens -> {tokenizer}")


def world_model(*, corpus: str, tokenizer: str, spec: dict, seed: int, model: str,
                metrics: str) -> None:
    """Initialise a tiny Qwen3 model and train it from scratch on reference solutions."""
    from opd.checkpoint import save_hf
    from opd.generation.hf import load_tokenizer
    from opd.sft.config import SFTConfig
    from opd.sft.native import encode_examples, train_sft
    from opd.world.models import ModelSpec, init_model

    tok = load_tokenizer(tokenizer)
    net = init_model(ModelSpec.from_dict(spec["size"]), tok, seed=seed)
    print(f"model: {sum(p.numel() for p in net.parameters()):,} parameters")
    prompts, solutions = read_corpus(corpus)
    pre = spec["pretrain"]
    cfg = SFTConfig(lr=pre["lr"], steps=pre["steps"], epochs=None, batch_size=pre["batch_size"],
                    max_len=256, seed=seed, warmup_ratio=0.05)
    train_sft(net, encode_examples(tok, prompts, solutions, cfg.max_len), cfg, tok.pad_token_id,
              metrics_path=metrics, desc="pretrain")
    save_hf(net, tok, model)

