"""Where DeepSpeed's ops are built: one folder per PyTorch installation, by one ninja."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from study.run._op_cache import prefer_own_ninja, torch_extensions_dir


def test_the_environments_own_ninja_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    own = Path(sys.executable).parent / "ninja"
    if not own.exists():
        pytest.skip(f"this environment installs no ninja of its own at {own}")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    prefer_own_ninja()
    assert shutil.which("ninja") == str(own)
    prefer_own_ninja()  # once is enough: PATH does not grow
    assert shutil.which("ninja") == str(own)
    assert os.environ["PATH"] == f"{own.parent}:/usr/bin:/bin"


def test_the_op_folder_is_keyed_by_the_torch_installation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    folder = torch_extensions_dir()
    assert folder.parent == Path.home() / ".cache" / "mtlstudy" / "torch_extensions"
    assert len(folder.name) == 12
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/tmp/elsewhere")
    assert torch_extensions_dir() == Path("/tmp/elsewhere")
