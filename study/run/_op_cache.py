"""Where DeepSpeed's JIT-compiled ops (its fused optimisers on a GPU) are built, found
without importing torch: the driver hands the folder to every trial process."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["prefer_own_ninja", "torch_extensions_dir"]


def _torch_folder() -> Path:
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise RuntimeError("torch is not installed")
    return Path(spec.origin).parent


def torch_extensions_dir() -> Path:
    """Where DeepSpeed's JIT-compiled ops live: one stable folder per machine, user and
    PyTorch installation (an op's build names the headers of the PyTorch it compiled
    against, so environments sharing one folder would each recompile it on every switch)."""
    install = hashlib.sha256(str(_torch_folder()).encode()).hexdigest()[:12]
    default = Path.home() / ".cache" / "mtlstudy" / "torch_extensions" / install
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR", default))


def prefer_own_ninja() -> None:
    """Put this environment's ninja (the pinned ``ninja`` package) first on ``PATH``.

    Processes that found different ninjas on their ``PATH`` (the system's, the
    environment's) were seen to rebuild the op each after the other, ninja reporting a
    changed command for an unchanged build file; one ninja per environment builds it once.
    """
    own = Path(sys.executable).parent
    if not (own / "ninja").exists():
        return
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != str(own):
        os.environ["PATH"] = os.pathsep.join([str(own), path]) if path else str(own)
