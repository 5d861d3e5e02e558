"""Sub-task inference of ``vit_sharing``: the sharing path against a dense merged ViT.

A random-initialised model (no pretrained weights can be fetched here) gets a sub-task
delta ``ΔW`` with a target fraction of non-zeros (values ~ the base weights' std), and each
delta point's threshold is set so that a target fraction of the delta activations is kept
(:meth:`ViTSharing.calibrate_thresholds`).  Timed, interleaved round by round after a
warm-up round (medians):

* ``dense_sub`` – the sub-task as a plain timm ViT with merged weights ``W_base + z⊙ΔW``
  (timm's own ``forward_features``) and its decoder;
* ``shared_sub`` – the sub-task's sparse delta work given the base pass's trace
  (:meth:`ViTSharing.forward_shared` with a prepared plan and trace), decoder included;
* ``dense_both`` / ``shared_both`` – both tasks: two dense ViTs, or the base pass with
  its trace plus the sharing path.

:func:`measure_trained_sharing` times the same paths for a sub-task a staged study
trained, at the sparsity it reached, on its study's validation images.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import create_model
from models.tasks import activate
from models.vit_sharing import LINEARS, ViTSharing, linear_of
from study import store
from study.errors import UserError
from study.run import TrialSetup, trial_splits
from study.spec import SpecError, load_spec
from study.store import read_trial_row

__all__ = ["format_table", "measure_sharing", "measure_trained_sharing"]

_BASE, _SUB = "semseg", "depth"


class _DenseTask(nn.Module):
    """A single-task ViT: a timm encoder (here with merged weights) and one decoder."""

    def __init__(self, model: ViTSharing, task: str, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = model.decoders[task]
        self.grid = model.grid
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder.forward_features(x)
        size = (x.shape[-2], x.shape[-1])
        return activate(self.task, self.decoder(self.grid(features), size))


@torch.no_grad()
def _merged_encoder(model: ViTSharing, task: str) -> nn.Module:
    encoder = copy.deepcopy(model.encoder)
    deltas = model.deltas[task]
    for i, block in enumerate(encoder.blocks):
        for name, delta in deltas.weights(i).items():
            linear_of(block, name).weight.add_(delta)
    return encoder


@torch.no_grad()
def _random_deltas(model: ViTSharing, task: str, density: float, seed: int) -> None:
    """Deltas with a fraction ``density`` of non-zeros, each ~ N(0, std(W_base)²)."""
    generator = torch.Generator().manual_seed(seed)
    for block, gated in zip(model.encoder.blocks, model.deltas[task].blocks, strict=True):
        for name in LINEARS:
            base = linear_of(block, name).weight
            keep = torch.rand(base.shape, generator=generator) < density
            gated[name].delta.copy_(
                torch.randn(base.shape, generator=generator) * keep * base.std()
            )


def measure_sharing(
    backbone: str = "vit_small_patch16_224",
    image_size: int = 224,
    patch_size: int = 16,
    batch_size: int = 1,
    weight_density: float = 0.05,
    activation_density: float = 0.1,
    rounds: int = 10,
    threads: int | None = None,
    depth: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Median times (ms) of the sub-task's inference, sharing against dense, with the
    densities reached, GFLOPs per image and the paths' largest output differences."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = ViTSharing(
        (_BASE, _SUB),
        backbone=backbone,
        image_size=image_size,
        patch_size=patch_size,
        depth=depth,
    ).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    _random_deltas(model, _SUB, weight_density, seed + 2)
    thresholds = model.calibrate_thresholds(_SUB, x[:2], activation_density)
    return {
        "machine": _machine(),
        "config": {
            "backbone": backbone,
            "image_size": image_size,
            "patch_size": patch_size,
            "depth": len(model.encoder.blocks),
            "batch_size": batch_size,
            "rounds": rounds,
            "target_weight_density": weight_density,
            "target_activation_density": activation_density,
        },
        "thresholds": thresholds,
        **_timed(model, _SUB, x, rounds),
    }


def measure_trained_sharing(
    study: store.PathLike,
    trial_id: str,
    batch_size: int = 1,
    rounds: int = 10,
    threads: int | None = None,
) -> dict[str, Any]:
    """:func:`measure_sharing`'s figures for trial ``trial_id`` of a staged ``vit_sharing``
    study (its folder ``<results>/<name>``, local or a URI): the model its sub-task stage
    left, its thresholds, and the first ``batch_size`` validation images of its data."""
    if threads is not None:
        torch.set_num_threads(threads)
    folder = store.readable(study)
    row = _sub_task_row(folder, os.fspath(study), trial_id)
    try:
        spec, _ = load_spec(folder / "spec.yaml")
    except SpecError as err:
        raise UserError(f"study {study}: its spec.yaml does not load: {err}") from None
    sampled = {k.removeprefix("hp.model."): v for k, v in row.items() if k.startswith("hp.model.")}
    architecture, model_kw = TrialSetup(spec, spec.tasks).model_for({"model": sampled})
    model = create_model(architecture, spec.tasks, num_classes=spec.dataset.num_classes, **model_kw)
    assert isinstance(model, ViTSharing)  # _sub_task_row checked the architecture
    with store.local_copy(row["model_path"]) as path:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    _, val = trial_splits(spec.dataset, spec.seed, tuple(spec.tasks))
    x = next(iter(val.batches(batch_size, None)))[0]
    task = row["stage"].rsplit("-", 1)[0]
    return {
        "machine": _machine(),
        "config": {
            "study": os.fspath(study),
            "trial": trial_id,
            "stage": row["stage"],
            "backbone": model_kw.get("backbone"),
            "image_size": x.shape[-1],
            "patch_size": model_kw.get("patch_size"),
            "depth": len(model.encoder.blocks),
            "batch_size": x.shape[0],
            "rounds": rounds,
        },
        "thresholds": dict(model.delta_threshold),
        **_timed(model, task, x, rounds),
    }


def _sub_task_row(folder: Path, location: str, trial_id: str) -> dict[str, Any]:
    """The trial's stored row; ``folder`` is the study ``location`` read locally (a URI's
    mirror is named for the URI, not the study)."""
    if not (folder / "spec.yaml").is_file():
        raise UserError(
            f"study {location}: no spec.yaml; expected a study's folder, <results>/<name>"
        )
    row = read_trial_row(folder.parent, folder.name, trial_id)
    if row is None:
        raise UserError(f"trial {trial_id}: not in study {location}")
    stage = row.get("stage")
    if row.get("architecture") != "vit_sharing" or not stage or stage.endswith("-base"):
        raise UserError(
            f"trial {trial_id}: stage {stage!r} of {row.get('architecture')}; expected a "
            "sub-task stage (gates, masked or delta_act) of a vit_sharing study"
        )
    if not row.get("model_path"):
        raise UserError(f"trial {trial_id}: left no model (status {row.get('status')})")
    return row


def _machine() -> str:
    return f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} threads"


def _timed(model: ViTSharing, sub: str, x: torch.Tensor, rounds: int) -> dict[str, Any]:
    """The four paths' median times (ms), interleaved round by round after a warm-up
    round, with the densities reached, GFLOPs and the paths' largest differences."""
    plan = model.sharing_plan()
    trace = model.base_trace(x)
    dense_sub = _DenseTask(model, sub, _merged_encoder(model, sub)).eval()
    dense_base = _DenseTask(model, model.base_task, model.encoder).eval()
    paths: dict[str, Callable[[], object]] = {
        "dense_sub": lambda: dense_sub(x),
        "shared_sub": lambda: model.forward_shared(x, [sub], plan=plan, trace=trace),
        "dense_both": lambda: (dense_base(x), dense_sub(x)),
        "shared_both": lambda: model.forward_shared(x, [model.base_task, sub], plan=plan),
    }
    times: dict[str, list[float]] = {key: [] for key in paths}
    with torch.no_grad():
        for round_ in range(rounds + 1):
            for key, path in paths.items():
                started = time.perf_counter()
                path()
                if round_ > 0:  # the first round warms caches and allocators
                    times[key].append(time.perf_counter() - started)
        shared = model.forward_shared(x, [sub], plan=plan, trace=trace)[sub]
        plain = model(x, [sub])[sub]
        dense = dense_sub(x)
    ms = {key: 1e3 * statistics.median(t) for key, t in times.items()}
    report = model.compute_report(x)[sub]
    return {
        "sub_task": sub,
        "weight_density": model.delta_weight_density(sub),
        "activation_density": model.delta_activation_density(sub, x),
        "ms": ms,
        "speedup_sub": ms["dense_sub"] / ms["shared_sub"],
        "speedup_both": ms["dense_both"] / ms["shared_both"],
        "gflops_sub_shared": report["gflops"],
        "gflops_sub_dense": report["dense_gflops"],
        "max_abs_diff_vs_plain": float((shared - plain).abs().max()),
        "max_abs_diff_vs_dense": float((shared - dense).abs().max()),
    }


def format_table(result: dict[str, Any]) -> str:
    """The figures as a few aligned lines."""
    config = result["config"]
    densities = result["activation_density"]
    if "trial" in config:
        source = "study {study}, trial {trial} ({stage}), ".format(**config)
        targets = ("", "")
    else:
        source = ""
        targets = (
            f" (target {config['target_weight_density']})",
            f" (target {config['target_activation_density']})",
        )
    lines = [
        result["machine"],
        source
        + "{backbone} {image_size}px patch {patch_size} depth {depth} batch {batch_size}, "
        "{rounds} rounds".format(**config),
        f"ΔW density {result['weight_density']:.4f}{targets[0]}"
        f", δ density {densities['all']:.4f}{targets[1]}",
        "thresholds: " + ", ".join(f"{p} {v:.3g}" for p, v in result["thresholds"].items()),
        "δ density per point: " + ", ".join(f"{p} {v:.3f}" for p, v in densities.items()),
        f"{'path':14s}{'ms':>10s}",
    ]
    lines += [f"{key:14s}{value:10.2f}" for key, value in result["ms"].items()]
    lines += [
        f"sub-task speed-up (dense / shared): {result['speedup_sub']:.2f}×",
        f"both tasks speed-up (dense / shared): {result['speedup_both']:.2f}×",
        f"sub-task GFLOPs/image: shared {result['gflops_sub_shared']:.3f}, "
        f"dense {result['gflops_sub_dense']:.3f}",
        f"max |shared − plain eval forward| {result['max_abs_diff_vs_plain']:.3g}; "
        f"max |shared − dense (no thresholding)| {result['max_abs_diff_vs_dense']:.3g}",
    ]
    return "\n".join(lines)
