"""The checks of a spec that need its model and search space: what can be validated
only by building the model, before Ray starts. Every refusal is one :class:`SpecError`
line naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models import balancing, create_model
from search_spaces import SearchSpace
from study.spec import SpecError, StudySpec
from study.splits import missing_neighbours

__all__ = ["check_runnable"]


def check_runnable(path: Path, spec: StudySpec, space: SearchSpace) -> None:
    """Build the model as trials will (the spec's arguments over the space's defaults),
    and refuse what a study could not run."""
    model_kw = {**spec.model, **{k: p.default for k, p in space.model.items()}}
    model = _model(path, spec, "model", model_kw)
    if spec.baselines != "none" and spec.baseline_model:
        _model(path, spec, "baseline_model", {**model_kw, **spec.baseline_model})
    _check_sampler(path, spec, space)
    if spec.incremental:
        _check_incremental(path, spec, space, model)
    if spec.stages is not None:
        _check_stages(path, spec, space, model)
    _check_temporal(path, spec, space, model)
    gradient_methods = [m for m in space.methods if balancing.needs_gradients(m)]
    if gradient_methods and spec.deepspeed.zero_stage == 3:
        # ZeRO-3 frees each layer's weights after use; a task-gradient pass cannot see them.
        raise SpecError(
            f"{path}: field 'deepspeed': zero_stage 3 cannot serve gradient-level methods "
            f"{gradient_methods}; use zero_stage 0-2 or restrict 'methods'"
        )
    if gradient_methods and not any(p.requires_grad for p in model.shared_parameters()):
        # RCM's banks are frozen: tasks share no trained weight, so nothing conflicts.
        raise SpecError(
            f"{path}: field 'methods': {spec.architecture} shares no trained parameter, so "
            f"gradient-level methods {gradient_methods} have nothing to balance; restrict "
            "'methods' to loss-level ones"
        )


def _model(path: Path, spec: StudySpec, field: str, kwargs: dict[str, object]) -> Any:
    try:
        return create_model(
            spec.architecture, spec.tasks, num_classes=spec.dataset.num_classes, **kwargs
        )
    except (TypeError, ValueError, RuntimeError) as err:
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecError(
            f"{path}: field '{field}' (with the search space's model defaults): {line}"
        ) from None


def _check_sampler(path: Path, spec: StudySpec, space: SearchSpace) -> None:
    if spec.sampler.name == "grid" and spec.trials != space.grid_size():
        raise SpecError(
            f"{path}: field 'trials': the grid of methods × categorical choices has "
            f"{space.grid_size()} points; set trials: {space.grid_size()}"
        )


def _check_incremental(path: Path, spec: StudySpec, space: SearchSpace, model: Any) -> None:
    if not hasattr(model, "add_task"):
        raise SpecError(
            f"{path}: field 'incremental': {spec.architecture} cannot add a task to a trained "
            "model; use rcm_resnet"
        )
    if getattr(model, "train_bank", False):
        raise SpecError(
            f"{path}: field 'incremental': a trained shared bank would change earlier tasks; "
            "set model.train_bank: false"
        )
    if list(space.methods) != ["ew"]:
        raise SpecError(
            f"{path}: field 'methods': incremental training trains one task at a time, so "
            f"there is nothing to balance; set methods: [ew], not {list(space.methods)}"
        )
    if spec.deepspeed.zero_stage == 3:
        raise SpecError(
            f"{path}: field 'deepspeed': incremental training adds parameters between tasks, "
            "which zero_stage 3's partitions cannot take; use zero_stage 0-2"
        )


def _check_stages(path: Path, spec: StudySpec, space: SearchSpace, model: Any) -> None:
    def refuse(field: str, message: str) -> SpecError:
        return SpecError(f"{path}: field '{field}': {message}")

    if not hasattr(model, "set_stage"):
        raise refuse("stages", f"{spec.architecture} has no training stages; use vit_sharing")
    if spec.baselines != "none" or spec.incremental or list(space.methods) != ["ew"]:
        raise refuse(
            "stages",
            "a stage trains one task and is scored by that task's KPI; set baselines: none, "
            "methods: [ew] and no incremental",
        )
    seen: set[tuple[str, str]] = set()
    for i, stage in enumerate(spec.stages or ()):
        field = f"stages.{i}"
        if stage.task not in spec.tasks:
            raise refuse(field, f"task {stage.task!r} is not one of the study's {spec.tasks}")
        is_base = stage.task == model.base_task
        if is_base != (stage.step == "base"):
            raise refuse(
                field,
                f"{stage.task!r} is {'the base task' if is_base else 'a sub-task'}; the base "
                f"task {model.base_task!r} takes step 'base', sub-tasks gates/masked/delta_act",
            )
        if i == 0 and stage.step != "base":
            raise refuse(field, "the first stage trains the base task (step: base)")
        if (stage.task, stage.step) in seen:
            raise refuse(field, f"stage {stage.name} is listed twice")
        if stage.step in ("masked", "delta_act") and (stage.task, "gates") not in seen:
            raise refuse(field, f"{stage.name} needs a {stage.task}-gates stage before it")
        seen.add((stage.task, stage.step))


def _check_temporal(path: Path, spec: StudySpec, space: SearchSpace, model: Any) -> None:
    """A temporal penalty needs staged training and a dataset with neighbouring frames."""
    if not getattr(model, "temporal", False) and "temporal_l1_weight" not in space.model:
        return
    field = "model.temporal_l1_weight"
    if spec.stages is None:
        raise SpecError(
            f"{path}: field '{field}': the temporal penalty is added in staged training; "
            "add 'stages' or set it to 0"
        )
    missing = missing_neighbours(spec.dataset)
    if missing is not None:
        raise SpecError(
            f"{path}: field '{field}': the temporal penalty compares each frame with its "
            f"neighbouring frame, but {missing}; set it to 0 or use such a dataset"
        )
