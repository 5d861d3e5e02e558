"""DeepSpeed's op cache, without importing torch: where the compiled op lives, whether
it is built, and the bounded warm-up that builds it once per machine before trials start.

A Ray task that warms a node imports this module only, so a node whose op is built
answers in the time a worker takes to start.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from study.errors import UserError

__all__ = [
    "OP_NAME",
    "WARM_UP_TIMEOUT_S",
    "OpBuildStuck",
    "op_is_built",
    "prefer_own_ninja",
    "stale_lock_hint",
    "torch_extensions_dir",
    "warm_up",
]

#: The one op a trial loads: DeepSpeed's shared-memory collectives on the CPU.
OP_NAME = "deepspeed_shm_comm"


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


def op_is_built(directory: Path) -> bool:
    """Whether the op's library is in ``directory`` and ninja has nothing to rebuild (the
    sources it was built from are unchanged). A build made under other flags passes this
    check; the trial that loads it then rebuilds it under torch's lock."""
    folder = directory / OP_NAME
    prefer_own_ninja()
    ninja = shutil.which("ninja")
    if ninja is None or not (folder / f"{OP_NAME}.so").exists():
        return False
    done = subprocess.run(
        [ninja, "-C", str(folder), "-n"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "no work to do" in done.stdout


#: How long an op's build may take on one node: a minute or two, many more on a loaded
#: machine.
WARM_UP_TIMEOUT_S = 1800.0


class OpBuildStuck(UserError):
    """DeepSpeed's op did not build in time on a node."""


def warm_up(timeout_s: float = WARM_UP_TIMEOUT_S) -> None:
    """Compile DeepSpeed's communication op once, in a child process, before trials start.

    Trials then load it from the cache instead of compiling concurrently. The wait is
    bounded: older PyTorch releases wait for ever on a build's lock file, which a build
    killed mid-way leaves behind. An op ninja finds up to date costs no child process
    (importing torch and DeepSpeed there takes seconds).
    """
    directory = torch_extensions_dir()
    if op_is_built(directory):
        return
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(directory)}
    code = "from study.run import ensure_distributed; ensure_distributed()"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise OpBuildStuck(
            f"DeepSpeed's op did not build within {timeout_s:.0f} s on "
            f"{socket.gethostname()}{stale_lock_hint(directory)}"
        ) from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"DeepSpeed warm-up failed: {' '.join(tail)}")


def stale_lock_hint(directory: Path, lock_files_block: bool | None = None) -> str:
    """Where this PyTorch's build waits on a lock file's mere existence (its ``FileBaton``,
    before the kernel-held lock of later releases), the lock files under ``directory``
    that a killed build may have left; otherwise nothing."""
    if lock_files_block is None:
        import torch.utils.cpp_extension as extension

        lock_files_block = hasattr(extension, "FileBaton")
    locks = sorted(str(lock) for lock in directory.glob("*/lock"))
    if not lock_files_block or not locks:
        return ""
    return f"; if no build is running there, remove the lock {', '.join(locks)}"
