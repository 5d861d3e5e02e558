"""Balancing methods by name: each implementation registered against its catalogue entry."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from models.balancing._base import Balancer
from models.balancing._catalogue import BUILTIN, MethodInfo, _add, defaults, describe

__all__ = ["create", "implementation", "options", "register_balancer", "registered"]

_METHODS: dict[str, type[Balancer]] = {}

#: The modules of the built-in methods, imported on first use: listing the methods or
#: reading one's defaults needs only the catalogue, which imports no torch.
_BUILTIN_MODULES = (
    "models.balancing._loss_weighting",
    "models.balancing._kpi_weighting",
    "models.balancing._gradient_weighting",
    "models.balancing._gradient_recent",
    "models.balancing._jacobian",
)

#: What a built-in method's catalogue entry says and its class must not say again.
_DESCRIBED = ("paper", "gradients", "uses_kpis")


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


B = TypeVar("B", bound=type[Balancer])


def options(cls: type[Balancer]) -> dict[str, Any]:
    """The keyword arguments of ``cls.__init__`` after ``tasks``, with their defaults."""
    params = inspect.signature(cls.__init__).parameters
    return {
        key: p.default
        for key, p in params.items()
        if key not in ("self", "tasks") and p.default is not inspect.Parameter.empty
    }


def register_balancer(name: str) -> Callable[[B], B]:
    """Register a :class:`Balancer` under ``name``.

    A built-in method takes its reference and inputs from its catalogue entry
    (:mod:`models.balancing._catalogue`), and its ``__init__`` defaults must be the
    entry's options. A method of one's own is described by its class's ``paper``,
    ``gradients`` and ``uses_kpis`` and its ``__init__`` defaults.
    """

    def register(cls: B) -> B:
        if cls.__module__ not in _BUILTIN_MODULES:
            _load_builtins()  # a plugin's name then clashes here, not when a built-in loads
        if name in _METHODS:
            raise ValueError(f"balancing method {name!r} is already registered")
        if name in BUILTIN:
            _check_against_catalogue(name, cls)
            info = describe(name)
            cls.paper, cls.gradients, cls.uses_kpis = info.paper, info.gradients, info.uses_kpis
        elif cls.__module__ in _BUILTIN_MODULES:
            raise ValueError(f"built-in balancing method {name!r} has no catalogue entry")
        else:
            _add(name, MethodInfo(cls.paper, cls.gradients, cls.uses_kpis, options(cls)))
        _METHODS[name] = cls
        return cls

    return register


def _check_against_catalogue(name: str, cls: type[Balancer]) -> None:
    restated = [key for key in _DESCRIBED if key in vars(cls)]
    if restated:
        raise TypeError(
            f"{cls.__name__} sets {restated}: the catalogue describes {name!r}, not its class"
        )
    found, declared = options(cls), defaults(name)
    if found != declared:
        raise TypeError(
            f"{cls.__name__}.__init__ takes {found}, but the catalogue gives {name!r} the "
            f"options {declared}"
        )


def registered() -> list[str]:
    """The methods with an implementation: the built-ins and those registered since."""
    _load_builtins()
    return sorted(_METHODS)


def implementation(name: str) -> type[Balancer]:
    _load_builtins()
    if name not in _METHODS:
        raise KeyError(f"unknown balancing method {name!r}; expected one of {registered()}")
    return _METHODS[name]


def create(name: str, tasks: Sequence[str], **hp: Any) -> Balancer:
    cls = implementation(name)
    unknown = sorted(set(hp) - set(defaults(name)))
    if unknown:
        raise TypeError(
            f"balancing method {name!r} has no hyperparameter(s) {unknown}; "
            f"expected some of {sorted(defaults(name))}"
        )
    return cls(tasks, **hp)
