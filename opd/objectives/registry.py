"""A tiny name -> function registry used for advantage estimators and policy losses.

    >>> REG = Registry("advantage estimator")
    >>> @REG.register("mine")
    ... def mine(*args): ...
    >>> REG.get("mine") is mine
    True

Registering a name twice, or asking for a name that was never registered, raises
``ValueError``; the latter message lists the valid names. Built-in entries are declared here
by import path (``"module:function"``) and imported on first ``get``, so listing and checking
names (the config check at DAG build) imports no torch. User code registers more with the
decorators (``@ADV_ESTIMATORS.register("mine")``, ``opd.objectives.register_policy_loss``) in a
module named under the config's ``extensions:``.
"""
from __future__ import annotations

import importlib
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


class Registry:
    """Maps string names to callables.

    Args:
        kind: human readable description used in error messages ("policy loss", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, Callable | str] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``fn`` under ``name``; raises ``ValueError`` on a duplicate."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def deco(fn: F) -> F:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} is already registered "
                                 f"(registered: {', '.join(self.names())})")
            self._fns[name] = fn
            return fn

        return deco

    def register_lazy(self, name: str, path: str) -> None:
        """Register ``name`` as the ``"module:function"`` at ``path``, imported on first ``get``."""
        self.register(name)(path)  # type: ignore[arg-type]

    def get(self, name: str) -> Callable:
        """The callable registered as ``name``; ``ValueError`` listing valid names otherwise."""
        try:
            fn = self._fns[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None
        if isinstance(fn, str):
            module, attr = fn.split(":")
            fn = self._fns[name] = getattr(importlib.import_module(module), attr)
        return fn

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._fns)

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


#: Advantage estimators: ``fn(rewards, valid, response_mask, outcome, group_ids, cfg)``.
ADV_ESTIMATORS = Registry("advantage estimator")
#: Per-token policy losses and their aggregated forms (``register_policy_loss`` fills both).
TOKEN_LOSSES = Registry("per-token policy loss")
POLICY_LOSSES = Registry("policy loss")

for _name in ("token_reward_direct", "grpo", "token_reward_direct_plus_grpo"):
    ADV_ESTIMATORS.register_lazy(_name, f"opd.objectives.advantages:{_name}")
TOKEN_LOSSES.register_lazy("vanilla", "opd.objectives.losses:vanilla_token_loss")
POLICY_LOSSES.register_lazy("vanilla", "opd.objectives.losses:vanilla_policy_loss")
