"""CPU kernel pins: a job computes the same floats on another x86-64 host with AVX2.

torch 2.13's CPU build picks its numeric kernels by the host's instruction set when it loads:
ATen's vectorised kernels (softmax, attention, the normal draws of a model's initialisation),
MKL's BLAS (every float32 matmul) and oneDNN; numpy picks its SIMD loops (``exp``, ``log``)
and its OpenBLAS its gemm kernels the same way. The same run on an AVX-512 host and on an AVX2
host therefore trains other weights. The config key ``kernels`` chooses:

* ``reproducible`` (the default): every job process gets, before torch or numpy loads,

  ============================ ============== =================================================
  variable                     value          what it pins
  ============================ ============== =================================================
  ``ATEN_CPU_CAPABILITY``      ``avx2``       ATen's kernels (``torch.backends.cpu.get_cpu_capability()``)
  ``MKL_CBWR``                 ``AVX2``       MKL's code branch on Intel CPUs; on others MKL
                                              honours only AUTO and COMPATIBLE and takes AUTO:
                                              its own kernels, with fixed cache sizes
  ``MKL_DYNAMIC``,             ``FALSE``      no thread count chosen at run time (MKL's
  ``OMP_DYNAMIC``                             reproducibility conditions)
  ``ONEDNN_MAX_CPU_ISA``       ``AVX2``       oneDNN's JIT kernels (convolutions, bf16 matmul)
  ``OPENBLAS_CORETYPE``        ``Haswell``    numpy's OpenBLAS gemm kernels
  ``NPY_DISABLE_CPU_FEATURES`` AVX-512 ones   numpy 2.4's SIMD loops (its AVX2 ``X86_V3`` stays)
  ``OMP_NUM_THREADS``,         the rule's     the thread count, from ``resources.<rule>.threads``
  ``MKL_NUM_THREADS``,         ``threads``    (not ``--cores``): reductions split by thread
  ``OPENBLAS_NUM_THREADS``
  ``OPD_KERNELS``              the mode       read by ``pinned()`` (fp32 embeddings, fixed threads)
  ============================ ============== =================================================

  so two hosts agree when they run the same MKL branch: any two Intel CPUs with AVX2, and AMD
  CPUs as far as MKL's own AMD kernels are the same (docs/reproducibility.md).
* ``portable``: the same with ``MKL_CBWR=COMPATIBLE``, MKL's SSE2 branch, the one it honours on
  Intel and AMD alike; a pretraining step takes about 1.9x as long.
* ``native``: only the thread counts (Snakemake's granted ``threads``); the instruction-set pins
  are removed, so each library picks the host's fastest kernels.

A host without AVX2 or FMA (or not x86-64) gets no instruction-set pin (none it could run would
match), and a warning: its numbers differ from the reference.

The rule adapter calls ``pin_job(snakemake)`` first, before anything imports torch or numpy;
``in_effect()`` reports what the loaded libraries actually use (for the fingerprint).

    pin_job(snakemake)                       # in opd.stages.run, first line
    pins("reproducible", threads=2)          # the environment, as a dict
"""
from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys
from pathlib import Path

MODES = ("reproducible", "portable", "native")
#: The mode of a config without a ``kernels`` key (config/schema.yaml has the same default).
DEFAULT_MODE = "reproducible"
#: Thread-count variables of the numeric libraries (torch's OpenMP pool, MKL, OpenBLAS).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Instruction-set pins of the pinned modes, by mode (set only on an x86-64 host with AVX2).
PINS = {
    "reproducible": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "MKL_DYNAMIC": "FALSE",
        "OMP_DYNAMIC": "FALSE",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        # numpy 2.4's dispatch targets above X86_V3 (AVX2); numpy.show_runtime() lists them
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
}
PINS["portable"] = {**PINS["reproducible"], "MKL_CBWR": "COMPATIBLE"}
#: Every variable a pinned mode sets; ``native`` removes them.
PINNED_VARS = tuple(PINS["reproducible"])
MODE_VAR = "OPD_KERNELS"
#: MKL's CNR branch codes (mkl.h, MKL_CBWR_*); bit 16 is STRICT.
_MKL_BRANCHES = {0: "OFF", 1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2",
                 9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1"}


def host_has_avx2() -> bool:
    """Whether this is an x86-64 host whose CPU flags (``/proc/cpuinfo``) include AVX2 and FMA."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = next((ln for ln in flags.splitlines() if ln.startswith("flags")), "")
    words = set(line.split())
    return {"avx2", "fma"} <= words


def pins(mode: str, threads: int, avx2: bool | None = None) -> dict[str, str]:
    """The environment of one job in ``mode`` with ``threads`` numeric threads.

    ``avx2`` says whether the host runs AVX2 (default: ``host_has_avx2()``); without it only
    the thread counts and the mode are set. Raises ``ValueError`` for an unknown mode or a
    thread count below 1.
    """
    if mode not in MODES:
        raise ValueError(f"kernels: {mode!r} is not a mode; use one of {', '.join(MODES)}")
    if int(threads) < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    env = {var: str(int(threads)) for var in THREAD_VARS}
    env[MODE_VAR] = mode
    if mode in PINS and (host_has_avx2() if avx2 is None else avx2):
        env.update(PINS[mode])
    return env


def apply(mode: str, threads: int) -> dict[str, str]:
    """Set ``pins(mode, threads)`` in ``os.environ`` (``native`` also removes the instruction-set
    pins a shell may have set) and return them. Raises ``RuntimeError`` in a pinned mode when
    torch or numpy is already loaded: they read these variables once, when they load."""
    loaded = [m for m in ("torch", "numpy") if m in sys.modules]
    if mode in PINS and loaded:
        raise RuntimeError(f"{' and '.join(loaded)} loaded before the CPU kernel pins were set, so "
                           "the pins cannot take effect; call opd.kernels.apply first in the process")
    env = pins(mode, threads)
    for var in PINNED_VARS:
        os.environ.pop(var, None)
    os.environ.update(env)
    if "torch" in sys.modules:  # native mode only: still honour the thread count
        sys.modules["torch"].set_num_threads(int(threads))
    if mode in PINS and "MKL_CBWR" not in env:
        print("warning: this host has no AVX2/FMA (or is not x86-64): the kernels are not pinned "
              "and the numbers will differ from the reference fingerprint", file=sys.stderr)
    return env


def pin_job(smk) -> dict[str, str]:
    """Pin the kernels of a Snakemake job: mode from ``config["kernels"]``; threads from the
    config's ``resources.<rule>.threads`` in a pinned mode (so ``--cores`` cannot change the
    numbers), Snakemake's granted ``threads`` in ``native`` mode."""
    from opd.resources import resource

    mode = smk.config.get("kernels", DEFAULT_MODE)
    threads = resource(smk.config, smk.rule, "threads") if mode in PINS else smk.threads
    return apply(mode, threads)


def pinned() -> bool:
    """Whether this process runs in a pinned mode (set by ``apply``): code with a host-dependent
    fast path (bf16 where the CPU has it, a load-dependent thread count) takes the portable one."""
    return os.environ.get(MODE_VAR) in PINS


def in_effect() -> dict:
    """What the loaded libraries use (imports torch and numpy): the mode, ATen's capability,
    MKL's code branch, oneDNN's cap, numpy's SIMD targets and OpenBLAS's core, thread counts."""
    import numpy as np
    import torch

    from numpy._core import _multiarray_umath as umath

    return {
        "mode": os.environ.get(MODE_VAR),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": mkl_branch(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "numpy_simd": [t for t in umath.__cpu_dispatch__ if umath.__cpu_features__.get(t)],
        "openblas_core": openblas_core(np),
        "torch_threads": torch.get_num_threads(),
    }


def mkl_branch() -> str | None:
    """MKL's conditional-numerical-reproducibility branch in effect (``OFF``, ``AUTO``,
    ``COMPATIBLE``, ``AVX2``..., ``,STRICT``), read from torch's statically linked MKL; None when
    this torch build has no MKL."""
    import torch

    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(str(lib)).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    code = get(ctypes.c_int(-1))  # MKL_CBWR_ALL
    name = _MKL_BRANCHES.get(code & 0xFFFF, str(code & 0xFFFF))
    return name + (",STRICT" if code & 0x10000 else "")


def openblas_core(np) -> str | None:
    """The core type of numpy's bundled OpenBLAS (``Haswell``, ``SkylakeX``, ``Zen``...)."""
    for path in glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*.so")):
        try:
            fn = ctypes.CDLL(path).scipy_openblas_get_corename64_
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        return fn().decode()
    return None
