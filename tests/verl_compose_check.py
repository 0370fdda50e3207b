"""Compose verl 0.9.1's trainer config offline with given overrides (run with the verl env's python).

Reads JSON on stdin: ``{"overrides": ["k=v", ...], "select": ["dotted.key", ...]}`` and prints
``{"ok": true, "values": {key: value}, "dataclasses": [...]}`` -- or ``{"ok": false, "error": ...}``
with exit status 1 when composition (or the dataclass conversion of ``algorithm``,
``distillation`` and the actor/rollout configs, which checks e.g. loss names against verl's
registries) fails.  ``opd.train.verl.ext`` is imported first, as verl's workers would.

    echo '{"overrides": ["algorithm.adv_estimator=grpo"], "select": ["algorithm.adv_estimator"]}' \\
        | .venv-verl/bin/python tests/verl_compose_check.py
"""
from __future__ import annotations

import json
import sys


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=list(overrides))


def convert(cfg) -> list[str]:
    """Instantiate the config sections the trainer turns into dataclasses; returns their names."""
    from verl.utils.config import omega_conf_to_dataclass

    done = []
    for key in ("algorithm", "distillation", "actor_rollout_ref.actor", "actor_rollout_ref.rollout"):
        from omegaconf import OmegaConf

        node = OmegaConf.select(cfg, key)
        obj = omega_conf_to_dataclass(node)
        done.append(f"{key}:{type(obj).__name__}")
    return done


def main() -> int:
    req = json.load(sys.stdin)
    try:
        import opd.train.verl.ext  # noqa: F401  (register the loss names the config refers to)
        from omegaconf import OmegaConf

        cfg = compose(req.get("overrides", []))
        OmegaConf.resolve(cfg)
        values = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v := OmegaConf.select(cfg, k)) else v
                  for k in req.get("select", [])}
        classes = convert(cfg) if req.get("convert", True) else []
    except Exception as e:  # noqa: BLE001 - report any failure as data
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps({"ok": True, "values": values, "dataclasses": classes}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
