"""One trial's training step through the real trial machinery (DeepSpeed engine, balancer)
against the same model, losses and optimiser in a plain PyTorch loop."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from models import InitialisedFromData, count_gflops, create_model, get_task
from study.bench.balancers import _runner
from study.data import SYNTHETIC_TASKS
from study.spec import DatasetSpec, DeepSpeedSpec, StudySpec

__all__ = ["PEAK_TFLOPS", "format_table", "measure_step", "peak_tflops"]

#: Dense bf16 tensor-core peaks (TFLOP/s) by a substring of the device's name; the first
#: match wins, so the PCIe H100 comes before the SXM one.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
)

#: Timed steps per block; the two loops alternate block by block so drift in the
#: machine's speed hits both alike.
_BLOCK = 5


def peak_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak, or None for a device not in :data:`PEAK_TFLOPS`."""
    for key, peak in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(
    architecture: str = "hard_sharing",
    method: str = "ew",
    batch_size: int = 8,
    image_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    precision: str | None = None,
    num_tasks: int = 3,
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Images per second of a trial's step and of the plain loop's, on the GPU when one is
    visible; ``precision`` defaults to bf16 there and fp32 on the CPU."""
    cuda = torch.cuda.is_available()
    precision = precision or ("bf16" if cuda else "fp32")
    if precision == "fp16" and not cuda:
        raise ValueError("--precision fp16 needs a GPU (DeepSpeed's fp16 runs on none here)")
    tasks = list(SYNTHETIC_TASKS[:num_tasks])
    spec = StudySpec(
        name="bench-step",
        tasks=tasks,
        architecture=architecture,
        model=dict(model or {}),
        dataset=DatasetSpec(image_size=image_size, train_samples=batch_size, val_samples=1),
        batch_size=batch_size,
        deepspeed=DeepSpeedSpec(precision=precision),
        gpus_per_worker=1 if cuda else 0,
    )
    potentials = {t: 0.8 for t in tasks}
    runner = _runner(spec, method, "params", potentials)
    device = next(runner.engine.module.parameters()).device
    # Both loops step on one batch already on the device: the step is timed, not the copy.
    images = runner.train.images[:batch_size].to(device)
    targets = {k: v[:batch_size].to(device) for k, v in runner.train.targets.items()}

    torch.manual_seed(runner.seed)
    plain = create_model(
        runner.architecture, tasks, num_classes=spec.dataset.num_classes, **runner.model_kw
    )
    if isinstance(plain, InitialisedFromData):
        plain.initialise_from_data(runner.train.images[:batch_size])
    # Forward FLOPs on the CPU, before the move: count_gflops feeds a CPU image.
    gflops = count_gflops(plain, image_size, tasks=tasks)
    plain.to(device).train()
    records = {t: get_task(t, spec.dataset.num_classes) for t in tasks}
    optimizer = torch.optim.AdamW(
        [p for p in plain.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0
    )
    # The plain loop's mixed precision is torch's AMP: autocast, and for fp16 its own
    # dynamic loss scaling (GradScaler), as DeepSpeed's fp16 has.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def plain_step() -> None:
        with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
            preds = plain(images)
        # Equal weights: ew's combination, without a balancer.
        loss = torch.stack([r.loss(preds[t].float(), targets[t]) for t, r in records.items()])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss.sum()).backward()
        scaler.step(optimizer)
        scaler.update()

    def trial_step() -> None:
        runner.train_step(images, targets)

    runner.engine.train()
    loops: dict[str, Callable[[], None]] = {"trial": trial_step, "plain": plain_step}
    for step in loops.values():
        for _ in range(warmup):
            step()
    _sync(device)
    seconds = dict.fromkeys(loops, 0.0)
    done = 0
    while done < steps:
        block = min(_BLOCK, steps - done)
        for key, step in loops.items():
            started = time.perf_counter()
            for _ in range(block):
                step()
            _sync(device)
            seconds[key] += time.perf_counter() - started
        done += block

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(name) if device.type == "cuda" else None
    trial_ips = steps * batch_size / seconds["trial"]
    plain_ips = steps * batch_size / seconds["plain"]
    # Training ≈ forward + backward (twice the forward's FLOPs); a gradient balancer's
    # extra task-gradient passes are not counted, so its MFU reads low.
    train_tflop = 3 * gflops / 1e3

    def mfu(ips: float) -> float | None:
        return None if peak is None else round(ips * train_tflop / peak, 4)

    return {
        "device": name,
        "machine": f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} threads",
        "architecture": runner.architecture,
        "method": method,
        "tasks": tasks,
        "precision": precision,
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": steps,
        "warmup": warmup,
        "step_ms": round(1e3 * seconds["trial"] / steps, 3),
        "plain_step_ms": round(1e3 * seconds["plain"] / steps, 3),
        "images_per_s": round(trial_ips, 2),
        "plain_images_per_s": round(plain_ips, 2),
        "ratio": round(seconds["plain"] / seconds["trial"], 4),
        "forward_gflops_per_image": round(gflops, 4),
        "tflops_per_s": round(trial_ips * train_tflop, 4),
        "peak_tflops": peak,
        "mfu": mfu(trial_ips),
        "plain_mfu": mfu(plain_ips),
    }


def format_table(figures: dict[str, Any]) -> str:
    """The trial's step and the plain loop's, side by side."""
    head = (
        f"{figures['device']} · {figures['architecture']} · {figures['method']} · "
        f"{figures['precision']} · batch {figures['batch_size']} · "
        f"{figures['image_size']}px · {figures['steps']} steps"
    )

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    lines = [
        head,
        f"{'loop':8s}{'ms/step':>10s}{'images/s':>11s}{'MFU':>8s}",
        f"{'trial':8s}{figures['step_ms']:10.1f}{figures['images_per_s']:11.1f}"
        f"{pct(figures['mfu']):>8s}",
        f"{'plain':8s}{figures['plain_step_ms']:10.1f}{figures['plain_images_per_s']:11.1f}"
        f"{pct(figures['plain_mfu']):>8s}",
        f"ratio (plain time ÷ trial time): {figures['ratio']:.3f}",
    ]
    return "\n".join(lines)
