"""Generation: sample n responses per chat prompt, with the backend the config chooses.

Backends (``opd.backends``): ``hf`` (transformers, CPU default, ``hf.py``) and ``vllm`` (a
worker process in the vLLM stack, ``vllm/``). Both take ``SamplingParams`` (``config.py``) and
return the same rows.

    with open_generator(model_dir, "vllm", options, stack=".venv-vllm/bin/python") as gen:
        rows = gen.generate(prompts, SamplingParams(n=4, temperature=0.7))
"""
from __future__ import annotations

import contextlib

from opd import backends


@contextlib.contextmanager
def open_generator(model_dir, backend: str = "hf", options: dict | None = None,
                   stack: str | None = None):
    """A generator of the registered generation ``backend`` (``stack``: its tool's Python)."""
    gen = backends.load(backends.get("generation", backend).run)(model_dir, stack=stack, options=options)
    try:
        yield gen
    finally:
        gen.close()
