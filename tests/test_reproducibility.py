"""Reproducibility: the CPU kernel pins (opd/kernels.py) are set before torch loads in a real
Snakemake job and take effect; the world's fingerprint (opd/fingerprint.py) is written, well
formed, and its comparison names the first artifact that differs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from opd import fingerprint, kernels
from opd.stages.fingerprint import world_fingerprint

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
AVX2 = kernels.host_has_avx2()
INTEL = "GenuineIntel" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False



def write_world(root: Path, weight: float = 0.5, rows: int = 3) -> dict:
    """A hand-built world folder: one problem split, a tokenizer, one model's weights."""
    import numpy as np
    import pandas as pd
    from safetensors.numpy import save_file

    (root / "problems").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"prompt": [[{"role": "user", "content": f"{i} + 1?"}] for i in range(rows)],
                  "extra_info": [{"index": i, "split": "pretrain"} for i in range(rows)]}
                 ).to_parquet(root / "problems/pretrain.parquet")
    (root / "tokenizer").mkdir(exist_ok=True)
    (root / "tokenizer/tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "b": 1}}}))
    (root / "tokenizer/chat_template.jinja").write_text("{{ messages }}")
    (root / "models/student").mkdir(parents=True, exist_ok=True)
    save_file({"lm_head.weight": np.full((4, 3), weight, dtype=np.float32),
               "embed.weight": np.arange(6, dtype=np.float32).reshape(2, 3)},
              str(root / "models/student/model.safetensors"))
    (root / "models/student/config.json").write_text('{"transformers_version": "x"}')
    return {"problems": [str(root / "problems/pretrain.parquet")], "tokenizer": str(root / "tokenizer"),
            "models": [str(root / "models/student")]}


# One rule through the real adapter (scripts/stage.py -> opd.stages.run): the fingerprint stage
# imports torch and records the kernels in effect, so the job reports what its pins did.
SNAKEFILE = textwrap.dedent(f"""
    rule world_fingerprint:
        input:
            problems=["world/problems/pretrain.parquet"],
            tokenizer="world/tokenizer",
            models=["world/models/student"],
        output:
            fingerprint="results/fingerprint.json",
        params:
            settings={{"seed": 0}},
        threads: 1
        log:
            "results/logs/world_fingerprint.log",
        script:
            "{ROOT / 'scripts' / 'stage.py'}"
""")


def _job(tmp_path: Path, config: dict, cores: int = 2) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_world(tmp_path / "world")
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in kernels.PINNED_VARS}
    out = subprocess.run([SNAKEMAKE, "--cores", str(cores), "--configfile", "config.yaml", "-q"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    log = tmp_path / "results/logs/world_fingerprint.log"
    assert out.returncode == 0, out.stderr[-3000:] + (log.read_text() if log.exists() else "")
    return json.loads((tmp_path / "results/fingerprint.json").read_text())


@pytest.mark.skipif(not AVX2, reason="the instruction-set pins apply to x86-64 hosts with AVX2 and FMA")
def test_a_job_runs_with_the_pins_in_effect(tmp_path):
    """The adapter pins before torch loads: ATen, MKL, numpy and OpenBLAS use the pinned kernels
    (a pin set after torch or numpy loaded would not show here), and the thread count is the
    rule's configured one."""
    fp = _job(tmp_path, {"kernels": "reproducible", "resources": {"world_fingerprint": {"threads": 2}}})
    k = fp["kernels"]
    assert k["mode"] == "reproducible"
    assert k["aten_capability"] == "AVX2"
    # MKL honours its AVX2 branch on Intel CPUs only; elsewhere it takes AUTO (its documentation)
    assert k["mkl_cbwr"] == ("AVX2" if INTEL else "AUTO")
    assert k["onednn_max_cpu_isa"] == "AVX2"
    assert k["openblas_core"] == "Haswell"
    assert not {"X86_V4", "AVX512_ICL", "AVX512_SPR"} & set(k["numpy_simd"])
    assert k["torch_threads"] == 2          # resources.world_fingerprint.threads, not the rule's 1


@pytest.mark.skipif(not AVX2, reason="the instruction-set pins apply to x86-64 hosts with AVX2 and FMA")
def test_portable_and_native_jobs(tmp_path):
    portable = _job(tmp_path / "portable", {"kernels": "portable"})["kernels"]
    assert (portable["mode"], portable["aten_capability"], portable["mkl_cbwr"]) == ("portable", "AVX2", "COMPATIBLE")
    fp = _job(tmp_path / "native", {"kernels": "native"}, cores=1)
    k = fp["kernels"]
    assert k["mode"] == "native"
    assert k["aten_capability"] == fp["host"]["native_capability"]
    assert k["mkl_cbwr"] == "OFF" and k["onednn_max_cpu_isa"] is None
    assert k["torch_threads"] == 1          # native: the threads Snakemake granted


def test_pins_are_refused_once_torch_is_loaded():
    """A process that imported torch first cannot be pinned: a clear error, not silent drift."""
    code = "import torch; from opd import kernels; kernels.apply('reproducible', 1)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "loaded before the CPU kernel pins" in out.stderr


def test_the_adapter_loads_no_torch_or_numpy_before_the_pins(monkeypatch):
    """Importing the adapter's module and pinning, as scripts/stage.py does, loads neither."""
    code = textwrap.dedent("""
        import sys, types
        import opd.stages
        seen = [m for m in ("torch", "numpy") if m in sys.modules]
        smk = types.SimpleNamespace(config={}, rule="world_model", threads=1)
        from opd import kernels
        kernels.pin_job(smk)
        print(seen, [m for m in ("torch", "numpy") if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, check=True)
    assert out.stdout.split() == ["[]", "[]"]


def test_pins_by_mode():
    rep = kernels.pins("reproducible", 3, avx2=True)
    assert rep["ATEN_CPU_CAPABILITY"] == "avx2" and rep["MKL_CBWR"] == "AVX2"
    assert kernels.pins("portable", 3, avx2=True)["MKL_CBWR"] == "COMPATIBLE"
    assert rep["OPENBLAS_CORETYPE"] == "Haswell" and rep["OPD_KERNELS"] == "reproducible"
    assert {rep[v] for v in kernels.THREAD_VARS} == {"3"}
    # without AVX2 nothing forces a kernel the host could not run
    assert not {"ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE"} & set(kernels.pins("reproducible", 1, avx2=False))
    native = kernels.pins("native", 2, avx2=True)
    assert set(native) == {*kernels.THREAD_VARS, "OPD_KERNELS"}
    with pytest.raises(ValueError, match="kernels: 'fast' is not a mode"):
        kernels.pins("fast", 1)


def test_the_schema_default_is_the_modules_default():
    schema = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
    prop = schema["properties"]["kernels"]
    assert prop["default"] == kernels.DEFAULT_MODE and tuple(prop["enum"]) == kernels.MODES


def test_pinned_embeddings_take_the_portable_path(monkeypatch):
    from opd.data.embeddings import resolve_precision

    monkeypatch.setenv("OPD_KERNELS", "reproducible")
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"             # an explicit choice still wins


def _fingerprint(root: Path, **world) -> dict:
    paths = write_world(root, **world)
    out = root / "fingerprint.json"
    world_fingerprint(**paths, settings={"seed": 0, "kernels": "reproducible"}, fingerprint=str(out))
    return json.loads(out.read_text())


def test_the_fingerprint_is_written_and_well_formed(tmp_path):
    fp = _fingerprint(tmp_path)
    assert list(fp["artifacts"]) == ["problems/pretrain", "tokenizer", "models/student"]
    hexes = [fp["world_sha256"], *fp["artifacts"].values(), fp["settings"]["settings_sha256"]]
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hexes)
    assert fp["settings"]["seed"] == 0 and fp["settings"]["kernels"] == "reproducible"
    assert {"mode", "aten_capability", "mkl_cbwr", "numpy_simd", "openblas_core",
            "torch_threads"} <= set(fp["kernels"])
    assert {"machine", "cpu", "cores", "native_capability"} <= set(fp["host"])
    assert fp["host"]["native_capability"] in ("DEFAULT", "AVX2", "AVX512", "SVE256", "ZVECTOR")
    assert {"python", "torch", "numpy", "transformers"} <= set(fp["versions"])
    # the same world written again hashes the same; the model hash is of weights, not config.json
    (tmp_path / "models/student/config.json").write_text('{"transformers_version": "y"}')
    again = fingerprint.artifact_hashes(*write_world(tmp_path / "again").values())
    assert again == fp["artifacts"]


def test_compare_matches_and_names_the_first_artifact_that_differs(tmp_path):
    ref = _fingerprint(tmp_path / "ref")
    same, lines = fingerprint.compare(ref, _fingerprint(tmp_path / "same"))
    assert same and lines[0].startswith("match: the same world (3 artifacts")
    # one weight changed: the model is named, nothing upstream of it
    same, lines = fingerprint.compare(ref, _fingerprint(tmp_path / "w", weight=0.25))
    assert not same and lines[0].startswith("differ: first differing artifact models/student (")
    assert "1 of 3 differ" in lines[0]
    # a problem split changed too: the first in DAG order is the split
    other = _fingerprint(tmp_path / "p", weight=0.25, rows=4)
    same, lines = fingerprint.compare(ref, other)
    assert not same and "first differing artifact problems/pretrain" in lines[0]
    assert lines[1] == "  also differ: models/student"
    # what produced them is listed as a likely cause
    other["kernels"]["aten_capability"] = "DEFAULT"
    _, lines = fingerprint.compare(ref, other)
    assert any(ln.startswith("  kernels.aten_capability: ") and "'DEFAULT' here" in ln for ln in lines)


def test_the_compare_command(tmp_path):
    ref, other = tmp_path / "a.json", tmp_path / "b.json"
    fp = _fingerprint(tmp_path / "w")
    ref.write_text(json.dumps(fp))
    fp["artifacts"]["tokenizer"] = "0" * 64
    other.write_text(json.dumps(fp))
    cmd = [sys.executable, "-m", "opd.fingerprint", "compare"]
    ok = subprocess.run(cmd + [str(ref), str(ref)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "match: the same world" in ok.stdout
    bad = subprocess.run(cmd + [str(ref), str(other)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "first differing artifact tokenizer" in bad.stdout
    (tmp_path / "junk.json").write_text("[]")
    junk = subprocess.run(cmd + [str(ref), str(tmp_path / "junk.json")], capture_output=True, text=True, cwd=ROOT)
    assert junk.returncode == 2 and "not a fingerprint" in junk.stderr
