"""DeepSpeed for one trial: a process group, a stable extension cache, and the engine."""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "build_engine",
    "deepspeed_config",
    "ensure_distributed",
    "side_backward",
    "torch_extensions_dir",
    "warm_up",
]


def torch_extensions_dir() -> Path:
    """Where DeepSpeed's JIT-compiled ops live: one stable folder per machine and user."""
    default = Path.home() / ".cache" / "mtlstudy" / "torch_extensions"
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR", default))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_JOINED = False


def ensure_distributed(launched: bool = False) -> None:
    """Join a process group once per process (gloo on CPU); DeepSpeed otherwise wants MPI.

    A single-process trial makes its own rendezvous on a free port: variables inherited
    from the driver (Ray workers inherit its environment) could name a port in use.
    ``launched`` keeps the variables a multi-worker launcher has set; a group that is
    already up (Ray Train's) is joined as it is.
    """
    global _JOINED
    if _JOINED:
        return
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    launched = launched or (torch.distributed.is_available() and torch.distributed.is_initialized())
    if not launched:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            LOCAL_SIZE="1",
        )
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(backend, verbose=False)  # reuses a torch group that is up
    _JOINED = True
    buffer = _shm_buffer()
    # DeepSpeed's CPU all-reduce maps a 64 MB /dev/shm file per process and never removes
    # it; a study of many trials would fill RAM with them. A lone process can unlink its
    # own at once (the mapping lives on); ranks of a launched group open each other's.
    if not launched:
        _unlink(buffer)
    atexit.register(_unlink, buffer)


def _shm_buffer() -> Path:
    env = os.environ
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{env.get('MASTER_ADDR')}_"
    return Path("/dev/shm") / f"{name}{env.get('MASTER_PORT')}_{env.get('RANK', '0')}"


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, PermissionError):
        path.unlink()


def warm_up() -> None:
    """Compile DeepSpeed's communication op once, in a child process, before trials start.

    Trials then load it from the cache instead of compiling concurrently.
    """
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(torch_extensions_dir())}
    code = "from study.run import ensure_distributed; ensure_distributed()"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"DeepSpeed warm-up failed: {' '.join(tail)}")


def deepspeed_config(batch_size: int, zero_stage: int, precision: str) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_engine(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    zero_stage: int = 0,
    precision: str = "fp32",
) -> Any:
    """``deepspeed.initialize`` with a torch optimizer, so no fused-Adam op is compiled."""
    ensure_distributed()
    import deepspeed

    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=deepspeed_config(batch_size, zero_stage, precision),
    )
    if precision == "bf16":
        # DeepSpeed casts parameters only; BatchNorm's running statistics must match them.
        for buffer in engine.module.buffers():
            if buffer.is_floating_point():
                buffer.data = buffer.data.to(torch.bfloat16)
    return engine


@contextlib.contextmanager
def side_backward(outputs: object) -> Iterator[None]:
    """Backward passes through an engine's outputs that are not the engine's backward.

    DeepSpeed hooks the outputs of every forward to open its backward (timers, ZeRO's
    gradient bookkeeping) once; a balancer's task-gradient pass would open it instead
    of ``engine.backward``. Inside this context those hooks stay closed.
    """
    tensors = outputs.values() if isinstance(outputs, dict) else outputs
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)  # type: ignore[arg-type]
    managers = [m for t in tensors for m in getattr(t, "_backward_hook_managers", [])]
    opened = [m.preprocess_done for m in managers]
    for manager in managers:
        manager.preprocess_done = True
    try:
        yield
    finally:
        for manager, was in zip(managers, opened, strict=True):
            manager.preprocess_done = was
