"""The fingerprint of the tiny world: one small JSON that says whether a run built the same world.

``make run`` writes ``results/fingerprint.json`` (rule ``world_fingerprint``): the sha256 of
every problem split, of the tokenizer and of every tiny-world model's weights, their combined
``world_sha256``, and what produced them: the kernel mode and the kernels in effect
(``opd.kernels.in_effect``), the host (CPU model, ATen's native capability, cores), library
versions and the world's settings (seed, world config, thread counts). Two runs whose
``world_sha256`` match built the same world bit for bit, so every number downstream is the same.

Hashes are of content, not of file bytes, so a library that writes the same data differently
(parquet metadata, JSON key order) does not count as a difference:

* a problem split: its rows as canonical JSON (sorted keys), one per line;
* the tokenizer: every file in its folder (JSON files as canonical JSON), by name;
* a model: every tensor of its ``*.safetensors`` files (name, dtype, shape, raw bytes), by name.

Compare two fingerprints (exit status 0 when they match, 1 when not; the first differing
artifact is named in DAG order: problems, tokenizer, models)::

    python -m opd.fingerprint compare docs/fingerprint.json results/fingerprint.json
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import subprocess
import sys
from importlib import metadata
from pathlib import Path

#: Libraries whose version is recorded (they compute or serialise the world).
LIBRARIES = ("torch", "numpy", "transformers", "tokenizers", "safetensors", "pyarrow", "pandas")


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def parquet_sha256(path: str | os.PathLike) -> str:
    """sha256 of a parquet file's rows as canonical JSON lines (column order and file metadata
    do not count)."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for row in pq.read_table(path).to_pylist():
        h.update(_canonical(row) + b"\n")
    return h.hexdigest()


def folder_sha256(path: str | os.PathLike) -> str:
    """sha256 of every file in a folder (recursively), by relative name; JSON files as
    canonical JSON."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.suffix == ".json":
            data = _canonical(json.loads(data))
        h.update(_canonical([str(f.relative_to(root)), hashlib.sha256(data).hexdigest()]))
    return h.hexdigest()


def weights_sha256(model_dir: str | os.PathLike) -> str:
    """sha256 of the tensors in a Hugging Face model folder's ``*.safetensors`` files: each
    tensor's name, dtype, shape and raw bytes, in name order. Raises ``FileNotFoundError`` when
    the folder has no safetensors file."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights to fingerprint")
    tensors = {}
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
            base = 8 + size
            for name, info in header.items():
                if name != "__metadata__":
                    tensors[name] = (f, base, info)
    h = hashlib.sha256()
    for name in sorted(tensors):
        f, base, info = tensors[name]
        start, end = info["data_offsets"]
        with open(f, "rb") as fh:
            fh.seek(base + start)
            data = fh.read(end - start)
        h.update(_canonical([name, info["dtype"], info["shape"]]))
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def artifact_hashes(problems: list[str], tokenizer: str, models: list[str]) -> dict[str, str]:
    """``{"problems/<split>": ..., "tokenizer": ..., "models/<name>": ...}`` in DAG order."""
    out = {f"problems/{Path(p).stem}": parquet_sha256(p) for p in problems}
    out["tokenizer"] = folder_sha256(tokenizer)
    out.update({f"models/{Path(m).name}": weights_sha256(m) for m in models})
    return out


def native_capability() -> str | None:
    """ATen's capability on this host without ``ATEN_CPU_CAPABILITY`` (a fresh interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    cmd = [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else None


def build(problems: list[str], tokenizer: str, models: list[str], settings: dict) -> dict:
    """The fingerprint dict of a built world (imports torch, for the kernels in effect)."""
    from opd.kernels import in_effect
    from opd.runlog import cpu_model

    artifacts = artifact_hashes(problems, tokenizer, models)
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "world_sha256": hashlib.sha256(_canonical(artifacts)).hexdigest(),
        "artifacts": artifacts,
        "settings": {**settings, "settings_sha256": hashlib.sha256(_canonical(settings)).hexdigest()},
        "kernels": in_effect(),
        "host": {"machine": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count(),
                 "native_capability": native_capability()},
        "versions": {"python": platform.python_version(), **versions},
    }


def compare(reference: dict, other: dict) -> tuple[bool, list[str]]:
    """Whether two fingerprints built the same world, and lines that say so: the first artifact
    that differs (in the reference's order), then every other difference in what produced them
    (settings, kernels, host, versions) as likely causes."""
    ref_art, oth_art = reference.get("artifacts", {}), other.get("artifacts", {})
    lines = []
    differing = [k for k in ref_art if oth_art.get(k) != ref_art[k]]
    extra = [k for k in oth_art if k not in ref_art]
    same = not differing and not extra
    if same:
        lines.append(f"match: the same world ({len(ref_art)} artifacts, world_sha256 "
                     f"{reference.get('world_sha256', '')[:12]})")
    else:
        first = differing[0] if differing else extra[0]
        what = ("missing here" if first not in oth_art else
                "not in the reference" if first not in ref_art else
                f"{ref_art[first][:12]} in the reference, {oth_art[first][:12]} here")
        lines.append(f"differ: first differing artifact {first} ({what}); "
                     f"{len(differing) + len(extra)} of {len(set(ref_art) | set(oth_art))} differ")
        if len(differing) > 1:
            lines.append(f"  also differ: {', '.join(differing[1:] + extra)}")
    for section in ("settings", "kernels", "host", "versions"):
        a, b = reference.get(section, {}), other.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key) and key != "settings_sha256":
                lines.append(f"  {section}.{key}: {a.get(key)!r} in the reference, {b.get(key)!r} here")
    return same, lines


def load(path: str | os.PathLike) -> dict:
    """A fingerprint file; ``ValueError`` naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a fingerprint ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict):
        raise ValueError(f"{path}: not a fingerprint (no `artifacts` mapping); make one with "
                         "`make fingerprint` (results/fingerprint.json)")
    return data


def main(argv: list[str] | None = None) -> int:
    """``compare REFERENCE OTHER``: print the verdict; 0 match, 1 differ, 2 usage error."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "compare":
        print("usage: python -m opd.fingerprint compare REFERENCE.json OTHER.json", file=sys.stderr)
        return 2
    try:
        same, lines = compare(load(argv[1]), load(argv[2]))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{argv[2]} against {argv[1]}:")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
