"""DeepSpeed for one trial: a process group, a stable extension cache, and the engine."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from study.run._op_cache import prefer_own_ninja, torch_extensions_dir

__all__ = [
    "CPU_FALLBACK",
    "FP16_LOSS_SCALING",
    "all_reduced",
    "backward",
    "build_engine",
    "deepspeed_config",
    "ensure_distributed",
    "granted_gpus",
    "labelled_mean",
    "loss_scale",
    "process_group_backend",
    "reduction_device",
    "side_backward",
    "trial_device",
]

#: Set to 1, for tests only: a trial Ray granted a GPU that sees no CUDA trains on the
#: CPU (Ray can declare GPUs a machine does not have) instead of failing.
CPU_FALLBACK = "MTLSTUDY_ALLOW_CPU_FALLBACK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def granted_gpus() -> list[str] | None:
    """The ids of the GPUs Ray granted this process; None outside a Ray worker."""
    import ray

    if not ray.is_initialized():
        return None
    return [str(gpu) for gpu in ray.get_gpu_ids()]


def trial_device() -> torch.device:
    """The device this trial's process trains on: the GPU Ray granted it (``cuda:0`` in a
    Tune trial, ``cuda:<local rank>`` in a Ray Train worker), else the CPU.

    Outside a Ray worker any visible GPU counts as granted. A granted GPU that CUDA does
    not see fails, unless :data:`CPU_FALLBACK` is set.
    """
    granted = granted_gpus()
    if granted is None:
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if not granted:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", _visible_index(granted[0]))
    if os.environ.get(CPU_FALLBACK) == "1":
        return torch.device("cpu")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise RuntimeError(
        f"Ray granted this trial GPU {','.join(granted)} but CUDA sees no device "
        f"(CUDA_VISIBLE_DEVICES={visible!r}, torch {torch.__version__}, built for CUDA "
        f"{torch.version.cuda}); check the node's driver, or set {CPU_FALLBACK}=1 in tests"
    )


def _visible_index(gpu: str) -> int:
    """A granted GPU's index among the visible ones, as ``ray.train.torch.get_device``
    finds it (which Ray Train V2 allows only in its workers): 0 in a Tune trial, which
    sees only its own; in Ray Train, the worker's local rank among its node's GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:  # Ray told not to set it: ids are the machine's indices
        return int(gpu)
    ids = visible.split(",")
    if gpu not in ids:
        raise RuntimeError(f"Ray granted GPU {gpu}, not in CUDA_VISIBLE_DEVICES={visible!r}")
    return ids.index(gpu)


def process_group_backend(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


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
    prefer_own_ninja()
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
    device = trial_device()
    if device.type == "cuda":
        # NCCL's collectives, and reduction_device, use the current CUDA device.
        torch.cuda.set_device(device)
    if device.type == "cpu":
        # Ray leaves the GPUs visible to a trial it granted none; DeepSpeed would take one.
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    _skip_inference_collective()
    # A group that is up keeps its backend (Ray Train chose it from the same device).
    deepspeed.init_distributed(process_group_backend(device), verbose=False)
    _JOINED = True


def _skip_inference_collective() -> None:
    """Keep DeepSpeed from loading its CPU shared-memory all-reduce op.

    That op serves only ``inference_all_reduce`` (tensor-parallel inference); training's
    collectives go through ``torch.distributed`` (gloo). Loading it cost a C++ build on
    each machine (minutes on a loaded node, repeated wherever nodes shared a cache) and a
    64 MB /dev/shm buffer per process, which a killed process left behind.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


#: DeepSpeed's dynamic loss scaling for fp16: start at 2**16, halve on an overflowing
#: step (after ``hysteresis`` of them in a row) and skip it, double after ``loss_scale_window``
#: clean steps, never below ``min_loss_scale``.
FP16_LOSS_SCALING: dict[str, Any] = {
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}

#: The floating types each precision trains the model in.
_LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def deepspeed_config(
    batch_size: int, zero_stage: int, precision: str, gradient_clip: float | None = None
) -> dict[str, Any]:
    """The engine's configuration. ``gradient_clip`` bounds the gradients' global norm
    where DeepSpeed holds them, at every ZeRO stage (after fp16's unscaling)."""
    if precision not in ("fp32", *_LOW_PRECISION):
        raise ValueError(f"unknown precision {precision!r}; expected fp32, bf16 or fp16")
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": zero_stage},
        # ZeRO takes any torch optimizer (SGD too): it only partitions its state.
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": float(gradient_clip or 0.0),
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", **FP16_LOSS_SCALING},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_engine(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    zero_stage: int = 0,
    precision: str = "fp32",
    gradient_clip: float | None = None,
    channels_last: bool = False,
) -> Any:
    """``deepspeed.initialize`` with a torch optimizer, so no fused-Adam op is compiled.

    ``channels_last`` puts the convolutions' weights channels-last where DeepSpeed left
    each parameter its own memory (fp32 or fp16 without ZeRO); where it holds them as
    views of one flat buffer (ZeRO, bf16) they stay as they are, and channels-last
    inputs alone choose channels-last convolutions.
    """
    ensure_distributed()
    import deepspeed

    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=deepspeed_config(batch_size, zero_stage, precision, gradient_clip),
    )
    low = _LOW_PRECISION.get(precision)
    if low is not None:
        # DeepSpeed casts parameters only; BatchNorm's running statistics must match them.
        for buffer in engine.module.buffers():
            if buffer.is_floating_point():
                buffer.data = buffer.data.to(low)
    if channels_last and _own_storages(engine.module):
        # After initialize: DeepSpeed's broadcast of the weights takes contiguous ones.
        engine.module.to(memory_format=torch.channels_last)
    if zero_stage == 0 and torch.distributed.get_world_size() == 1:
        # One process holds every gradient already: the all-reduce would only copy them.
        # (ZeRO's optimisers move gradients into their partitions on that path: kept.)
        engine.enable_backward_allreduce = False
    return engine


def _own_storages(module: nn.Module) -> bool:
    """Whether no two parameters share memory (DeepSpeed flattened none of them)."""
    pointers = [p.untyped_storage().data_ptr() for p in module.parameters()]
    return len(set(pointers)) == len(pointers)


def loss_scale(engine: Any) -> float:
    """The factor ``engine.backward`` multiplies the loss by now: fp16's dynamic loss
    scale, 1 in fp32 and bf16."""
    if not engine.fp16_enabled():
        return 1.0
    return float(engine.optimizer.loss_scale)


def backward(engine: Any, loss: torch.Tensor) -> None:
    """``engine.backward(loss)`` with fp16's loss scale applied wherever DeepSpeed leaves it out.

    Without ZeRO, DeepSpeed's fp16 optimiser divides the gradients by the loss scale at its
    step, but ``engine.backward`` never multiplied the loss by it (deepspeedai/DeepSpeed#8393):
    updates came out 65536 times too small and overflows went unseen. ZeRO's optimisers
    scale the loss themselves.
    """
    engine.backward(loss * _scale_left_out(engine))


def _scale_left_out(engine: Any) -> float:
    if not engine.fp16_enabled():
        return 1.0
    from deepspeed.runtime.base_optimizer import ZeROOptimizer

    if isinstance(engine.optimizer, ZeROOptimizer) or getattr(
        engine, "torch_autocast_z0_gradscaler", None
    ):
        return 1.0
    return loss_scale(engine)


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


def reduction_device(backend: str, device: torch.device) -> torch.device:
    """Where a collective of ``backend`` can reduce a tensor that lives on ``device``:
    NCCL on this process's GPU only (it refuses CPU tensors), gloo where it is."""
    if backend == "nccl" and device.type != "cuda":
        return torch.device("cuda")  # the current one: the trial's (ensure_distributed)
    return device


def all_reduced(total: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """The sum (or mean) over a trial's workers, on ``total``'s device; the tensor itself
    with one worker. The reduction runs on the process group's device (a GPU for NCCL)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = reduction_device(dist.get_backend(), total.device)
        reduced = total.to(device, copy=True)
        dist.all_reduce(reduced)
        if mean:
            reduced /= dist.get_world_size()
        total = reduced.to(total.device)
    return total


def labelled_mean(total: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per task, ``total / counts``; NaN for a task no sample was labelled for (not 0)."""
    return torch.where(counts > 0, total / counts.clamp_min(1), torch.nan)
