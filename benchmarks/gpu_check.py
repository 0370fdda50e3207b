"""GPU check (issue 23): the paper-scale top-k head against its floor, and a real OPD step of the
native trainer at Qwen3 scale, in one process and one call. Needs a CUDA device.

Part 1, the head: N = 32,768 response tokens, hidden 2,048, vocabulary 151,936, top-16
``only_stu`` ``student_p`` (the paper's default objective), bf16 hidden states and heads:

* floor: the four bare ``lm_head`` matmuls over all N rows (student logits, the two gradient
  matmuls of the student, the teacher's logits); for the forward-only probe, the two logits
  matmuls;
* naive: the authors' formulation, full [N, V] logits upcast to fp32, ``log_softmax``,
  ``topk_details`` and the policy loss, autograd;
* the project's chunked head: the single-forward path (``score_and_backward``, forward and
  backward), the two-forward path (``score_tokens`` + ``policy_loss_backward``) and the probe's
  forward-only ``score_tokens``, with the Triton kernels and, for comparison, the torch backend.

Correctness first, on fresh random inputs: at N = 4,096 in fp32 and in bf16, the chunked head's
loss, gradients (hidden states and head), candidate ids, rewards and mechanism statistics against
the naive path whose top-k breaks ties towards the lower id, as the kernel does (a stable sort).
Thresholds, fixed before the first run: fp32 loss rel. diff < 1e-5, gradient rel. error (norm)
< 1e-4; bf16 < 1e-3 and < 1e-2; ids identical.

Part 2 (``gpu_trainer.py``): randomly initialised Qwen3-1.7B-shaped student and Qwen3-4B-shaped
teacher in bf16, a few OPD steps of ``OnPolicyTrainer`` (64 sequences, 1,024 new tokens), then
one probe; seconds, tokens/s, model FLOP utilisation and peak memory per phase.

    python3 benchmarks/gpu_check.py                   # H200: about 5 minutes
    python3 benchmarks/gpu_check.py --skip-trainer    # the head only
    python3 benchmarks/gpu_check.py --smoke           # a tiny CPU run of the same code (not a GPU figure)

Writes ``benchmarks/results/gpu_check.json`` (``--out``) after every part.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from opd.objectives import ADV_ESTIMATORS, POLICY_LOSSES, OPDConfig, token_mechanism_stats, topk_details  # noqa: E402
from opd.objectives.chunked import policy_loss_backward, score_tokens  # noqa: E402
from opd.objectives.logprobs import Dense  # noqa: E402
from opd.objectives.single_forward import estimator_fn, score_and_backward  # noqa: E402

THRESHOLDS = {"float32": {"loss_rel": 1e-5, "grad_rel": 1e-4}, "bfloat16": {"loss_rel": 1e-3, "grad_rel": 1e-2}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class CanonicalDense(Dense):
    """``Dense`` whose top-k breaks ties towards the lower id (a stable sort), as the kernel."""

    def topk(self, k):
        order = torch.sort(self.logp, dim=-1, descending=True, stable=True).indices[..., :k]
        return self.logp.gather(-1, order), order


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def inputs(N, H, V, dtype, device, seed, rows=16):
    """Fresh random hidden states and heads (logits of unit scale), tokens, an all-ones mask."""
    g = torch.Generator(device=device).manual_seed(seed)
    B, L = rows, N // rows
    hs = torch.randn(B, L, H, generator=g, device=device, dtype=dtype).requires_grad_(True)
    Ws = torch.nn.Parameter(torch.randn(V, H, generator=g, device=device, dtype=dtype) * H ** -0.5)
    ht = torch.randn(B, L, H, generator=g, device=device, dtype=dtype)
    Wt = torch.randn(V, H, generator=g, device=device, dtype=dtype) * H ** -0.5
    tokens = torch.randint(0, V, (B, L), generator=g, device=device)
    mask = torch.ones(B, L, dtype=torch.bool, device=device)
    return hs, Ws, ht, Wt, tokens, mask


def clear(inp):
    inp[0].grad = None
    inp[1].grad = None


def naive(inp, cfg, canonical=False, stats=False):
    """The authors' formulation: full logits, fp32 log-softmax, autograd. Returns (loss, ids,
    rewards, stats or None)."""
    hs, Ws, ht, Wt, tokens, mask = inp
    src = CanonicalDense if canonical else Dense
    S = torch.log_softmax((hs @ Ws.t()).float() / cfg.student_temperature, -1)
    with torch.no_grad():
        T = torch.log_softmax((ht @ Wt.t()).float() / cfg.teacher_temperature, -1)
        d = topk_details(src(S.detach()), src(T), cfg.top_k, cfg.strategy, cfg.weight_mode, tokens)
        st = token_mechanism_stats(src(S.detach()), src(T), cfg.stats_k) if stats else None
        del T
        adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(d.rewards, d.valid, mask, None, None, cfg)
    loss, _ = POLICY_LOSSES.get(cfg.policy_loss)(S.gather(-1, d.ids), d.student_logp, adv, d.valid, mask, cfg)
    loss.backward()
    return float(loss.detach()), d.ids, d.rewards, st


def single(inp, cfg, chunk):
    hs, Ws, ht, Wt, tokens, mask = inp
    fn = estimator_fn(ADV_ESTIMATORS.get(cfg.adv_estimator), None, None, cfg)
    sc, _, st = score_and_backward(hs, Ws, ht, Wt, tokens, mask, fn, cfg, chunk)
    return st["loss"], sc


def two(inp, cfg, chunk):
    hs, Ws, ht, Wt, tokens, mask = inp
    sc = score_tokens(hs.detach(), Ws.detach(), ht, Wt, tokens, mask, cfg, chunk)
    adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(sc.rewards, sc.valid, mask, None, None, cfg)
    return policy_loss_backward(hs, Ws, tokens, mask, sc, adv, cfg, chunk)["loss"], sc


def probe(inp, cfg, chunk):
    hs, Ws, ht, Wt, tokens, mask = inp
    return score_tokens(hs.detach(), Ws.detach(), ht, Wt, tokens, mask, cfg, chunk)


def floor(inp, backward=True):
    """The bare matmuls: student logits, teacher logits (+ G Ws and G^T h with G = the logits)."""
    hs, Ws, ht, Wt = (x.detach().reshape(-1, x.shape[-1]) for x in inp[:4])
    with torch.no_grad():
        z = hs @ Ws.t()
        zt = ht @ Wt.t()
        if backward:
            del zt
            _ = z @ Ws
            _ = z.t() @ hs


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def timed(fn, reps, inp=None):
    """(median ms, peak GiB above what was allocated before) of ``fn()`` over ``reps`` runs."""
    times, peak = [], 0.0
    for _ in range(reps):
        if inp is not None:
            clear(inp)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            sync()
            times.append(a.elapsed_time(b))
            peak = max(peak, (torch.cuda.max_memory_allocated() - base) / 2**30)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 2), round(peak, 3)


def correctness(a, device, dtype_name, seed):
    """Chunked head (single-forward, two-forward, probe) against the canonical naive path."""
    dtype = DTYPES[dtype_name]
    cfg = OPDConfig(top_k=a.top_k, strategy="only_stu", weight_mode="student_p")
    inp = inputs(a.check_n, a.hidden, a.vocab, dtype, device, seed)
    loss_n, ids_n, rew_n, st_n = naive(inp, cfg, canonical=True, stats=True)
    g_n = (inp[0].grad.clone(), inp[1].grad.clone())
    out = {"n": a.check_n, "dtype": dtype_name, "thresholds": THRESHOLDS[dtype_name]}
    out["chunk_size"] = a.check_chunk               # several chunks: the accumulation across them counts
    for name, fn in (("single_forward", single), ("two_forward", two)):
        clear(inp)
        loss, sc = fn(inp, cfg, a.check_chunk)
        m = inp[5]
        out[name] = {"loss": loss, "loss_naive": loss_n, "loss_rel": abs(loss - loss_n) / max(abs(loss_n), 1e-30),
                     "grad_hidden_rel": rel(inp[0].grad, g_n[0]), "grad_head_rel": rel(inp[1].grad, g_n[1]),
                     "ids_equal": float((sc.ids[m] == ids_n[m]).all(-1).float().mean()),
                     "rewards_max_abs": float((sc.rewards[m] - rew_n[m]).abs().max())}
    sc = probe(inp, cfg, a.check_chunk)
    out["probe_stats_max_abs"] = {k: float((sc.stats[k][inp[5]] - v[inp[5]].float()).abs().max())
                                  for k, v in st_n.items() if k in sc.stats}
    t = THRESHOLDS[dtype_name]
    out["passed"] = all(out[p]["loss_rel"] < t["loss_rel"] and out[p]["grad_hidden_rel"] < t["grad_rel"]
                        and out[p]["grad_head_rel"] < t["grad_rel"] and out[p]["ids_equal"] == 1.0
                        for p in ("single_forward", "two_forward"))
    del inp
    return out


def timing(a, device):
    """Every variant at the full shape, in bf16; ratios to the floor."""
    cfg = OPDConfig(top_k=a.top_k, strategy="only_stu", weight_mode="student_p")
    inp = inputs(a.n, a.hidden, a.vocab, torch.bfloat16, device, a.seed + 100)
    r = {"n": a.n, "hidden": a.hidden, "vocab": a.vocab, "top_k": a.top_k, "chunk_sizes": a.chunks,
         "dtype": "bfloat16", "objective": "top-k only_stu student_p, token_reward_direct, vanilla"}
    runs = [("floor", lambda: floor(inp)), ("floor_forward", lambda: floor(inp, False))]
    for c in a.chunks:
        runs += [(f"single_forward_c{c}", lambda c=c: single(inp, cfg, c)),
                 (f"two_forward_c{c}", lambda c=c: two(inp, cfg, c)), (f"probe_c{c}", lambda c=c: probe(inp, cfg, c))]
    for name, fn in runs:
        fn()                                  # warm-up: kernels compiled, allocator filled
        r[name] = dict(zip(("ms", "peak_gib"), timed(fn, a.reps, inp)))
        print(f"  {name:24s} {r[name]['ms']:9.2f} ms  {r[name]['peak_gib']:7.2f} GiB", flush=True)
    clear(inp)
    single(inp, cfg, a.chunk)
    g_fused = (inp[0].grad.clone(), inp[1].grad.clone())
    before = os.environ.get("OPD_HEAD_KERNELS")
    os.environ["OPD_HEAD_KERNELS"] = "torch"
    try:
        single(inp, cfg, a.chunk)
        r["single_forward_torch_backend"] = dict(zip(("ms", "peak_gib"), timed(lambda: single(inp, cfg, a.chunk), a.reps, inp)))
    finally:
        os.environ.pop("OPD_HEAD_KERNELS")
        if before is not None:
            os.environ["OPD_HEAD_KERNELS"] = before
    print(f"  {'single (torch backend)':24s} {r['single_forward_torch_backend']['ms']:9.2f} ms", flush=True)
    if not a.skip_naive:
        clear(inp)
        naive(inp, cfg)
        g_naive = (inp[0].grad.clone(), inp[1].grad.clone())
        r["naive"] = dict(zip(("ms", "peak_gib"), timed(lambda: naive(inp, cfg), max(2, a.reps // 2), inp)))
        r["full_shape_grad_rel_vs_naive"] = {"hidden": rel(g_fused[0], g_naive[0]), "head": rel(g_fused[1], g_naive[1])}
        print(f"  {'naive':24s} {r['naive']['ms']:9.2f} ms  {r['naive']['peak_gib']:7.2f} GiB", flush=True)
    f, ff = r["floor"]["ms"], r["floor_forward"]["ms"]
    r["x_floor"] = {k: round(v["ms"] / (ff if k.startswith("probe") else f), 3)
                    for k, v in r.items() if isinstance(v, dict) and "ms" in v and not k.startswith("floor")}
    r["targets"] = {"x_floor_max": 1.25, "peak_gib_max": 8.0, "probe_vs": "floor_forward"}
    for k in r["x_floor"]:
        if k.startswith(("single_forward_c", "probe_c")):
            r["targets"][k + "_met"] = r["x_floor"][k] <= 1.25 and r[k]["peak_gib"] <= 8
    r["kernels"] = kernel_parts(a, device)
    return r


def kernel_parts(a, device):
    """One chunk's pieces: torch.topk against the fused row-stats kernel and a plain copy."""
    if device.type != "cuda":
        return {}
    from opd.objectives.triton_head import row_stats, softmax_grad_dense
    z = torch.randn(a.chunk, a.vocab, device=device, dtype=torch.bfloat16)
    lse = torch.logsumexp(z.float(), -1)
    c = torch.ones(a.chunk, device=device)
    out = {"chunk_gib_bf16": round(z.numel() * 2 / 2**30, 3)}
    parts = [("copy", lambda: z.clone()), ("torch_topk_fp32", lambda: z.float().topk(a.top_k, -1)),
             ("row_stats_kernel", lambda: row_stats(z, 1.0, a.top_k)),
             ("softmax_grad_kernel", lambda: softmax_grad_dense(z, 1.0, lse, c, torch.bfloat16))]
    parts += [(f"row_stats_kernel_{n}seg", lambda n=n: row_stats(z, 1.0, a.top_k, n_seg=n)) for n in (1, 2, 4)]
    parts += [("row_stats_kernel_k0", lambda: row_stats(z, 1.0, 0))]
    for name, fn in parts:
        fn()
        out[name + "_ms"] = timed(fn, a.reps)[0]
    return out


def tune_kernels(a, device) -> dict:
    """Times ``row_stats`` on one chunk for each block size and warp count (same ids as the
    default required), keeps the fastest as the module default, then re-times the head."""
    from opd.objectives import triton_head as th
    z = torch.randn(a.chunk, a.vocab, device=device, dtype=torch.bfloat16)
    default = (th.BLOCK, th.NUM_WARPS)
    want = th.row_stats(z, 1.0, a.top_k)
    out = {"default": list(default), "variants": {}}
    for block, warps in ((2048, 4), (4096, 8), (1024, 4)):
        th.BLOCK, th.NUM_WARPS = block, warps
        try:
            got = th.row_stats(z, 1.0, a.top_k)
            same = bool(torch.equal(got[3], want[3]))
            ms = timed(lambda: th.row_stats(z, 1.0, a.top_k), a.reps)[0]
            ms0 = timed(lambda: th.row_stats(z, 1.0, 0), a.reps)[0]
        except Exception as e:  # noqa: BLE001 -- a variant that does not compile is recorded
            out["variants"][f"block{block}_warps{warps}"] = {"error": repr(e)[:500], "same_ids": False, "ms": 1e9}
            continue
        out["variants"][f"block{block}_warps{warps}"] = {"ms": ms, "ms_k0": ms0, "same_ids": same}
        print(f"  row_stats block {block} warps {warps}: {ms} ms (k=0: {ms0} ms) same ids {same}", flush=True)
    best = min((v["ms"], k) for k, v in out["variants"].items() if v["same_ids"])[1]
    th.BLOCK, th.NUM_WARPS = (int(x) for x in best.replace("block", "").split("_warps"))
    out["chosen"] = [th.BLOCK, th.NUM_WARPS]
    out["correctness_bf16"] = guarded(correctness, a, device, "bfloat16", a.seed + 7)
    print(f"  chosen {out['chosen']}: correctness {out['correctness_bf16'].get('passed')}", flush=True)
    a.skip_naive = True
    out["head"] = guarded(timing, a, device)
    return out


def environment(device) -> dict:
    env = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton
        import transformers
        env.update(triton=triton.__version__, transformers=transformers.__version__)
    except ImportError as e:
        env["import_error"] = str(e)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1))
        x = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        ms, _ = timed(lambda: x @ x, 10)
        env["bf16_matmul_tflops_measured"] = round(2 * 8192 ** 3 / ms / 1e9, 1)
    else:
        env["device"] = "cpu (smoke test: not a GPU result)"
    return env


def guarded(fn, *args, **kwargs) -> dict:
    """``fn``'s result, or {"error": the traceback} so that one broken part leaves the others."""
    import traceback
    try:
        return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 -- recorded in the json and printed; the exit code says so
        err = traceback.format_exc()
        print(err, flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": err[-4000:]}


def save(result, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32768, help="response tokens of the timed head")
    p.add_argument("--check-n", type=int, default=4096, help="response tokens of the correctness checks")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--top-k", type=int, default=16)
    p.add_argument("--chunk", type=int, default=4096, help="response tokens per chunk (kernel parts, torch backend)")
    p.add_argument("--chunks", type=int, nargs="+", default=[4096, 8192], help="chunk sizes timed")
    p.add_argument("--check-chunk", type=int, default=1024, help="chunk size of the correctness checks")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-naive", action="store_true", help="skip the 90 GiB naive path at the full shape")
    p.add_argument("--skip-trainer", action="store_true")
    p.add_argument("--budget-s", type=float, default=420, help="no new trainer step after this many seconds")
    p.add_argument("--tune-kernels", action="store_true",
                   help="only: time row_stats block/warp variants, keep the fastest, re-time the head")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the script, not the GPU")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    a = p.parse_args()
    if a.smoke:   # the Triton kernels run too, through Triton's interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
        os.environ.setdefault("OPD_HEAD_KERNELS", "triton")
        a.n, a.check_n, a.hidden, a.vocab, a.chunk, a.reps = 256, 128, 32, 1000, 64, 1
        a.chunks, a.check_chunk = [64], 32
        a.out = str(ROOT / "benchmarks" / "tmp" / "gpu_check_smoke.json")
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        sys.exit("gpu_check.py needs a CUDA device (none is visible to torch here); "
                 "`--smoke` runs the same code on tiny CPU shapes, which is not a GPU result")
    else:
        device = torch.device("cuda")
    out = Path(a.out)
    t0 = time.time()
    result = {"benchmark": "gpu_check (issue 23)", "environment": environment(device),
              "config": {k: v for k, v in vars(a).items() if k != "out"}}
    save(result, out)
    print(json.dumps(result["environment"]), flush=True)
    if a.tune_kernels:
        result["tuning"] = tune_kernels(a, device)
        save(result, out)
        print(json.dumps({k: result["tuning"]["head"].get(k) for k in ("x_floor", "targets")}), flush=True)
        return
    result["correctness"] = [guarded(correctness, a, device, d, a.seed + i) for i, d in enumerate(("float32", "bfloat16"))]
    for c in result["correctness"]:
        print(f"correctness {c.get('dtype')}: passed={c.get('passed')} {c}", flush=True)
    save(result, out)
    print("head timing:", flush=True)
    result["head"] = guarded(timing, a, device)
    result["elapsed_s"] = round(time.time() - t0, 1)
    save(result, out)
    print(json.dumps({k: result["head"].get(k) for k in ("x_floor", "targets", "kernels", "error")}), flush=True)
    if not a.skip_trainer:
        from gpu_trainer import run_trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result["trainer"] = guarded(run_trainer, device, smoke=a.smoke, deadline=t0 + a.budget_s)
        result["elapsed_s"] = round(time.time() - t0, 1)
        save(result, out)
    ok = all(c.get("passed") for c in result["correctness"])
    print(f"done in {time.time() - t0:.0f} s; correctness {'passed' if ok else 'FAILED'}; wrote {out}", flush=True)
    sys.exit(0 if ok else "the chunked head disagrees with the naive path (see correctness in the json)")


if __name__ == "__main__":
    main()
