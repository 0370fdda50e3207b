"""A tiny name -> function registry used for advantage estimators and policy losses.

    >>> REG = Registry("advantage estimator")
    >>> @REG.register("mine")
    ... def mine(*args): ...
    >>> REG.get("mine") is mine
    True

Registering a name twice, or asking for a name that was never registered, raises
``ValueError``; the latter message lists the valid names.
"""
from __future__ import annotations

from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


class Registry:
    """Maps string names to callables.

    Args:
        kind: human readable description used in error messages ("policy loss", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, Callable] = {}

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

    def get(self, name: str) -> Callable:
        """The callable registered as ``name``; ``ValueError`` listing valid names otherwise."""
        try:
            return self._fns[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._fns)

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
