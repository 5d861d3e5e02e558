"""Where DeepSpeed's JIT ops are built, and that a trial builds and maps none on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def test_the_module_imports_no_torch() -> None:
    # The driver reads the folder before anything imports torch.
    code = "import sys, study.run._op_cache; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_process_group_on_the_cpu_builds_and_maps_no_op(tmp_path: Path) -> None:
    # DeepSpeed's shared-memory all-reduce serves inference only: no build, no buffer.
    code = (
        "from study.run import ensure_distributed; ensure_distributed(); "
        "import torch.distributed as d; d.all_reduce(__import__('torch').ones(1)); "
        "print(sum('/dev/shm' in line for line in open('/proc/self/maps')))"
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ops")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"
    assert not (tmp_path / "ops").exists() or not any((tmp_path / "ops").iterdir())
