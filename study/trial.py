"""One trial: data, model, balancer and DeepSpeed engine, trained epoch by epoch.

:class:`TrialRunner` holds the loop and its checkpoint; :func:`trial_function` is the
Ray Tune function trainable that drives it, reporting once per epoch with a checkpoint.
"""

from __future__ import annotations

import functools
import platform
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from models import Task, balancing, count_gflops, count_parameters, create_model, get_task
from study.engine import build_engine, side_backward
from study.metrics import MultiTaskMeter, delta_m
from study.spec import StudySpec
from study.splits import trial_splits

__all__ = ["TrialRunner", "TrialSetup", "trial_function"]

TrialKind = Literal["multi_task", "single_task"]
_STATE_FILE = "trial_state.pt"
_ENGINE_TAG = "engine"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one phase of a study shares; the sampled config comes apart."""

    spec: StudySpec
    tasks: tuple[str, ...]
    kind: TrialKind = "multi_task"
    references: Mapping[str, Mapping[str, float]] | None = field(default=None)
    baseline_trials: Mapping[str, str] | None = field(default=None)
    potentials: Mapping[str, float] | None = field(default=None)

    def tasks_for(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """A single-task trial trains the one task its config names."""
        return (config["task"],) if self.kind == "single_task" else self.tasks

    def task_records(self, config: Mapping[str, Any]) -> dict[str, Task]:
        """The task records of the tasks this config trains, in order."""
        classes = self.spec.dataset.num_classes
        return {name: get_task(name, classes) for name in self.tasks_for(config)}


class TrialRunner:
    """Trains one configuration; ``run_epoch`` returns the flat metrics Tune receives."""

    def __init__(self, setup: TrialSetup, config: Mapping[str, Any]) -> None:
        spec = setup.spec
        self.setup = setup
        self.config = dict(config)
        self.tasks = setup.task_records(config)
        names = tuple(self.tasks)
        self.train, self.val = trial_splits(spec.dataset, spec.seed, names)

        torch.manual_seed(spec.seed)
        model_kw = {**spec.model, **self.config.get("model", {})}
        self.model = create_model(
            spec.architecture, names, num_classes=spec.dataset.num_classes, **model_kw
        )
        self.gflops = count_gflops(self.model, spec.dataset.image_size)
        # The compute a multi-task model saves: its GFLOPs against one model per task.
        self.single_task_gflops = sum(
            _single_task_gflops(
                spec.architecture,
                name,
                spec.dataset.num_classes,
                spec.dataset.image_size,
                tuple(sorted(model_kw.items())),
            )
            for name in names
        )
        self.params = count_parameters(self.model)
        self.balancer = _create_balancer(setup, self.config, names)
        optim = self.config.get("optim", {})
        optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=float(optim.get("lr", 1e-3)),
            weight_decay=float(optim.get("weight_decay", 0.0)),
        )
        self.engine = build_engine(
            self.model,
            optimizer,
            spec.batch_size,
            spec.deepspeed.zero_stage,
            spec.deepspeed.precision,
        )
        self.task_gramian = None
        if self.balancer.gradients != "none":
            self.task_gramian = balancing.TaskGramian(
                self.engine.module, self.balancer.gradients, spec.gradient_space
            )
        self.epoch = 0
        self.label_counts = torch.zeros(len(self.tasks), dtype=torch.float64)

    def _task_losses(
        self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        return [task.loss(preds[name].float(), targets[name]) for name, task in self.tasks.items()]

    def _losses(
        self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        return torch.stack(self._task_losses(preds, targets))

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(dtype=next(self.engine.module.parameters()).dtype)

    def train_step(self, images: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One optimiser step on one batch; the detached task losses (T,)."""
        preds = self.engine(self._inputs(images))
        task_losses = self._task_losses(preds, targets)
        gramian = None
        if self.task_gramian is not None:
            with side_backward(preds):
                gramian = _all_reduced(self.task_gramian(task_losses))
        losses = torch.stack(task_losses)
        self.engine.backward(self.balancer.combine(losses, gramian))
        self.engine.step()
        self.balancer.step()
        return losses.detach()

    def train_epoch(self) -> torch.Tensor:
        """One pass over the training split; the mean task losses (T,)."""
        self.engine.train()
        total = torch.zeros(len(self.tasks), dtype=torch.float64)
        # Seeded by epoch, so a resumed trial sees the order it would have seen.
        seed = self.setup.spec.seed * 100_003 + self.epoch
        counts = torch.zeros(len(self.tasks), dtype=torch.float64)
        for images, targets, labelled in self.train.batches(self.setup.spec.batch_size, seed):
            losses = self.train_step(images, targets)
            n = self._label_counts(labelled)
            total += losses.double() * n
            counts += n
        self.label_counts = counts
        mean = _mean(total, counts)
        self.balancer.end_epoch(mean)
        return mean

    def _label_counts(self, labelled: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.tensor([float(labelled[t].sum()) for t in self.tasks], dtype=torch.float64)

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
        """Validation metrics per task, and the mean validation task losses (T,)."""
        self.engine.eval()
        meter = MultiTaskMeter(self.tasks)
        total = torch.zeros(len(self.tasks), dtype=torch.float64)
        counts = torch.zeros(len(self.tasks), dtype=torch.float64)
        for images, targets, labelled in self.val.batches(self.setup.spec.batch_size, None):
            preds = {k: v.float() for k, v in self.engine(self._inputs(images)).items()}
            meter.update(preds, targets, labelled)
            n = self._label_counts(labelled)
            total += self._losses(preds, targets).double() * n
            counts += n
        meter.all_reduce()
        return meter.compute(), _mean(total, counts)

    def run_epoch(self) -> dict[str, Any]:
        started = time.perf_counter()
        train_losses = self.train_epoch()
        metrics, val_losses = self.evaluate()
        if self.balancer.uses_kpis:
            self.balancer.update_kpis({n: metrics[n][t.kpi] for n, t in self.tasks.items()})
        self.epoch += 1
        report: dict[str, Any] = {
            "epoch": self.epoch,
            "val_loss": float(val_losses.nansum()),
            "gflops": self.gflops,
            "gflops_single_task_sum": self.single_task_gflops,
            "gflops_ratio": self.gflops / self.single_task_gflops,
            "params": self.params,
            "epoch_time_s": time.perf_counter() - started,
            "node": platform.node(),
        }
        for i, name in enumerate(self.tasks):
            report[f"train_loss/{name}"] = float(train_losses[i])
            report[f"val_loss/{name}"] = float(val_losses[i])
            report[f"weight/{name}"] = float(self.balancer.last_weights[i])
            report[f"labels/{name}"] = int(self.label_counts[i])
            for metric, value in metrics[name].items():
                report[f"{name}/{metric}"] = value
        if self.setup.references is not None:
            report["delta_m"] = delta_m(metrics, self.setup.references, self.tasks)
        return report

    def save(self, directory: str | Path) -> None:
        self.engine.save_checkpoint(str(directory), tag=_ENGINE_TAG)
        state = {"epoch": self.epoch, "balancer": self.balancer.state_dict()}
        torch.save(state, Path(directory) / _STATE_FILE)

    def restore(self, directory: str | Path) -> None:
        self.engine.load_checkpoint(str(directory), tag=_ENGINE_TAG)
        state = torch.load(Path(directory) / _STATE_FILE, weights_only=False)
        self.epoch = int(state["epoch"])
        self.balancer.load_state_dict(state["balancer"])


@functools.lru_cache(maxsize=32)
def _single_task_gflops(
    architecture: str,
    task: str,
    num_classes: int,
    image_size: int,
    model_kw: tuple[tuple[str, Any], ...],
) -> float:
    model = create_model(architecture, (task,), num_classes=num_classes, **dict(model_kw))
    return count_gflops(model, image_size)


def _mean(total: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    # A task no sample was labelled for has no mean loss, rather than a mean of 0.
    return torch.where(counts > 0, total / counts.clamp_min(1), torch.nan)


def _create_balancer(
    setup: TrialSetup, config: Mapping[str, Any], tasks: tuple[str, ...]
) -> balancing.Balancer:
    method = config.get("method", "ew")
    hp = dict(config.get(method, {}))
    if "potentials" in balancing.defaults(method):
        hp["potentials"] = setup.potentials
    balancer = balancing.create(method, tasks, **hp)
    balancer.generator.manual_seed(setup.spec.seed)
    return balancer


def _all_reduced(gramian: torch.Tensor) -> torch.Tensor:
    # Every rank must weigh the tasks alike: the mean of the per-rank Gramians.
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(gramian)
        gramian /= dist.get_world_size()
    return gramian


def trial_function(config: dict[str, Any], setup: TrialSetup) -> None:
    """The Ray Tune function trainable: resume if Tune holds a checkpoint, then train."""
    from ray import tune

    torch.set_num_threads(max(1, int(setup.spec.cpus_per_trial)))
    runner = TrialRunner(setup, config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            runner.restore(directory)
    while runner.epoch < setup.spec.epochs:
        report = runner.run_epoch()
        with tempfile.TemporaryDirectory() as directory:
            runner.save(directory)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))
