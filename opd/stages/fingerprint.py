"""Stage of the world's fingerprint (rules/fingerprint.smk; opd/fingerprint.py)."""
from __future__ import annotations


def world_fingerprint(*, problems: list[str], tokenizer: str, models: list[str], settings: dict,
                      fingerprint: str) -> None:
    """Write the fingerprint JSON of the built world: the sha256 of every problem split, the
    tokenizer and every world model's weights, the kernels in effect, host, versions and
    ``settings`` (seed, kernel mode, world config, thread counts)."""
    from opd import fingerprint as fp
    from opd.io import write_json

    problems = [problems] if isinstance(problems, str) else list(problems)
    models = [models] if isinstance(models, str) else list(models)
    record = fp.build(problems, tokenizer, models, settings)
    write_json(record, fingerprint)
    print(f"world_sha256 {record['world_sha256']} ({len(record['artifacts'])} artifacts, kernels "
          f"{record['kernels']['mode']}, capability {record['kernels']['aten_capability']}) -> {fingerprint}")
