"""A timm-style registry: ``@register_model`` a factory, ``create_model`` by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

#: The architectures shipped with the package, registered on first use: importing
#: :mod:`models` for its tasks or balancers does not import timm and torchvision.
_BUILTIN_MODULES = ("models.hard_sharing", "models.rcm", "models.vit_sharing", "models.vmm")


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Register ``fn(tasks, **kw) -> nn.Module`` under its function name."""
    if not fn.__module__.startswith(_BUILTIN_MODULES):
        _load_builtins()  # a plugin's name then clashes here, not when a built-in loads
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    _load_builtins()
    return sorted(_MODELS)


def create_model(name: str, tasks: Sequence[str], **kwargs: Any) -> nn.Module:
    """Build the registered architecture ``name`` for ``tasks``.

    The model's ``forward(x)`` returns ``{task: prediction}``.
    """
    _load_builtins()
    if name not in _MODELS:
        raise KeyError(f"unknown architecture {name!r}; expected one of {list_models()}")
    return _MODELS[name](tasks, **kwargs)
