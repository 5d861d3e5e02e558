"""One trial: data, model, balancer and DeepSpeed engine, trained epoch by epoch.

:class:`TrialRunner` holds the loop and its checkpoint; :mod:`study.trainable` drives it
under Ray Tune.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from models import (
    ComputeReport,
    InitialisedFromData,
    OptimizerGroups,
    StagedTraining,
    TemporalPenalty,
    balancing,
    create_model,
)
from study import store
from study.metrics import MultiTaskMeter, delta_m
from study.run._costs import model_costs
from study.run._engine import (
    all_reduced,
    backward,
    build_engine,
    labelled_mean,
    loss_scale,
    trial_device,
)
from study.run._optim import build_optimizer, optimizer_hp, schedule_for, steps_per_epoch
from study.run._precision import (
    balanced_loss,
    balanced_update,
    drop_grads,
    gpu_switches,
    unscaled_grads,
)
from study.run._setup import TrialSetup
from study.run._splits import (
    Batch,
    Split,
    to_device,
    train_with_neighbours,
    trial_splits,
    worker_batches,
)
from study.spec import StageSpec

__all__ = ["TrialRunner"]

_STATE_FILE = "trial_state.pt"
_ENGINE_TAG = "engine"


class TrialRunner:
    """Trains one configuration; ``run_epoch`` returns the flat metrics Tune receives."""

    def __init__(self, setup: TrialSetup, config: Mapping[str, Any]) -> None:
        spec = setup.spec
        self.setup = setup
        self.config = dict(config)
        #: Every task this trial trains, in order; ``tasks`` are those the model has now.
        self.all_tasks = setup.task_records(config)
        names = tuple(self.all_tasks)
        dist = torch.distributed
        grouped = dist.is_available() and dist.is_initialized()
        #: This process's place among a trial's data-parallel workers.
        self.rank = dist.get_rank() if grouped else 0
        self.world = dist.get_world_size() if grouped else 1
        self.train, self.val = trial_splits(
            spec.dataset, spec.seed, names, spec.loader_worker_count
        )

        self.seed = setup.seed_for(config)
        torch.manual_seed(self.seed)
        self.architecture, self.model_kw = setup.model_for(config)
        self.model = create_model(
            self.architecture,
            names[:1] if setup.incremental else names,
            num_classes=spec.dataset.num_classes,
            **self.model_kw,
        )
        if isinstance(self.model, InitialisedFromData):
            # One seeded training batch: RCM's response initialisation takes PCA of it.
            images, _, _ = next(iter(self.train.batches(spec.batch_size, self.seed)))
            self.model.initialise_from_data(images)
        self.balancer = setup.balancer_for(self.config, names)
        self.task_gramian: balancing.TaskGramian | None = None
        self.task_jacobian: balancing.TaskJacobian | None = None
        self.epoch = 0
        #: The epoch of the checkpoint this run went on from (0: it started afresh).
        self.restored_from_epoch = 0
        #: In an incremental trial, the task being trained; ``None`` when all train jointly.
        self.training_task: str | None = None
        #: Each incrementally trained task's KPI when its own training ended.
        self.kpi_when_trained: dict[str, float] = {}
        if setup.incremental:
            self._start_task(names[0])
        elif setup.stage is not None:
            self._start_stage(setup.stage, setup.init_from)
        else:
            self._build_engine()
        if self.balancer.gradients in ("shared", "jacobian"):
            # The task gradients become the update: no second backward.
            self.task_jacobian = balancing.TaskJacobian(self.engine.module, spec.gradient_space)
        elif self.balancer.gradients != "none":
            self.task_gramian = balancing.TaskGramian(
                self.engine.module, self.balancer.gradients, spec.gradient_space
            )

    def _build_engine(self) -> None:
        """A DeepSpeed engine over what trains now; a trained shared bank may ask for its
        own learning rate (``optimizer_groups``)."""
        spec = self.setup.spec
        self.tasks = {name: self.all_tasks[name] for name in self.model.tasks}
        self.label_counts = torch.zeros(len(self.tasks), dtype=torch.float64)
        hp = optimizer_hp(spec.optimizer, self.config.get("optim", {}))
        if isinstance(self.model, OptimizerGroups):
            groups = self.model.optimizer_groups(hp["lr"])
        else:
            groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        optimizer = build_optimizer(groups, spec.optimizer.name, **hp)
        self.channels_last = gpu_switches(spec, self.architecture, trial_device())
        self.engine = build_engine(
            self.model,
            optimizer,
            spec.batch_size,
            spec.deepspeed.zero_stage,
            spec.deepspeed.precision,
            spec.gradient_clip,
            self.channels_last,
        )
        # After DeepSpeed has set up its parameter groups, which the schedule's rates reach.
        epochs = spec.epochs if self.setup.stage is None else spec.stage_epochs(self.setup.stage)
        steps = steps_per_epoch(len(self.train), spec.batch_size, self.world)
        self.schedule = schedule_for(optimizer, spec.schedule, steps, epochs)
        self.costs = model_costs(
            self.model, spec, self.architecture, self.model_kw, tuple(self.tasks)
        )

    def _start_task(self, task: str) -> None:
        """Incremental training: add ``task`` (and any before it) if new, and train it
        alone from now on."""
        names = tuple(self.all_tasks)
        for name in names[: names.index(task) + 1]:
            if name not in self.model.tasks:
                self.model.add_task(name)
        self.model.freeze_except(task)
        self.training_task = task
        self._build_engine()

    def _start_stage(self, stage: StageSpec, init_from: str | None) -> None:
        """A stage of staged training: the model as the previous stage left it, then only
        ``stage.task`` trains (and is evaluated) in ``stage.step``."""
        if init_from is not None:
            with store.local_copy(init_from) as path:
                state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)
        self.model.set_stage(stage.task, stage.step)
        self.training_task = stage.task
        if isinstance(self.model, TemporalPenalty) and self.model.temporal:
            # Only the temporal penalty reads neighbouring frames; no other trial loads them.
            spec = self.setup.spec
            self.train = train_with_neighbours(
                spec.dataset, spec.seed, tuple(self.all_tasks), spec.loader_worker_count
            )
        self._build_engine()
        self.tasks = {stage.task: self.all_tasks[stage.task]}
        self.label_counts = torch.zeros(1, dtype=torch.float64)

    def save_model(self, location: store.PathLike) -> None:
        """The trained weights alone (what the next stage starts from), written whole, to
        a path or a URI."""
        state = self.model.state_dict()
        weights = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        store.write_file(location, lambda tmp: torch.save(weights, tmp))

    def _task_of_epoch(self, epoch: int) -> str:
        names = tuple(self.all_tasks)
        return names[min(epoch // self.setup.spec.epochs, len(names) - 1)]

    def _task_losses(
        self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        return [task.loss(preds[name].float(), targets[name]) for name, task in self.tasks.items()]

    def _losses(
        self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        return torch.stack(self._task_losses(preds, targets))

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.engine.module.parameters())
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        return images.to(param.device, param.dtype, non_blocking=True, memory_format=layout)

    def _device(self) -> torch.device:
        """Where the model lives (the engine's device): batches are moved there."""
        return next(self.engine.module.parameters()).device

    def train_step(
        self,
        images: torch.Tensor,
        targets: Mapping[str, torch.Tensor],
        neighbours: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One optimiser step on one batch; the detached task losses (T,)."""
        if self.training_task is not None:
            return self._train_one_task_step(images, targets, neighbours)
        preds = self.engine(self._inputs(images))
        task_losses = self._task_losses(preds, targets)
        scale = loss_scale(self.engine)  # fp16's; 1 otherwise
        fp16 = self.engine.fp16_enabled()
        if self.task_jacobian is not None:
            total = balanced_update(
                self.balancer, self.task_jacobian, preds, task_losses, scale, fp16
            )
        else:
            total = balanced_loss(self.balancer, self.task_gramian, preds, task_losses, scale, fp16)
        params = self.balancer.parameters()
        with unscaled_grads(params, scale):
            backward(self.engine, total)
        if self._step():
            self.balancer.step()
        else:
            drop_grads(params)
        return torch.stack(task_losses).detach()

    def _train_one_task_step(
        self,
        images: torch.Tensor,
        targets: Mapping[str, torch.Tensor],
        neighbours: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Frozen tasks are neither run nor trained: their losses are NaN, not stale.
        task = self.training_task
        pred = self.engine(self._inputs(images), tasks=(task,))[task]
        loss = self.tasks[task].loss(pred.float(), targets[task])
        total = loss
        if isinstance(self.model, StagedTraining):  # a stage's sparsity penalties
            total = total + self.model.penalty()
        if neighbours is not None:  # video: the frame's activations against its neighbour's
            frames = self._inputs(images), self._inputs(neighbours)
            total = total + self.model.temporal_penalty(*frames)
        backward(self.engine, total)
        self._step()
        losses = loss.new_full((len(self.tasks),), torch.nan)
        losses[list(self.tasks).index(task)] = loss.detach()
        return losses

    def _step(self) -> bool:
        """The optimiser step after a backward (DeepSpeed clips the gradients' norm), then
        the next step's learning rate; False when fp16's overflow made DeepSpeed skip it,
        and the rate stays."""
        self.engine.step()
        if not self.engine.was_step_applied():
            return False
        self.schedule.step()
        return True

    def _weights(self) -> list[float]:
        if self.training_task is None:
            return [float(w) for w in self.balancer.last_weights]
        return [float(name == self.training_task) for name in self.tasks]

    def train_epoch(self) -> torch.Tensor:
        """One pass over the training split; the mean task losses (T,)."""
        self.engine.train()
        total = torch.zeros(len(self.tasks), dtype=torch.float64)
        # Seeded by epoch, so a resumed trial sees the order it would have seen.
        seed = self.seed * 100_003 + self.epoch
        counts = torch.zeros(len(self.tasks), dtype=torch.float64)
        for batch in self._shard(self.train, seed, drop_last=True):
            images, targets, labelled, *frames = to_device(batch, self._device())
            # Epoch sums stay on the CPU: one small copy per step, which the check syncs anyway.
            losses = self.train_step(images, targets, *frames).cpu()
            n = self._label_counts(labelled)
            self._check_finite(losses, n)
            total += losses.double() * n
            counts += n
        total, counts = all_reduced(total), all_reduced(counts)
        self.label_counts = counts
        mean = labelled_mean(total, counts)
        if self.training_task is None:
            self.balancer.end_epoch(mean)
        return mean

    def _shard(self, split: Split, seed: int | None, drop_last: bool) -> Iterator[Batch]:
        return worker_batches(
            split, self.setup.spec.batch_size, seed, self.rank, self.world, drop_last
        )

    def _check_finite(self, losses: torch.Tensor, labels: torch.Tensor) -> None:
        """A diverged trial fails with its reason, rather than training on NaNs."""
        trained = labels > 0
        if self.training_task is not None:  # frozen tasks' losses are NaN by design
            trained &= torch.tensor([name == self.training_task for name in self.tasks])
        diverged = [
            n for n, bad in zip(self.tasks, trained & ~losses.isfinite(), strict=True) if bad
        ]
        if diverged:
            raise FloatingPointError(
                f"non-finite training loss of {diverged} at epoch {self.epoch + 1}; "
                "a lower learning rate may help"
            )

    def _label_counts(self, labelled: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.tensor([float(labelled[t].sum()) for t in self.tasks], dtype=torch.float64)

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
        """Validation metrics per task, and the mean validation task losses (T,)."""
        self.engine.eval()
        meter = MultiTaskMeter(self.tasks, self.setup.metric_options)
        total = torch.zeros(len(self.tasks), dtype=torch.float64)
        counts = torch.zeros(len(self.tasks), dtype=torch.float64)
        for batch in self._shard(self.val, None, drop_last=False):
            images, targets, labelled = to_device(batch, self._device())
            out = self.engine(self._inputs(images), tasks=tuple(self.tasks))
            preds = {k: v.float() for k, v in out.items()}
            meter.update(preds, targets, labelled)
            n = self._label_counts(labelled)
            total += self._losses(preds, targets).double().cpu() * n
            counts += n
        meter.all_reduce()
        return meter.compute(), labelled_mean(all_reduced(total), all_reduced(counts))

    def run_epoch(self) -> dict[str, Any]:
        started = time.perf_counter()
        if self.setup.incremental and self._task_of_epoch(self.epoch) != self.training_task:
            self._start_task(self._task_of_epoch(self.epoch))
        skipped_before = self.engine.skipped_steps  # after a new task's engine, if any
        train_losses = self.train_epoch()
        metrics, val_losses = self.evaluate()
        if self.balancer.uses_kpis:
            self.balancer.update_kpis({n: metrics[n][t.kpi] for n, t in self.tasks.items()})
        self.epoch += 1
        if self.training_task is not None and self.epoch % self.setup.spec.epochs == 0:
            task = self.training_task
            self.kpi_when_trained[task] = metrics[task][self.tasks[task].kpi]
        report: dict[str, Any] = {
            "epoch": self.epoch,
            "val_loss": float(val_losses.nansum()),
            **self.costs.report(),
            "epoch_time_s": time.perf_counter() - started,
            "restored_from_epoch": self.restored_from_epoch,
            "node": platform.node(),
        }
        if self.engine.fp16_enabled():
            # fp16's overflows skip steps silently; a trial that skips many hardly trained.
            report["skipped_steps"] = self.engine.skipped_steps - skipped_before
            report["loss_scale"] = loss_scale(self.engine)
        if self.training_task is not None:
            report["training_task"] = self.training_task
        if self.setup.stage is not None:
            task = self.setup.stage.task
            report["stage_kpi"] = metrics[task][self.tasks[task].kpi]
            report |= {f"compute/{k}": v for k, v in self._sharing_costs(task).items()}
        weights = self._weights()
        achievements = self.balancer.achievements() if self.training_task is None else None
        for i, (name, task) in enumerate(self.tasks.items()):
            if achievements is not None:
                report[f"achievement/{name}"] = float(achievements[i])
            report[f"train_loss/{name}"] = float(train_losses[i])
            report[f"val_loss/{name}"] = float(val_losses[i])
            report[f"weight/{name}"] = weights[i]
            report[f"labels/{name}"] = int(self.label_counts[i])
            for metric, value in metrics[name].items():
                report[f"{name}/{metric}"] = value
            for cost, value in self.costs.per_task[name].items():
                report[f"{cost}/{name}"] = value
            if name in self.kpi_when_trained:
                # Positive: the KPI fell since the task's own training ended.
                report[f"forgetting/{name}"] = self.kpi_when_trained[name] - metrics[name][task.kpi]
        if self.setup.references is not None:
            report["delta_m"] = delta_m(metrics, self.setup.references, self.tasks)
        return report

    @torch.no_grad()
    def _sharing_costs(self, task: str) -> dict[str, float]:
        """What ``task`` costs with computation sharing, measured on a validation batch."""
        if not isinstance(self.model, ComputeReport):
            return {}
        images, _, _ = next(iter(self.val.batches(self.setup.spec.batch_size, None)))
        return self.model.compute_report(self._inputs(images))[task]

    def save(self, directory: str | Path) -> None:
        self.engine.save_checkpoint(str(directory), tag=_ENGINE_TAG)
        state = {
            "epoch": self.epoch,
            "balancer": self.balancer.state_dict(),
            "kpi_when_trained": self.kpi_when_trained,
            "schedule": self.schedule.state_dict(),
        }
        torch.save(state, Path(directory) / _STATE_FILE)
        # Signed with a key outside the store: a resume unpickles only what this study wrote.
        store.sign_checkpoint(directory, store.study_key(self.setup.spec.name), self.rank)

    def restore(self, directory: str | Path) -> None:
        store.verify_checkpoint(directory, store.study_key(self.setup.spec.name))
        state = load_state(Path(directory) / _STATE_FILE)
        if self.setup.incremental:
            # The checkpoint holds the model as it was: every task up to the last trained.
            self._start_task(self._task_of_epoch(max(0, int(state["epoch"]) - 1)))
        self.engine.load_checkpoint(str(directory), tag=_ENGINE_TAG)
        self.epoch = int(state["epoch"])
        self.restored_from_epoch = self.epoch
        self.balancer.load_state_dict(state["balancer"])
        self.kpi_when_trained = dict(state.get("kpi_when_trained", {}))
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])


def load_state(path: Path) -> dict[str, Any]:
    """A trial's saved state, onto the CPU wherever it was written (a GPU's checkpoint loads
    on a CPU machine); the balancer moves its part to the model's device when it next runs.
    Tensors and plain containers only: a pickle that would run code is refused."""
    return torch.load(path, map_location="cpu", weights_only=True)
