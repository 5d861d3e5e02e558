"""One schema for every trial file of a study, derived from its spec and search space.

Every trial file of a study has the same columns, in the same order, with the same types:
the hyperparameters of methods a trial did not use are there too, as typed nulls. Outside
readers (DuckDB, Polars, Spark) then read ``trials/*.parquet`` with no options. The study's
driver writes the schema once, as a Parquet file of no rows (``<study>/schema.parquet``),
and every trial row written to that study afterwards is conformed to it.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from models.task_metrics import task_metrics
from study.store._atomic import write_atomically
from study.store._rows import TRIAL_COLUMNS, TrialRow

if TYPE_CHECKING:
    from search_spaces import SearchSpace
    from study.spec import StudySpec

__all__ = [
    "HISTORY_SCHEMA",
    "SCHEMA_FILE",
    "SCHEMA_VERSION",
    "VERSIONED_PACKAGES",
    "read_schema",
    "trial_schema",
    "write_schema",
]

#: Written in every file's ``schema_version`` column; readers accept every older version.
#: 2: one schema per study (every ``hp.*`` column in every file, counts as integers).
SCHEMA_VERSION: int = 2

#: The study's trial schema, as a Parquet file of no rows, beside ``spec.yaml``.
SCHEMA_FILE = "schema.parquet"

#: The packages whose versions a trial row records (``versions.<package>``).
VERSIONED_PACKAGES = ("mtlstudy", "torch", "deepspeed", "ray", "optuna", "timm")

#: The history rows of every study: one fixed schema.
HISTORY_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int64()),
        ("split", pa.string()),
        ("task", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("study", pa.string()),
        ("schema_version", pa.int64()),
    ]
)

# What a staged study's trials report of their computation sharing (compute.<key>); the
# per-point keys are added from the architecture's delta points.
_COMPUTE_KEYS = (
    "stored_parameters",
    "dense_gflops",
    "weight_density",
    "activation_density",
    "gflops",
    "gflops_vs_dense",
    "temporal_density",
    "temporal_gflops",
    "temporal_gflops_vs_dense",
)


def _value_type(value: object) -> pa.DataType:
    """The Arrow type of a fixed model argument or a categorical choice."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def _choices_type(values: Sequence[object]) -> pa.DataType:
    kinds = {_value_type(v) for v in values}
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {pa.int64(), pa.float64()}:
        return pa.float64()
    return pa.string()  # mixed kinds: each value is stored as its text


def _param_type(param: Any) -> pa.DataType:
    kind = getattr(param, "type", None)
    if kind == "float":
        return pa.float64()
    if kind == "int":
        return pa.int64()
    return _choices_type(list(param.choices))


def _hp_columns(spec: StudySpec, space: SearchSpace) -> dict[str, pa.DataType]:
    columns: dict[str, pa.DataType] = {}
    spaces = [space] + [space.overridden(s.space) for s in spec.stages or () if s.space]
    for group in ("optim", "model"):
        for each in spaces:
            for name, param in getattr(each, group).items():
                columns.setdefault(f"hp.{group}.{name}", _param_type(param))
    for name, value in spec.baseline_model.items():  # the baselines' fixed arguments
        columns.setdefault(f"hp.model.{name}", _value_type(value))
    columns["hp.method"] = pa.string()
    for method, params in space.methods.items():
        for name, param in params.items():
            columns[f"hp.{method}.{name}"] = _param_type(param)
    return columns


def _compute_keys(spec: StudySpec) -> list[str]:
    if spec.stages is None:
        return []
    from models.vit_sharing import POINTS  # the delta points of the staged architecture

    per_point = [f"{k}.{p}" for k in ("activation_density", "temporal_density") for p in POINTS]
    return [*_COMPUTE_KEYS, *per_point]


def _expanders(
    spec: StudySpec, space: SearchSpace
) -> dict[str, Callable[[pa.DataType], dict[str, pa.DataType]]]:
    """For each mapping field of :class:`TrialRow`: its flattened columns."""
    tasks = {t: task_metrics(t) for t in spec.tasks}

    def per_task(kind: pa.DataType) -> Callable[[pa.DataType], dict[str, pa.DataType]]:
        return lambda _: {t: kind for t in tasks}

    def metrics(_: pa.DataType) -> dict[str, pa.DataType]:
        return {f"{t}.{m.name}": pa.float64() for t, task in tasks.items() for m in task.metrics}

    return {
        "hp": lambda _: {k.removeprefix("hp."): v for k, v in _hp_columns(spec, space).items()},
        "trained_with": per_task(pa.list_(pa.string())),
        "versions": lambda _: {p: pa.string() for p in VERSIONED_PACKAGES},
        "final": metrics,
        "best": metrics,
        "labels": per_task(pa.int64()),
        "task_gflops": per_task(pa.float64()),
        # Parameter counts are integers, like `params`.
        "task_params_trainable": per_task(pa.int64()),
        "task_params_stored": per_task(pa.int64()),
        "forgetting": per_task(pa.float64()),
        "compute": lambda _: {k: pa.float64() for k in _compute_keys(spec)},
        "baseline_trials": per_task(pa.string()),
    }


def trial_schema(spec: StudySpec, space: SearchSpace) -> pa.Schema:
    """The columns of every trial file of the study, in :class:`TrialRow`'s order: its
    scalar fields as they are, each mapping flattened (``hp.<group>.<name>`` from the
    search space, ``final.<task>.<metric>`` from the spec's tasks, …), then ``study`` and
    ``schema_version``."""
    expand = _expanders(spec, space)
    fields: list[tuple[str, pa.DataType]] = []
    for name in typing.get_type_hints(TrialRow):
        if name in TRIAL_COLUMNS:
            fields.append((name, TRIAL_COLUMNS[name]))
        else:
            fields += [(f"{name}.{k}", t) for k, t in expand[name](pa.null()).items()]
    fields += [("study", pa.string()), ("schema_version", pa.int64())]
    return pa.schema(fields)


def write_schema(root: Path, study: str, schema: pa.Schema) -> Path:
    """``<root>/<study>/schema.parquet``: the study's trial schema, as a file of no rows."""
    path = Path(root) / study / SCHEMA_FILE
    _CACHE.pop(str(path), None)
    return write_atomically(path, lambda tmp: pq.write_table(schema.empty_table(), tmp))


# The schema of each study folder, by the file's identity: rows are conformed to it on every
# write, so its footer is read once per change, not once per row.
_CACHE: dict[str, tuple[tuple[int, int, int], pa.Schema]] = {}


def read_schema(study_dir: Path) -> pa.Schema | None:
    """The trial schema written for the study in ``study_dir``; None for a study written
    before there was one (schema version 1)."""
    path = Path(study_dir) / SCHEMA_FILE
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _CACHE.get(str(path))
    if cached is None or cached[0] != stamp:
        cached = _CACHE[str(path)] = (stamp, pq.read_schema(path).remove_metadata())
    return cached[1]


def conform(flat: Mapping[str, Any], schema: pa.Schema, what: str) -> pa.Table:
    """One row of flat (dotted) columns as a table of exactly ``schema``: absent columns
    are typed nulls; a column the schema lacks is an error unless its value is null."""
    extra = sorted(k for k, v in flat.items() if k not in schema.names and v is not None)
    if extra:
        raise ValueError(
            f"{what}: column(s) {extra} are not in the study's schema ({SCHEMA_FILE}, "
            "written from the spec and search space); expected some of its columns"
        )
    arrays = [_cell(f.name, flat.get(f.name), f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _cell(name: str, value: Any, kind: pa.DataType) -> pa.Array:
    if value is not None:
        if pa.types.is_integer(kind) and isinstance(value, float) and value.is_integer():
            value = int(value)  # a count reported as a float
        elif pa.types.is_string(kind) and not isinstance(value, str):
            value = str(value)  # a categorical of mixed kinds keeps its text
    try:
        return pa.array([value], type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        raise ValueError(f"column {name!r}: {value!r} is not a {kind}") from None
