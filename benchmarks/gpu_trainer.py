"""Part 2 of ``gpu_check.py``: a few OPD steps of the native trainer at Qwen3 scale, then a probe.

No weights can be downloaded, so the models are randomly initialised from Qwen3 configurations
(a Qwen3-1.7B-shaped student, a Qwen3-4B-shaped teacher; tied embeddings, vocabulary 151,936),
in bf16. The tokenizer is the tiny world's (its few hundred ids are a prefix of the models'
vocabulary; ids beyond it decode to nothing, as Qwen3's padded embedding rows would). A random
model almost never samples eos, so every response runs to the 1,024-token limit.

Per phase of each step (``OnPolicyTrainer.step``'s ``time/*`` and ``memory/*``): seconds, tokens
per second, model FLOP utilisation and peak memory. Model FLOPs (documented approximations):
a forward costs 2 x (non-embedding parameters + the LM head's V x H) per token plus attention,
4 x layers x (heads x head_dim) x the attended context per token; a backward twice the forward.
Generation: the prompt prefill and every sampled token; teacher scoring: the teacher's forward
over prompt and response; update: the student's forward and backward over prompt and response
plus the teacher's LM head over the response (the single-forward path scores the teacher there).
MFU is against the H200's dense bf16 datasheet rate, 989.4 TFLOP/s, and the bf16 matmul rate
measured in the same run.

Run through ``python3 benchmarks/gpu_check.py`` (``--smoke``: a tiny CPU model, same code).
"""
from __future__ import annotations

import time

import torch

DATASHEET_BF16_TFLOPS = 989.4
QWEN3 = {  # the published Qwen3 configurations' shapes
    "student (Qwen3-1.7B shape)": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                       num_attention_heads=16, num_key_value_heads=8, head_dim=128),
    "teacher (Qwen3-4B shape)": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                     num_attention_heads=32, num_key_value_heads=8, head_dim=128),
}
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=32)


def build(shape: dict, vocab: int, device, dtype, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=vocab, tie_word_embeddings=True, max_position_embeddings=4096,
                      rms_norm_eps=1e-6, **shape)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def forward_flops(model, tokens: float, context: float) -> float:
    """2 x (non-embedding params + V x H) x tokens + 4 x layers x q_dim x context x tokens."""
    c = model.config
    emb = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - emb
    head = c.vocab_size * c.hidden_size
    q_dim = c.num_attention_heads * c.head_dim
    return 2 * (body + head) * tokens + 4 * c.num_hidden_layers * q_dim * context * tokens


def tiny_tokenizer():
    from opd.world.models import train_tokenizer

    texts = [f"<|im_start|>user\nWhat is {a} + {b}?<|im_end|>\n<|im_start|>assistant\n"
             f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}.<|im_end|>\n"
             for a in range(1, 10) for b in range(1, 10)]
    return train_tokenizer(texts, 384)


def run_trainer(device, smoke: bool = False, steps: int = 3, deadline: float = float("inf")) -> dict:
    """Build, train ``steps`` steps (fewer if ``time.time()`` passes ``deadline``), probe; the figures."""
    from opd.objectives import OPDConfig
    from opd.probe import score_rows, summarise
    from opd.train.config import TrainConfig
    from opd.train.native import OnPolicyTrainer

    t_start = time.time()
    tok = tiny_tokenizer()
    vocab, dtype = (1000, torch.float32) if smoke else (151936, torch.bfloat16)
    shapes = {k: SMOKE for k in QWEN3} if smoke else QWEN3
    (s_name, s_shape), (t_name, t_shape) = shapes.items()
    student = build(s_shape, vocab, device, dtype, 1)
    teacher = build(t_shape, vocab, device, dtype, 2).requires_grad_(False)
    out = {"models": {s_name: sum(p.numel() for p in student.parameters()),
                      t_name: sum(p.numel() for p in teacher.parameters())},
           "dtype": str(dtype).replace("torch.", ""), "build_s": round(time.time() - t_start, 1)}
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "ground_truth": str(a + b)}
            for a in range(1, 9) for b in range(1, 9)]
    new_tokens = 32 if smoke else 1024
    obj = OPDConfig(top_k=16, strategy="only_stu", weight_mode="student_p", chunk_size=4096)
    cfg = TrainConfig(method="opd", steps=steps, prompts_per_step=32, n_samples=2, max_new_tokens=new_tokens,
                      lr=1e-6, micro_batch_size=16, save_every=steps, seed=0, enable_thinking=False,
                      objective=obj)
    out["config"] = {"sequences": 64, "max_new_tokens": new_tokens, "objective": "top-16 only_stu student_p",
                     "micro_batch_size": cfg.micro_batch_size, "chunk_size": obj.chunk_size, "lr": cfg.lr}
    trainer = OnPolicyTrainer(cfg, student, tok, rows, teacher=teacher)
    kept = {}
    rollout = trainer.rollout

    def keep_rollout(step, idx):              # the trainer's own rollout; its samples kept for the probe
        kept["samples"] = rollout(step, idx)
        return kept["samples"]
    trainer.rollout = keep_rollout
    out["steps"] = []
    peak = (torch.cuda.get_device_properties(device).name, DATASHEET_BF16_TFLOPS) if device.type == "cuda" else None
    for step in range(1, steps + 1):
        m = trainer.step(step)
        samples = kept["samples"]
        P = sum(len(s["prompt_ids"]) for s in samples)
        R = sum(len(s["response_ids"]) for s in samples)
        n = len(samples)
        p_len, r_len = P / n, R / n
        flops = {"rollout": forward_flops(student, R, p_len + r_len / 2) + forward_flops(student, P, p_len / 2),
                 "score": forward_flops(teacher, P + R, (p_len + r_len) / 2),
                 "update": 3 * forward_flops(student, P + R, (p_len + r_len) / 2)
                 + 2 * teacher.config.vocab_size * teacher.config.hidden_size * R}
        tokens = {"rollout": R, "score": P + R, "update": P + R}
        row = {"step": step, "response_tokens": R, "prompt_tokens": P, "loss": m.get("train/loss"),
               "grad_norm": m.get("train/grad_norm"), "overlap_ratio": m.get("opd/overlap_ratio"), "phases": {}}
        for ph in ("rollout", "score", "update"):
            s = m[f"time/{ph}_s"]
            row["phases"][ph] = {"s": round(s, 3), "tokens_per_s": round(tokens[ph] / s, 1),
                                 "tflops": round(flops[ph] / s / 1e12, 1),
                                 "mfu_datasheet": round(flops[ph] / s / 1e12 / DATASHEET_BF16_TFLOPS, 4) if peak else None,
                                 "peak_gib": round(m.get(f"memory/{ph}_peak_gib", float("nan")), 2)}
        out["steps"].append(row)
        if time.time() > deadline and step < steps:
            out["stopped_early"] = f"after step {step}: the time budget of the call"
            break
        print(f"  step {step}: " + ", ".join(f"{ph} {v['s']:.1f} s {v['tokens_per_s']:.0f} tok/s "
                                             f"MFU {v['mfu_datasheet']} peak {v['peak_gib']} GiB"
                                             for ph, v in row["phases"].items()), flush=True)
    rows_p = [{"prompt_ids": s["prompt_ids"], "response_ids": s["response_ids"]} for s in kept["samples"]]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    frame = score_rows(student, teacher, rows_p, obj, tok.pad_token_id, batch_size=16, device=device)
    summary = summarise(frame, obj)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    P = sum(len(r["prompt_ids"]) for r in rows_p)
    R = sum(len(r["response_ids"]) for r in rows_p)
    fl = forward_flops(student, P + R, (P + R) / len(rows_p) / 2) + forward_flops(teacher, P + R, (P + R) / len(rows_p) / 2)
    out["probe"] = {"s": round(dt, 3), "response_tokens": R, "tokens_per_s": round(R / dt, 1),
                    "tflops": round(fl / dt / 1e12, 1),
                    "mfu_datasheet": round(fl / dt / 1e12 / DATASHEET_BF16_TFLOPS, 4) if peak else None,
                    "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
                    "overlap_ratio": summary.get("opd/overlap_ratio"), "rows_scored": len(frame)}
    print(f"  probe: {out['probe']}", flush=True)
    out["total_s"] = round(time.time() - t_start, 1)
    return out
