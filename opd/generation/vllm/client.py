"""Drive a vLLM generation worker (``opd.generation.vllm.worker``) in the vLLM venv from the core venv.

vLLM needs its own stack (``make env-vllm`` builds ``.venv-vllm``; or ``--sdm conda`` with
``envs/vllm.yaml``), so the core code talks to it through a subprocess and JSON lines. Only the
standard library is used here::

    with VLLMWorker(".venv-vllm/bin/python", model_dir, enforce_eager=True) as w:
        outs = w.generate(prompt_ids, n=4, temperature=0.7, top_p=0.95, max_new_tokens=64,
                          seed=0, stop_token_ids=[tokenizer.eos_token_id])
    # outs[i][s] == {"token_ids": [...], "finish_reason": "stop" | "length"}

On CPU, vLLM's attention takes head_dim 32, 64, 80, 96, ... only (the worker refuses others at
start), and ``enforce_eager=True`` halves the start (about 25 s instead of 50 s on 2 cores).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class VLLMWorkerError(RuntimeError):
    """The worker died or answered with an error."""


class VLLMWorker:
    """One vLLM engine in a subprocess; a context manager."""

    def __init__(self, python, model, dtype: str = "float32", max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 enforce_eager: bool = False, seed: int = 0, stderr=None, echo: bool = True):
        """Start the worker with ``python`` (the vLLM venv's) and wait until its engine is up.

        ``stderr``: a file for the worker's log; by default it is echoed to our stderr (``echo``)
        and its last lines go into the error raised when the worker dies.
        """
        python = Path(python)
        if not python.exists():
            raise FileNotFoundError(
                f"no vLLM python at {python}: build it with `make env-vllm` "
                "(or run snakemake with `--sdm conda`, which uses envs/vllm.yaml)")
        cmd = [str(python), "-m", "opd.generation.vllm.worker", "--model", str(model), "--dtype", dtype,
               "--tensor-parallel-size", str(tensor_parallel_size),
               "--gpu-memory-utilization", str(gpu_memory_utilization), "--seed", str(seed)]
        if max_model_len:
            cmd += ["--max-model-len", str(max_model_len)]
        if enforce_eager:
            cmd.append("--enforce-eager")
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default fails a memory check on CPU
        env.setdefault("VLLM_CACHE_ROOT", str(ROOT / ".cache" / "vllm"))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        # Without a given file, the worker's stderr is echoed to ours and its tail kept for errors.
        self._tail: deque[str] = deque(maxlen=40)
        self._errors: deque[str] = deque(maxlen=6)  # lines naming an exception: the root cause
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE if stderr is None else stderr,
                                     env=env, text=True, bufsize=1)
        if stderr is None:
            self._pump = threading.Thread(target=self._copy_stderr, args=(echo,), daemon=True)
            self._pump.start()
        if self._read() != {"ready": True}:
            self._fail("vLLM worker did not start")

    def _copy_stderr(self, echo: bool) -> None:
        for line in self.proc.stderr:
            self._tail.append(line)
            if "Error: " in line or "Exception: " in line or line.startswith("SystemExit"):
                if line not in self._errors:
                    self._errors.append(line)
            if echo:
                sys.stderr.write(line)

    def _fail(self, what: str):
        self.close(timeout=5)
        if self.proc.stderr is not None:
            self._pump.join(timeout=5)
        if not self._tail:
            raise VLLMWorkerError(f"{what} (exit code {self.proc.returncode}); see its stderr file")
        errors = f"errors in its stderr:\n{''.join(self._errors)}\n" if self._errors else ""
        raise VLLMWorkerError(f"{what} (exit code {self.proc.returncode}); {errors}"
                              f"end of its stderr:\n{''.join(self._tail)}")

    def _read(self) -> dict | None:
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def generate(self, prompt_ids: list[list[int]], n: int = 1, temperature: float = 1.0,
                 top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0,
                 stop_token_ids: list[int] = (), logprobs: int = 0) -> list[list[dict]]:
        """``n`` samples per prompt: ``[[{"token_ids", "finish_reason"}, ...], ...]``.

        Only ``stop_token_ids`` stop a sample (pass the tokenizer's eos), and the stop token is the
        last of ``token_ids``; prompt i is sampled with ``seed + i``; temperature 0 is greedy.
        """
        req = {"prompt_ids": [list(map(int, p)) for p in prompt_ids], "n": n,
               "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
               "seed": seed, "stop_token_ids": [int(t) for t in stop_token_ids], "logprobs": logprobs}
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            answer = self._read()
        except BrokenPipeError:
            answer = None
        if answer is None:
            self._fail("vLLM worker died")
        if "error" in answer:
            raise VLLMWorkerError(answer["error"])
        return answer["outputs"]

    def close(self, timeout: float = 60) -> int | None:
        """Close stdin (the worker exits on EOF), wait, and kill it if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        return self.proc.returncode

    def __enter__(self) -> "VLLMWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
