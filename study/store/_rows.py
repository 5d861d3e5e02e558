"""The trial row: one typed definition that the recorder fills and the store's column
types are derived from, so a column has the same Arrow type in every trial's file."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, Required, TypedDict

import pyarrow as pa

__all__ = ["TRIAL_COLUMNS", "TrialRow", "TrialStatus"]

TrialStatus = Literal["running", "completed", "stopped_early", "error"]


class TrialRow(TypedDict, total=False):
    """One trial, as written to ``trials/<trial_id>.parquet``. Mappings are flattened into
    dotted columns (``final.semseg.miou``); docs/RESULTS.md describes each column."""

    trial_id: Required[str]
    status: Required[TrialStatus]
    error: str | None
    kind: Literal["multi_task", "single_task"]
    architecture: str
    method: str
    dataset: str
    dataset_key: str
    #: ``task=protocol`` where a metric option changes a task's scores (edges, detection,
    #: a depth cap); null in rows written before it was recorded.
    metrics_key: str
    tasks: list[str]
    seed: int
    repeat: int
    config_id: str
    #: The sampled configuration: ``hp.optim.lr``, ``hp.<method>.<knob>``, ``hp.model.*``.
    hp: Mapping[str, Any]
    incremental: bool
    stage: str | None
    trained_with: Mapping[str, list[str]]
    epochs: int
    versions: Mapping[str, str]
    # What the trial reported; absent before its first epoch.
    final: NotRequired[Mapping[str, Mapping[str, float]]]
    best: NotRequired[Mapping[str, Mapping[str, float]]]
    labels: NotRequired[Mapping[str, float]]
    task_gflops: NotRequired[Mapping[str, float]]
    task_params_trainable: NotRequired[Mapping[str, int]]
    task_params_stored: NotRequired[Mapping[str, int]]
    forgetting: NotRequired[Mapping[str, float]]
    compute: NotRequired[Mapping[str, float]]
    val_loss: float
    gflops: float
    gflops_ratio: float
    gflops_single_task_sum: float
    params: int
    wall_time_s: float | None
    restored_from_epoch: int
    node: str
    feasible: bool
    delta_m: float
    best_delta_m: float
    baseline_trials: Mapping[str, str]
    #: Set on every multi-task row when the study's search ends.
    pareto: bool
    model_path: str | None


_SCALARS: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def _arrow_type(hint: Any) -> pa.DataType | None:
    """The Arrow type of a scalar or ``list[str]`` field (None: a mapping, flattened)."""
    origin = typing.get_origin(hint)
    if origin in (Required, NotRequired):
        return _arrow_type(typing.get_args(hint)[0])
    if origin is Literal:
        return _SCALARS[type(typing.get_args(hint)[0])]
    if origin in (types.UnionType, typing.Union):
        kinds = {_arrow_type(a) for a in typing.get_args(hint) if a is not type(None)}
        (kind,) = kinds
        return kind
    if origin is list:
        return pa.list_(_arrow_type(typing.get_args(hint)[0]))
    return _SCALARS.get(hint)


#: Each top-level column of a trial row with its Arrow type.
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    name: kind
    for name, hint in typing.get_type_hints(TrialRow, include_extras=True).items()
    if (kind := _arrow_type(hint)) is not None
}
