"""Where DeepSpeed's ops are built: one folder per PyTorch installation, by one ninja."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from study.run._engine import OpBuildStuck, prefer_own_ninja, torch_extensions_dir, warm_up


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


def test_a_build_stuck_behind_a_stale_lock_is_named_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A build killed mid-way leaves torch's lock; torch would wait on it for ever.
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.touch()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with pytest.raises(OpBuildStuck, match=f"within 20 s on .*remove the lock {lock}$"):
        warm_up(timeout_s=20)
    assert lock.exists()  # another build might hold it: the user decides
