"""Stages of the tiny world: problems, tokenizer and pretrained tiny models."""
from __future__ import annotations

import torch

from opd import problems as P
from opd.checkpoint import save_hf
from opd.data import flat_view, read_parquet, write_parquet
from opd.generation import load_tokenizer
from opd.sft import SFTConfig, encode_examples, train_sft
from opd.tinyworld import ModelSpec, init_model, train_tokenizer

SPLITS = ("pretrain", "train", "eval", "heldout")


def make_problems(problems_cfg: dict, seed: int, outputs: dict[str, str]) -> None:
    """Write every split of synthetic problems as parquet in the project's row format."""
    spec = P.ProblemSpec(problems_cfg["min_ops"], problems_cfg["max_ops"], problems_cfg["max_operand"])
    sizes = {s: problems_cfg["sizes"][s] for s in SPLITS}
    splits = P.make_splits(spec, sizes, seed)
    for split, path in outputs.items():
        write_parquet(P.to_frame(splits[split], split), path)
        print(f"{split}: {len(splits[split])} problems -> {path}")


def corpus(pretrain_parquet: str) -> tuple[list[list[dict]], list[str]]:
    """Chat prompts and reference solutions of the pretraining split."""
    df = read_parquet(pretrain_parquet, required=("extra_info",))
    flat = flat_view(df, pretrain_parquet)
    solutions = [e["solution"] for e in df["extra_info"]]
    return list(flat["prompt"]), solutions


def make_tokenizer(pretrain_parquet: str, vocab_size: int, out_dir: str) -> None:
    """Train the BPE tokenizer on the chat-formatted pretraining corpus."""
    prompts, solutions = corpus(pretrain_parquet)
    texts = [f"<|im_start|>user\n{m[0]['content']}<|im_end|>\n<|im_start|>assistant\n{s}<|im_end|>\n"
             for m, s in zip(prompts, solutions)]
    tok = train_tokenizer(texts, vocab_size)
    tok.save_pretrained(out_dir)
    print(f"tokenizer: {len(tok)} tokens -> {out_dir}")


def pretrain_model(pretrain_parquet: str, tokenizer_dir: str, spec: dict, seed: int,
                   out_dir: str, metrics_path: str, threads: int = 1) -> None:
    """Initialise a tiny Qwen3 model and train it from scratch on reference solutions."""
    torch.set_num_threads(threads)
    tok = load_tokenizer(tokenizer_dir)
    model = init_model(ModelSpec.from_dict(spec["size"]), tok, seed=seed)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    prompts, solutions = corpus(pretrain_parquet)
    pre = spec["pretrain"]
    cfg = SFTConfig(lr=pre["lr"], steps=pre["steps"], epochs=None, batch_size=pre["batch_size"],
                    max_len=256, seed=seed, warmup_ratio=0.05)
    train_sft(model, encode_examples(tok, prompts, solutions, cfg.max_len), cfg, tok.pad_token_id,
              metrics_path=metrics_path, desc="pretrain")
    save_hf(model, tok, out_dir)
