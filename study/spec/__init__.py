"""The study spec: validated pydantic models of a study, read from YAML by
:func:`load_spec`, with the checks that need the model and search space. A bad field is one
:class:`SpecError` line naming it, before Ray starts."""

from study.optuna_storage import REDIS_PASSWORD_ENV, storage_kind
from study.spec._base import TOKEN_ARCHITECTURES, SpecError
from study.spec._checks import check_runnable, missing_neighbours
from study.spec._dataset import DatasetSpec, PartSpec
from study.spec._load import check_results, load_spec
from study.spec._models import StudySpec
from study.spec._objectives import (
    METRICS,
    ConstraintSpec,
    ObjectiveSpec,
    constraint_values,
    feasible,
)
from study.spec._reference import spec_markdown
from study.spec._training import (
    DeepSpeedSpec,
    MetricsSpec,
    OptimizerSpec,
    SamplerSpec,
    SchedulerSpec,
    ScheduleSpec,
    StageSpec,
)

__all__ = [
    "METRICS",
    "REDIS_PASSWORD_ENV",
    "TOKEN_ARCHITECTURES",
    "ConstraintSpec",
    "DatasetSpec",
    "DeepSpeedSpec",
    "MetricsSpec",
    "ObjectiveSpec",
    "OptimizerSpec",
    "PartSpec",
    "SamplerSpec",
    "ScheduleSpec",
    "SchedulerSpec",
    "SpecError",
    "StageSpec",
    "StudySpec",
    "check_results",
    "check_runnable",
    "constraint_values",
    "feasible",
    "load_spec",
    "missing_neighbours",
    "spec_markdown",
    "storage_kind",
]
