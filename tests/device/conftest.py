"""A stand-in accelerator for machines without one: tensors that say they live on ``meta``
but hold real CPU values, and keep an accelerator's rules.

- An op mixing such a tensor with a CPU tensor of one or more dimensions fails, as CUDA
  does (a CPU scalar is allowed, as on CUDA, except in ``cat``/``stack``).
- ``.to(device)``, ``device=`` on a factory and ``new_*`` land on the stand-in device;
  ``.cpu()`` gives a plain CPU tensor; ``.numpy()`` fails, as on CUDA.
- Values are real, so data-dependent code (``.item()``, the QP solvers, ``if x.any()``)
  runs as it would on a GPU, and autograd and optimisers work through it.
- Every factory call (``torch.zeros``, ``torch.tensor``, …) made by the project's code
  without ``device=`` while the stand-in is active is recorded as a stray: on a GPU it
  would make a CPU tensor.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

#: The device the stand-in tensors report; autograd runs ``meta`` work on its CPU thread.
DEVICE = torch.device("meta")
_CPU = torch.device("cpu")
_REPO = Path(__file__).resolve().parents[2]
_PROJECT = tuple(str(_REPO / d) for d in ("models", "study"))

_aten = torch.ops.aten
#: Ops that take tensors of several devices by design (copies; CPU indices into a GPU tensor).
_CROSS_DEVICE = {_aten._to_copy.default, _aten.copy_.default, _aten._local_scalar_dense.default}
_INDEXING = {
    _aten.index.Tensor,
    _aten.index_put.default,
    _aten.index_put_.default,
    _aten._index_put_impl_.default,
}
#: Ops where even a CPU scalar tensor may not join an accelerator tensor.
_STRICT = {_aten.cat.default, _aten.stack.default}
_FACTORIES: set[Callable[..., Any]] = {
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.tensor,
    torch.as_tensor,
    torch.arange,
    torch.linspace,
    torch.eye,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
}


class OnDevice(torch.Tensor):
    """A tensor on :data:`DEVICE` whose values are the CPU tensor ``elem``."""

    elem: torch.Tensor
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> OnDevice:
        assert not isinstance(elem, OnDevice) and elem.device == _CPU
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            device=DEVICE,
            requires_grad=elem.requires_grad,
        )
        out.elem = elem
        return out

    def __repr__(self) -> str:  # type: ignore[override]
        return f"OnDevice({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        _check_devices(func, args, kwargs)
        target = kwargs.get("device")
        if func in (_aten._to_copy.default, *_FACTORY_OPS) and target is not None:
            kwargs["device"] = _CPU
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if func is _aten._to_copy.default and target is not None and target.type == "cpu":
            return out
        return tree_map(_wrap, out)


_FACTORY_OPS = (
    _aten.new_zeros.default,
    _aten.new_ones.default,
    _aten.new_empty.default,
    _aten.new_full.default,
    _aten.empty_like.default,
    _aten.zeros_like.default,
    _aten.ones_like.default,
    _aten.full_like.default,
)


def _unwrap(t: Any) -> Any:
    return t.elem if isinstance(t, OnDevice) else t


def _wrap(t: Any) -> Any:
    return OnDevice(t) if isinstance(t, torch.Tensor) and not isinstance(t, OnDevice) else t


def _check_devices(func: Any, args: tuple, kwargs: dict) -> None:
    if func in _CROSS_DEVICE:
        return
    if func in _INDEXING:  # CPU index tensors are allowed on an accelerator
        args = (args[0], *args[2:])
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    plain = [t for t in tensors if not isinstance(t, OnDevice) and (t.dim() > 0 or func in _STRICT)]
    if plain and len(plain) < len(tensors):
        raise RuntimeError(
            f"Expected all tensors to be on the same device, but found at least two devices, "
            f"{DEVICE} and {plain[0].device}! ({func})"
        )


class _Place(torch.autograd.Function):
    """A differentiable move of a CPU tensor onto the stand-in device (and grads back)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return OnDevice(t.detach().clone())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _unwrap(grad)


def _is_target(device: Any) -> bool:
    return device is not None and torch.device(device).type == DEVICE.type


class StandIn(TorchFunctionMode):
    """Routes every placement on :data:`DEVICE` to :class:`OnDevice`; records strays."""

    def __init__(self) -> None:
        super().__init__()
        #: ``"torch.zeros at study/metrics/_meter.py:42"`` for each factory call without device.
        self.strays: list[str] = []
        #: Off while modules are built: their parameters start on the CPU and move with them.
        self.recording = True

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.tolist and isinstance(args[0], OnDevice):
            return args[0].elem.tolist()
        if func is torch.where and len(args) == 3:
            # torch.where would turn a number into a tensor on the device, with no value
            # behind it; a CPU scalar tensor is what CUDA takes in its place.
            args = tuple(torch.tensor(a) if isinstance(a, int | float) else a for a in args)
        if func is torch.Tensor.to and not isinstance(args[0], OnDevice):
            device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if _is_target(device):
                return _Place.apply(args[0].to(dtype=dtype or args[0].dtype))
        if func in _FACTORIES:
            if "device" not in kwargs:
                self._record(func)
            elif _is_target(kwargs["device"]):
                grad = kwargs.pop("requires_grad", False)
                kwargs["device"] = _CPU
                return OnDevice(func(*args, **kwargs)).requires_grad_(grad)
        return func(*args, **kwargs)

    def _record(self, func: Callable[..., Any]) -> None:
        if not self.recording:
            return
        # The direct caller only: torch's own helpers pick their devices themselves.
        frame = sys._getframe(2)
        if frame.f_code.co_filename.startswith(_PROJECT):
            where = Path(frame.f_code.co_filename).relative_to(_REPO)
            self.strays.append(f"torch.{func.__name__} at {where}:{frame.f_lineno}")


class StandInDevice:
    """What the tests hold: the device, placing tensors and modules on it, and the mode."""

    device = DEVICE

    def __init__(self) -> None:
        self.mode = StandIn()

    @property
    def strays(self) -> list[str]:
        return self.mode.strays

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the stand-in device (a differentiable move, as ``t.to(device)``)."""
        return _Place.apply(t)

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """Build a model here: ``nn.Module`` parameters are made on the CPU, then moved."""
        self.mode.recording = False
        try:
            yield
        finally:
            self.mode.recording = True

    @contextlib.contextmanager
    def active(self) -> Iterator[StandInDevice]:
        with self.mode:
            yield self


@pytest.fixture
def stand_in() -> Iterator[StandInDevice]:
    """The stand-in device, its mode active for the test; the test fails on any stray."""
    device = StandInDevice()
    with device.active():
        yield device
    assert device.strays == [], "tensors made without device= (CPU on a GPU):\n" + "\n".join(
        device.strays
    )
