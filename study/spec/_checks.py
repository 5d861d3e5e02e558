"""The checks of a spec that need its model and search space: what can be validated
only by building the model, before Ray starts. Every refusal is one :class:`SpecError`
line naming the field."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from models import (
    IncrementalTasks,
    StagedTraining,
    TemporalPenalty,
    balancing,
    create_model,
)
from search_spaces import SearchSpace, SearchSpaceError
from study.data import SYNTHETIC, dataset_names, get_format
from study.data.nyud import NEIGHBOUR_DIR
from study.errors import first_line
from study.spec._base import SpecError
from study.spec._dataset import DatasetSpec
from study.spec._models import StudySpec

__all__ = ["check_runnable", "missing_neighbours"]


def _refuse(path: Path, field: str, message: str) -> SpecError:
    return SpecError(f"{path}: field '{field}': {message}")


def check_runnable(path: Path, spec: StudySpec, space: SearchSpace) -> None:
    """Build the model as trials will (the spec's arguments over the space's defaults),
    and refuse what a study could not run."""
    defaults = {k: p.default for k, p in space.model.items()}
    model_kw = {**spec.model, **defaults}
    model = _model(path, spec, spec.architecture, "model", model_kw)
    if spec.baselines != "none" and spec.baseline_model:
        _model(path, spec, spec.architecture, "baseline_model", {**model_kw, **spec.baseline_model})
    searched = [
        _model(path, spec, name, f"architectures.{name}", {**kw, **defaults})
        for name, kw in (spec.architectures or {}).items()
    ]
    _check_sampler(path, spec, space)
    _check_search(path, spec)
    if spec.incremental:
        _check_incremental(path, spec, space, model)
    if spec.stages is not None:
        _check_stages(path, spec, space, model)
    _check_temporal(path, spec, space, model)
    _check_eval_resolution(path, spec, searched or [model])
    gradient_methods = [m for m in space.methods if balancing.needs_gradients(m)]
    params_only = [m for m in gradient_methods if balancing.params_only(m)]
    if params_only and spec.gradient_space == "representation":
        # Their state is per shared parameter; the shared features are new samples each step.
        raise _refuse(
            path,
            "gradient_space",
            f"methods {params_only} keep state per shared parameter and read the parameters' "
            "gradients only; use gradient_space 'params' or restrict 'methods'",
        )
    if gradient_methods and spec.deepspeed.zero_stage == 3:
        # ZeRO-3 frees each layer's weights after use; a task-gradient pass cannot see them.
        raise _refuse(
            path,
            "deepspeed",
            f"zero_stage 3 cannot serve gradient-level methods "
            f"{gradient_methods}; use zero_stage 0-2 or restrict 'methods'",
        )
    for built in searched or [model]:
        if gradient_methods and not any(p.requires_grad for p in built.shared_parameters()):
            # RCM's banks are frozen: tasks share no trained weight, so nothing conflicts.
            raise _refuse(
                path,
                "methods",
                f"{type(built).__name__} shares no trained parameter, "
                f"so gradient-level methods {gradient_methods} have nothing to balance; "
                "restrict 'methods' to loss-level ones",
            )


def _check_eval_resolution(path: Path, spec: StudySpec, built: list[Any]) -> None:
    """A model of one input size (a ViT's position embedding: ``image_size``) cannot
    score a dataset at its own resolution unless that is the size."""
    data = spec.dataset
    if data.name == SYNTHETIC or data.eval_resolution != "native":
        return
    scored = get_format(data.name).eval_size
    for model in built:
        size = getattr(model, "image_size", None)
        if isinstance(size, int) and scored != (size, size):
            at = "its images' own size" if scored is None else f"{scored[0]}x{scored[1]}"
            raise _refuse(
                path,
                "dataset.eval_resolution",
                f"{type(model).__name__} takes {size}x{size} images only, but {data.name} is "
                f"scored at {at}; set eval_resolution: train",
            )


#: More parameters than this is a typo in a width or a depth, not a model to train.
MAX_PARAMETERS = 2_000_000_000


def _model(
    path: Path, spec: StudySpec, architecture: str, field: str, kwargs: dict[str, object]
) -> Any:
    _check_model_args(path, field, kwargs)
    try:
        # On the meta device a model has its structure but no memory: an absurd width is
        # counted below rather than allocated, and the check takes a fraction of a second.
        with torch.device("meta"), warnings.catch_warnings():
            # Loading pretrained weights into meta tensors checks them and copies nothing.
            warnings.filterwarnings("ignore", message=".*meta parameter.*")
            model = create_model(
                architecture, spec.tasks, num_classes=spec.dataset.num_classes, **kwargs
            )
    except (TypeError, ValueError, RuntimeError) as err:
        raise SpecError(
            f"{path}: field '{field}' (with the search space's model defaults): {first_line(err)}"
        ) from None
    except Exception as err:  # a constructor (timm's too) trusts the types it is given
        raise SpecError(
            f"{path}: field '{field}': {architecture} cannot be built from these arguments "
            f"({type(err).__name__}: {first_line(err)})"
        ) from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise _refuse(
            path,
            field,
            f"{architecture} would have {count:.3g} parameters; expected at most "
            f"{MAX_PARAMETERS:.0e} (is a width or depth mistyped?)",
        )
    return model


def _check_model_args(path: Path, field: str, kwargs: dict[str, object]) -> None:
    """The model arguments a constructor would misread: a backbone's name, weights."""
    backbone = kwargs.get("backbone")
    if backbone is not None and not isinstance(backbone, str):
        raise _refuse(
            path, f"{field}.backbone", f"expected the name of a timm model, got {backbone!r}"
        )
    weights = kwargs.get("pretrained_path")
    if weights is not None:
        _check_weights(path, f"{field}.pretrained_path", weights)


def _check_weights(path: Path, field: str, weights: object) -> None:
    if not isinstance(weights, str):
        raise _refuse(path, field, f"expected the path of a weights file, got {weights!r}")
    file = Path(weights)
    try:
        found = file.is_file()
    except OSError:
        found = False
    if not found:
        raise _refuse(path, field, f"weights file {file.absolute()} not found")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not its own
        raise _refuse(
            path,
            field,
            f"{file} is not a torch state dict ({type(err).__name__}); expected a file "
            "written by torch.save(model.state_dict())",
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _refuse(
            path, field, f"{file} holds no state dict; expected a mapping of names to tensors"
        )


def _check_sampler(path: Path, spec: StudySpec, space: SearchSpace) -> None:
    if spec.sampler.name == "grid" and spec.trials != space.grid_size():
        raise _refuse(
            path,
            "trials",
            f"the grid of methods × categorical choices has "
            f"{space.grid_size()} points; set trials: {space.grid_size()}",
        )


def _check_search(path: Path, spec: StudySpec) -> None:
    """Objectives, constraints, repeats and schedulers that can run together."""

    measured = [o.metric for o in spec.objectives or ()] + [c.metric for c in spec.constraints]
    if spec.stages is not None and (spec.objectives or spec.constraints or spec.repeats > 1):
        raise _refuse(
            path,
            "stages",
            "a staged study optimises each stage's KPI; it takes no "
            "objectives, constraints or repeats",
        )
    if spec.stages is not None or spec.incremental:
        if spec.architectures is not None:
            raise _refuse(
                path,
                "architectures",
                "staged and incremental studies train one architecture; set 'architecture' instead",
            )
    if "delta_m" in measured and spec.baselines == "none":
        raise _refuse(
            path, "objectives", "delta_m needs single-task baselines; set baselines: auto"
        )
    metrics = [o.metric for o in spec.objectives or ()]
    if len(set(metrics)) != len(metrics):
        raise _refuse(path, "objectives", f"a metric is listed twice in {metrics}")
    early_stopping = spec.scheduler.name != "fifo"
    if len(metrics) > 1 and early_stopping:
        raise _refuse(
            path,
            "scheduler",
            f"{spec.scheduler.name} stops trials on one metric, but the study has "
            f"{len(metrics)} objectives {metrics}; use scheduler: {{name: fifo}}",
        )
    if spec.repeats > 1 and early_stopping:
        raise _refuse(
            path,
            "scheduler",
            f"{spec.scheduler.name} would stop some seeds of a configuration and not others, "
            f"biasing its mean over repeats: {spec.repeats}; use scheduler: {{name: fifo}}",
        )
    if spec.sampler.name == "grid" and spec.constraints:
        raise _refuse(
            path,
            "constraints",
            "the grid sampler runs every point whatever its "
            "constraints; use sampler tpe, random or nsga2",
        )


def _check_incremental(path: Path, spec: StudySpec, space: SearchSpace, model: Any) -> None:
    if not isinstance(model, IncrementalTasks):
        raise _refuse(
            path,
            "incremental",
            f"{spec.architecture} cannot add a task to a trained model; use rcm_resnet",
        )
    if model.train_bank:
        raise _refuse(
            path,
            "incremental",
            "a trained shared bank would change earlier tasks; set model.train_bank: false",
        )
    if list(space.methods) != ["ew"]:
        raise _refuse(
            path,
            "methods",
            f"incremental training trains one task at a time, so "
            f"there is nothing to balance; set methods: [ew], not {list(space.methods)}",
        )
    if spec.deepspeed.zero_stage == 3:
        raise _refuse(
            path,
            "deepspeed",
            "incremental training adds parameters between tasks, "
            "which zero_stage 3's partitions cannot take; use zero_stage 0-2",
        )


def _check_stages(path: Path, spec: StudySpec, space: SearchSpace, model: Any) -> None:
    if not isinstance(model, StagedTraining):
        raise _refuse(
            path, "stages", f"{spec.architecture} has no training stages; use vit_sharing"
        )
    if spec.baselines != "none" or spec.incremental or list(space.methods) != ["ew"]:
        raise _refuse(
            path,
            "stages",
            "a stage trains one task and is scored by that task's KPI; set baselines: none, "
            "methods: [ew] and no incremental",
        )
    seen: set[tuple[str, str]] = set()
    for i, stage in enumerate(spec.stages or ()):
        field = f"stages.{i}"
        if stage.task not in spec.tasks:
            raise _refuse(
                path, field, f"task {stage.task!r} is not one of the study's {spec.tasks}"
            )
        is_base = stage.task == model.base_task
        if is_base != (stage.step == "base"):
            raise _refuse(
                path,
                field,
                f"{stage.task!r} is {'the base task' if is_base else 'a sub-task'}; the base "
                f"task {model.base_task!r} takes step 'base', sub-tasks gates/masked/delta_act",
            )
        if i == 0 and stage.step != "base":
            raise _refuse(path, field, "the first stage trains the base task (step: base)")
        if (stage.task, stage.step) in seen:
            raise _refuse(path, field, f"stage {stage.name} is listed twice")
        if stage.step in ("masked", "delta_act") and (stage.task, "gates") not in seen:
            raise _refuse(path, field, f"{stage.name} needs a {stage.task}-gates stage before it")
        if stage.space is not None:
            try:
                space.overridden(stage.space)
            except SearchSpaceError as err:
                raise _refuse(path, f"{field}.space", str(err)) from None
        seen.add((stage.task, stage.step))


def _check_temporal(path: Path, spec: StudySpec, space: SearchSpace, model: Any) -> None:
    """A temporal penalty needs staged training and a dataset with neighbouring frames."""
    temporal = isinstance(model, TemporalPenalty) and model.temporal
    if not temporal and "temporal_l1_weight" not in space.model:
        return
    field = "model.temporal_l1_weight"
    if spec.stages is None:
        raise _refuse(
            path,
            field,
            "the temporal penalty is added in staged training; add 'stages' or set it to 0",
        )
    missing = missing_neighbours(spec.dataset)
    if missing is not None:
        raise _refuse(
            path,
            field,
            f"the temporal penalty compares each frame with its "
            f"neighbouring frame, but {missing}; set it to 0 or use such a dataset",
        )


def missing_neighbours(dataset: DatasetSpec) -> str | None:
    """Why ``dataset`` has no neighbouring frames (None: it has): synthetic scenes render
    them, a format that stores them keeps them under ``neighbours/`` in its root."""
    if dataset.parts is not None:
        return "a mix of parts has no neighbouring frames"
    if dataset.name == SYNTHETIC:
        return None
    if not get_format(dataset.name).neighbours:
        having = [SYNTHETIC, *(n for n in dataset_names(False) if get_format(n).neighbours)]
        return f"{dataset.name} has no neighbouring frames ({', '.join(having)} have)"
    folder = Path(str(dataset.root)) / NEIGHBOUR_DIR
    if not folder.is_dir():
        return (
            f"the {dataset.name} root has no {NEIGHBOUR_DIR}/ folder of neighbouring frames "
            f"({folder})"
        )
    return None
