"""Balancing methods by name, with their hyperparameters and defaults."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from models.balancing._base import Balancer

__all__ = [
    "create",
    "defaults",
    "list_methods",
    "needs_gradients",
    "paper",
    "reads",
    "register_balancer",
]

_METHODS: dict[str, type[Balancer]] = {}

B = TypeVar("B", bound=type[Balancer])


def register_balancer(name: str) -> Callable[[B], B]:
    def register(cls: B) -> B:
        if name in _METHODS:
            raise ValueError(f"balancing method {name!r} is already registered")
        _METHODS[name] = cls
        return cls

    return register


def list_methods() -> list[str]:
    return sorted(_METHODS)


def _method(name: str) -> type[Balancer]:
    if name not in _METHODS:
        raise KeyError(f"unknown balancing method {name!r}; expected one of {list_methods()}")
    return _METHODS[name]


def defaults(name: str) -> dict[str, Any]:
    """The method's hyperparameters and their default values."""
    params = inspect.signature(_method(name).__init__).parameters
    return {
        key: p.default
        for key, p in params.items()
        if key not in ("self", "tasks") and p.default is not inspect.Parameter.empty
    }


def paper(name: str) -> str:
    """The reference the method comes from."""
    return _method(name).paper


def needs_gradients(name: str) -> bool:
    """Whether the method reads the Gramian of task gradients."""
    return _method(name).gradients != "none"


def reads(name: str) -> str:
    """What the method reads besides the losses, in words."""
    cls = _method(name)
    needs = {
        "none": "losses",
        "shared": "losses, Gramian",
        "last_shared": "losses, last-layer Gramian",
    }
    return needs[cls.gradients] + (", KPIs" if cls.uses_kpis else "")


def create(name: str, tasks: Sequence[str], **hp: Any) -> Balancer:
    cls = _method(name)
    unknown = sorted(set(hp) - set(defaults(name)))
    if unknown:
        raise TypeError(
            f"balancing method {name!r} has no hyperparameter(s) {unknown}; "
            f"expected some of {sorted(defaults(name))}"
        )
    return cls(tasks, **hp)
