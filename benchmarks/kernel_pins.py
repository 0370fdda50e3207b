"""Does each CPU kernel pin take effect? Every pin alone, and the modes, in fresh interpreters.

For each setting a fresh Python process (the pins only act before torch and numpy load) reports
what the libraries use (``opd.kernels.in_effect``: ATen's capability, MKL's code branch read
back from MKL, numpy's SIMD targets, OpenBLAS's core), oneDNN's ISA line (``ONEDNN_VERBOSE``)
and the sha256 (first 12 hex digits) of a few results computed from fixed inputs: a float32
matmul (MKL), softmax and causal attention (ATen's vectorised kernels), ``torch.randn`` (ATen's
normal sampler: a model's initial weights), a float64 ``numpy.exp`` (numpy's SIMD loops), a
float32 numpy matmul (OpenBLAS) and a convolution (oneDNN). A pin takes effect when what it
names changes or its results change against ``native``. (``ATEN_CPU_CAPABILITY=default`` changes
every torch result, as its inputs come from ``torch.randn``.)

    .venv/bin/python benchmarks/kernel_pins.py          # about a minute on 2 cores

Writes ``benchmarks/results/kernel_pins.json``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opd import kernels  # noqa: E402
from opd.io import write_json  # noqa: E402
from opd.runlog import cpu_model  # noqa: E402

PROBE = r"""
import hashlib, json, os, sys
from opd import kernels
kernels.apply(sys.argv[1], 2)
os.environ.update(json.loads(sys.argv[2]))
import numpy as np, torch
F = torch.nn.functional
h = lambda b: hashlib.sha256(b).hexdigest()[:12]
t = lambda x: h(x.detach().contiguous().numpy().tobytes())
g = torch.Generator().manual_seed(0)
a, b, x = torch.randn(512, 96, generator=g), torch.randn(96, 256, generator=g), torch.randn(64, 384, generator=g)
q, kv = torch.randn(2, 3, 40, 32, generator=g), torch.randn(2, 1, 40, 32, generator=g).expand(2, 3, 40, 32)
y = np.random.default_rng(0).standard_normal((300, 384))
out = kernels.in_effect()
out["results"] = {
    "torch_matmul": t(a @ b), "torch_softmax": t(torch.softmax(x, -1)),
    "torch_attention": t(F.scaled_dot_product_attention(q, kv, kv, is_causal=True)),
    "torch_randn": t(torch.randn(1000, generator=torch.Generator().manual_seed(1))),
    "numpy_exp64": h(np.exp(y).tobytes()), "numpy_matmul32": h((y.astype(np.float32) @ y.T.astype(np.float32)).tobytes()),
    "onednn_conv": t(F.conv2d(torch.randn(4, 32, 32, 32, generator=g), torch.randn(16, 32, 3, 3, generator=g))),
}
print(json.dumps(out))
"""

#: (name, mode, extra variables on top of the mode's pins): every pin alone on top of native.
SETTINGS = [("native", "native", {})] + [
    (f"native + {var}={value}", "native", {var: value}) for var, value in kernels.PINS["reproducible"].items()
    if var not in ("MKL_DYNAMIC", "OMP_DYNAMIC")] + [
    ("native + MKL_CBWR=COMPATIBLE", "native", {"MKL_CBWR": "COMPATIBLE"}),
    ("native + ATEN_CPU_CAPABILITY=default", "native", {"ATEN_CPU_CAPABILITY": "default"}),
    ("reproducible", "reproducible", {}), ("portable", "portable", {})]


def probe(mode: str, extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in kernels.PINNED_VARS}
    env["ONEDNN_VERBOSE"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE, mode, json.dumps(extra)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    result["onednn_isa"] = next((ln.split("isa:", 1)[1] for ln in lines if ",isa:" in ln), None)
    return result


def main() -> None:
    rows = {}
    for name, mode, extra in SETTINGS:
        rows[name] = probe(mode, extra)
        print(f"{name:50s} {rows[name]['aten_capability']:7s} mkl {rows[name]['mkl_cbwr']:10s} "
              f"onednn {rows[name]['onednn_isa']}", flush=True)
    base = rows["native"]["results"]
    for row in rows.values():
        row["changed_vs_native"] = sorted(k for k, v in row["results"].items() if v != base[k])
    result = {
        "what": "each CPU kernel pin alone (on top of native) and the modes: what the libraries "
                "use, and which results change against native (sha256 prefixes of fixed computations)",
        "settings": rows,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                    "python": platform.python_version(), "shell_OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
    }
    out = ROOT / "benchmarks" / "results" / "kernel_pins.json"
    write_json(result, out)
    for name, row in rows.items():
        print(f"{name:50s} changes: {', '.join(row['changed_vs_native']) or '-'}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
