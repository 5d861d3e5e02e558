"""Where DeepSpeed's ops are built: one folder per PyTorch installation, by one ninja."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from study.run._engine import (
    OpBuildStuck,
    prefer_own_ninja,
    stale_lock_hint,
    torch_extensions_dir,
    warm_up,
)


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


def test_a_build_that_takes_too_long_stops_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another build holds the op's lock (as torch's own builds do) and never ends: the
    # warm-up's build waits behind it, compiling nothing, until the bound.
    from filelock import FileLock

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    (tmp_path / "deepspeed_shm_comm").mkdir()
    with FileLock(tmp_path / "deepspeed_shm_comm" / "lock"):
        with pytest.raises(OpBuildStuck, match=r"^DeepSpeed's op did not build within 5 s on \S+"):
            warm_up(timeout_s=5)


def test_lock_files_are_named_where_they_block_builds(tmp_path: Path) -> None:
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    assert stale_lock_hint(tmp_path, lock_files_block=True) == ""
    lock.touch()
    assert stale_lock_hint(tmp_path, lock_files_block=True) == (
        f"; if no build is running there, remove the lock {lock}"
    )
    # PyTorch's kernel-held lock leaves its file behind harmlessly: nothing to say.
    assert stale_lock_hint(tmp_path, lock_files_block=False) == ""
