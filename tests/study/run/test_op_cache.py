"""DeepSpeed's op cache: a bounded warm-up, and no child process where the op is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from study.run._op_cache import (
    OP_NAME,
    OpBuildStuck,
    op_is_built,
    prefer_own_ninja,
    stale_lock_hint,
    warm_up,
)


def _ninja(folder: Path) -> None:
    prefer_own_ninja()  # the environment's pinned ninja, as the trials' builds use
    subprocess.run(["ninja", "-C", str(folder)], check=True, capture_output=True)


def _built_op(root: Path) -> Path:
    """A folder ninja builds as torch builds the op: a library linked from a source."""
    folder = root / OP_NAME
    folder.mkdir(parents=True)
    source = folder / "shm.cpp"
    source.write_text("// the op's source\n")
    (folder / "build.ninja").write_text(
        f"rule link\n  command = cp $in $out\nbuild {OP_NAME}.so: link {source}\n"
    )
    _ninja(folder)
    return source


def test_an_op_is_built_when_ninja_has_nothing_to_do(tmp_path: Path) -> None:
    assert not op_is_built(tmp_path)
    source = _built_op(tmp_path)
    assert op_is_built(tmp_path)
    # Newer sources than the library (another DeepSpeed installed in place): a rebuild.
    library = tmp_path / OP_NAME / f"{OP_NAME}.so"
    older = source.stat().st_mtime - 60
    os.utime(library, (older, older))
    assert not op_is_built(tmp_path)
    _ninja(tmp_path / OP_NAME)
    assert op_is_built(tmp_path)
    library.unlink()
    assert not op_is_built(tmp_path)


def test_a_built_op_is_not_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A build would wait behind this lock until the bound; a built op needs no build.
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    _built_op(tmp_path)
    with FileLock(tmp_path / OP_NAME / "lock"):
        warm_up(timeout_s=5)


def test_the_warm_up_module_imports_no_torch() -> None:
    # A Ray task that warms a node unpickles warm_up from this module alone.
    code = "import sys, study.run._op_cache; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_build_that_takes_too_long_stops_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another build holds the op's lock (as torch's own builds do) and never ends: the
    # warm-up's build waits behind it, compiling nothing, until the bound.
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
