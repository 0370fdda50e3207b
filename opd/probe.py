r"""The probe: mechanism statistics of one model on fixed responses, exactly, for any backend.

For an OPD experiment's initial student, cold start or checkpoint and one benchmark, the probe
scores every token of (a seeded subsample of) that model's evaluation generations with the
model, as student, and with the experiment's teacher, and reports the statistics of
``opd.objectives.mechanism`` (overlap, masses, entropies, class rewards, extremes) per token and
aggregated, with the same functions as the trainer, so probe and training curves measure the
same quantities, and curves of different runs are comparable (same prompts, same kind of
responses).  It reads Hugging Face folders only, so checkpoints of the native trainer and of
verl are probed the same way.

1. *Select* (``select_responses``): a permutation of the generations seeded by ``seed``; keep
   responses in that order while their token count (``n_tokens``) stays within ``max_tokens``
   (at least one), so the cost is bounded at paper scale.
2. *Re-encode* (``encode_rows``): the prompt's chat turns (from the benchmark, by problem id)
   through the model's chat template, as ``opd.generation.hf.encode_prompts`` does for
   generation; the response text with the tokenizer, plus eos when generation stopped there.
   (Byte-level BPE may segment a decoded text differently from the sampled ids; the probe
   scores the re-encoded ids.)
3. *Score* (``score_rows``): final hidden states of both models at the positions that predict
   response tokens, then ``opd.objectives.score_tokens``: exact full-vocabulary log-probs,
   ``cfg.chunk_size`` response tokens at a time, so no [tokens, vocab] fp32 tensor exists for
   more than one chunk.
4. *Summarise* (``summarise``): ``mechanism_metrics`` of the per-token statistics laid out
   [responses, positions] (``chunk_tokens = cfg.metrics_chunk_tokens``).

Per-token table (one row per scored response token): ``response`` (index into the
generations), ``problem_id``, ``sample_idx``, ``position`` (0-based among response tokens),
``length`` (response tokens), ``token_id``, ``token_logp`` (student log-prob of the token) and
every statistic of ``score_tokens`` (float32).

    frame = probe_model(student_dir, teacher_dir, generations, benchmark, cfg, max_tokens=4096)
    summary = summarise(frame, cfg)                  # {"opd/overlap_ratio": 0.61, ...}
"""
from __future__ import annotations

import random

import pandas as pd
import torch

from opd.objectives import OPDConfig, mechanism_metrics, score_tokens

#: Columns of the per-token table before the statistics.
TOKEN_COLUMNS = ("response", "problem_id", "sample_idx", "position", "length", "token_id", "token_logp")


def select_responses(n_tokens: list[int], max_tokens: int | None, seed: int) -> list[int]:
    """Indices (sorted) of the responses to probe: a seeded permutation, cut where the running
    sum of ``n_tokens`` would pass ``max_tokens`` (None: all; always at least one response)."""
    order = list(range(len(n_tokens)))
    if max_tokens is None:
        return order
    random.Random(seed).shuffle(order)
    keep, total = [], 0
    for i in order:
        if keep and total + n_tokens[i] > max_tokens:
            break
        keep.append(i)
        total += n_tokens[i]
    return sorted(keep)


def encode_rows(tokenizer, prompts: list[list[dict]], responses: list[str], stopped: list[bool],
                enable_thinking: bool | None = None) -> list[dict]:
    """``{"prompt_ids", "response_ids"}`` per response: the chat-templated prompt and the
    response text re-encoded (eos appended where generation stopped on it)."""
    from opd.generation.hf import encode_prompts

    prompt_ids = encode_prompts(tokenizer, prompts, enable_thinking)
    eos = tokenizer.eos_token_id
    rows = []
    for p, text, stop in zip(prompt_ids, responses, stopped):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if stop else [])
        rows.append({"prompt_ids": list(p), "response_ids": ids})
    return rows


def pad_batch(rows: list[dict], pad_id: int):
    """Left-pad prompts, right-pad responses (every response starts at column P).

    Returns input_ids [B, P+R] long, attention_mask [B, P+R], position_ids [B, P+R], P,
    tokens [B, R] (response ids) and mask [B, R] bool -- the trainer's batch layout.
    """
    P = max(len(r["prompt_ids"]) for r in rows)
    R = max(len(r["response_ids"]) for r in rows)
    input_ids = torch.full((len(rows), P + R), pad_id, dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    mask = torch.zeros((len(rows), R), dtype=torch.bool)
    for i, r in enumerate(rows):
        p, resp = r["prompt_ids"], r["response_ids"]
        input_ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        input_ids[i, P:P + len(resp)] = torch.tensor(resp, dtype=torch.long)
        attn[i, P - len(p):P + len(resp)] = 1
        mask[i, :len(resp)] = True
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attn, position_ids, P, input_ids[:, P:], mask


def response_hidden(model, input_ids, attn, position_ids, P: int, R: int) -> torch.Tensor:
    """Final (post-norm) hidden states [B, R, H] at the positions that predict the response."""
    body = getattr(model, model.base_model_prefix)
    out = body(input_ids=input_ids, attention_mask=attn, position_ids=position_ids)
    return out.last_hidden_state[:, P - 1:P - 1 + R]


@torch.no_grad()
def score_batch(student, teacher, rows: list[dict], cfg: OPDConfig, pad_id: int,
                device: torch.device | str = "cpu"):
    """``score_tokens`` of one batch of rows; returns (Scored, tokens [B, R], mask [B, R])."""
    input_ids, attn, pos, P, tokens, mask = (t.to(device) if torch.is_tensor(t) else t
                                             for t in pad_batch(rows, pad_id))
    R = tokens.shape[1]
    h_s = response_hidden(student, input_ids, attn, pos, P, R)
    h_t = response_hidden(teacher, input_ids, attn, pos, P, R)
    scored = score_tokens(h_s, student.get_output_embeddings().weight, h_t,
                          teacher.get_output_embeddings().weight, tokens, mask, cfg, cfg.chunk_size)
    return scored, tokens, mask


def score_rows(student, teacher, rows: list[dict], cfg: OPDConfig, pad_id: int, batch_size: int = 64,
               device: torch.device | str = "cpu") -> pd.DataFrame:
    """The per-token table (module doc) of ``rows``; ``response`` is the row's index in ``rows``.

    Rows are batched by length (``batch_size`` sequences per forward) to limit padding.
    """
    order = sorted((i for i in range(len(rows)) if rows[i]["response_ids"]),
                   key=lambda i: len(rows[i]["prompt_ids"]) + len(rows[i]["response_ids"]))
    parts = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        scored, tokens, mask = score_batch(student, teacher, [rows[i] for i in idx], cfg, pad_id, device)
        m = mask.cpu()
        b, p = m.nonzero(as_tuple=True)
        part = {"response": torch.tensor(idx)[b].numpy(), "position": p.numpy(),
                "length": m.sum(-1)[b].numpy(), "token_id": tokens.cpu()[m].numpy(),
                "token_logp": scored.token_logp.float().cpu()[m].numpy()}
        part.update({name: v.float().cpu()[m].numpy() for name, v in scored.stats.items()})
        parts.append(pd.DataFrame(part))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame.sort_values(["response", "position"], ignore_index=True) if len(frame) else frame


def stat_columns(frame: pd.DataFrame) -> list[str]:
    """The statistic columns of a per-token table (everything after ``TOKEN_COLUMNS``)."""
    return [c for c in frame.columns if c not in TOKEN_COLUMNS]


def stats_from_frame(frame: pd.DataFrame) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-token table -> (stats name -> [N, L] float32, mask [N, L]), N responses, L the longest."""
    resp = pd.factorize(frame["response"], sort=True)[0]
    pos = frame["position"].to_numpy()
    n, L = int(resp.max()) + 1, int(pos.max()) + 1
    ri, pi = torch.tensor(resp, dtype=torch.long), torch.tensor(pos, dtype=torch.long)
    mask = torch.zeros(n, L, dtype=torch.bool)
    mask[ri, pi] = True
    stats = {}
    for name in stat_columns(frame):
        v = torch.zeros(n, L, dtype=torch.float32)
        v[ri, pi] = torch.tensor(frame[name].to_numpy(), dtype=torch.float32)
        stats[name] = v
    return stats, mask


def summarise(frame: pd.DataFrame, cfg: OPDConfig) -> dict[str, float]:
    """``mechanism_metrics`` of the per-token table (the trainer's aggregation, same stats)."""
    if not len(frame):
        return {}
    stats, mask = stats_from_frame(frame)
    return mechanism_metrics(stats, mask, chunk_tokens=cfg.metrics_chunk_tokens)


def probe_model(student_dir: str, teacher_dir: str, generations: pd.DataFrame, prompts: dict,
                cfg: OPDConfig, max_tokens: int | None = None, seed: int = 0, batch_size: int = 64,
                enable_thinking: bool | None = None, device: str | None = None) -> pd.DataFrame:
    """Load both models (float32, on ``device``: CUDA when available), select and re-encode the
    generations (``problem_id, sample_idx, response, n_tokens, finish_reason``; ``prompts`` maps a
    problem id to its chat turns) and return the per-token table (``response`` = row index)."""
    from opd.generation.hf import load_model, load_tokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer(student_dir)
    student, teacher = load_model(student_dir).to(device), load_model(teacher_dir).to(device)
    if student.get_output_embeddings().weight.shape[0] != teacher.get_output_embeddings().weight.shape[0]:
        raise ValueError(f"{student_dir} and {teacher_dir} have different vocabularies; the probe "
                         "scores the student's token ids with the teacher")
    keep = select_responses([int(n) for n in generations["n_tokens"]], max_tokens, seed)
    sub = generations.iloc[keep].reset_index(drop=True)
    missing = sorted(set(sub["problem_id"].astype(str)) - set(prompts))
    if missing:
        raise ValueError(f"generations name problems the benchmark lacks: {missing[:5]}")
    rows = encode_rows(tok, [prompts[str(p)] for p in sub["problem_id"]], list(sub["response"]),
                       [f == "stop" for f in sub["finish_reason"]], enable_thinking)
    frame = score_rows(student, teacher, rows, cfg, tok.pad_token_id, batch_size, device)
    if not len(frame):
        return frame
    frame["response"] = [keep[i] for i in frame["response"]]
    lookup = generations.iloc[keep].set_index(pd.Index(keep))
    frame.insert(1, "problem_id", lookup.loc[frame["response"], "problem_id"].astype(str).to_numpy())
    frame.insert(2, "sample_idx", lookup.loc[frame["response"], "sample_idx"].to_numpy())
    return frame
