"""The stand-in device catches what a GPU would: mixed devices and tensors made on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

_REPO = Path(__file__).resolve().parents[2]


def test_a_cpu_tensor_joining_a_device_tensor_fails(stand_in: Any) -> None:
    x = stand_in.put(torch.ones(3))
    with pytest.raises(RuntimeError, match="same device"):
        x + torch.ones(3)
    with pytest.raises(RuntimeError, match="same device"):
        torch.stack([x.sum(), torch.tensor(1.0)])
    # As on CUDA: a CPU scalar may join, and copies cross devices.
    assert (x * torch.tensor(2.0)).device == stand_in.device
    assert float((x + x.cpu().to(stand_in.device)).sum()) == 6.0
    with pytest.raises(RuntimeError, match="numpy"):  # as CUDA refuses it
        x.numpy()


def test_a_factory_without_device_in_project_code_is_a_stray(stand_in: Any) -> None:
    stray = compile("torch.zeros(2)", str(_REPO / "models" / "made_here.py"), "exec")
    placed = compile("torch.zeros(2, device=d)", str(_REPO / "study" / "made_here.py"), "exec")
    exec(placed, {"torch": torch, "d": stand_in.device})
    assert stand_in.strays == []
    exec(stray, {"torch": torch})
    assert stand_in.strays == ["torch.zeros at models/made_here.py:1"]
    stand_in.strays.clear()  # seen; the fixture would fail the test on it
