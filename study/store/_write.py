"""The Parquet store: one wide row per trial, tidy history rows, read back with pandas.

Layout under a results root::

    <root>/<study>/trials/<trial_id>.parquet    one row per trial (nested dicts flattened)
    <root>/<study>/history/<trial_id>.parquet   (trial_id, epoch, split, task, metric, value)

Every file is written to a hidden temporary name (``.<name>.<random>.tmp``) in its folder
and renamed over the final name, so a reader never sees half a file and a rewrite of a
trial replaces it atomically. Readers skip such temporary files.

Reading and querying live beside this module (:func:`study.store.load_trials`).
Flattened column names contain dots, so quote them with backticks in a filter, e.g.
``where="`final.semseg.miou` > 0.5 and method == 'dwa'"``. The columns are listed in
docs/RESULTS.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from study.store._atomic import write_atomically
from study.store._files import HISTORY_DIR, PARQUET_SUFFIX, TRIALS_DIR
from study.store._rows import TRIAL_COLUMNS, TrialRow
from study.store._schema import HISTORY_SCHEMA, SCHEMA_VERSION, conform, read_schema

__all__ = [
    "HISTORY_COLUMNS",
    "read_trial_history",
    "read_trial_row",
    "write_history",
    "write_spec",
    "write_trial",
]

#: The columns of one history row, with their Arrow types.
HISTORY_COLUMNS: dict[str, pa.DataType] = {
    f.name: f.type for f in HISTORY_SCHEMA if f.name not in ("study", "schema_version")
}
_TRIAL_TYPES = {**TRIAL_COLUMNS, "study": pa.string(), "schema_version": pa.int64()}

PathLike = str | os.PathLike[str]


def _check_name(kind: str, name: object) -> str:
    """A study or trial name becomes a path component: keep it to one plain component."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ValueError(
            f"{kind} {name!r} must be a plain file name (no '/', '\\', or leading '.')"
        )
    return name


def _cell(value: Any) -> Any:
    """A Parquet-friendly scalar or list; anything exotic is stored as its ``str``."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return _cell(value.tolist())
    if isinstance(value, list | tuple):
        items = [_cell(v) for v in value]
        if all(isinstance(v, str) for v in items):
            return items
        try:
            pa.array([items])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # A mixed list has no single Arrow type; keep its text rather than fail the write.
            return str(items)
        return items
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; nested mappings at any depth."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if not isinstance(key, str):
            raise ValueError(f"row keys must be strings, got {key!r} under {prefix or 'the row'}")
        name = f"{prefix}{key}"
        items = _flatten(value, f"{name}.") if isinstance(value, Mapping) else {name: _cell(value)}
        for column, cell in items.items():
            if column in flat:
                raise ValueError(f"row has the column {column!r} twice after flattening")
            flat[column] = cell
    return flat


def _column(name: str, value: Any, kind: pa.DataType | None = None) -> pa.Array:
    if kind is not None:
        # A declared column keeps its type in every file, a missing value included.
        try:
            return pa.array([value], type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            raise ValueError(f"column {name!r}: {value!r} is not a {kind}") from None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # An empty list too, so it unifies with the same column in other files.
        return pa.array([value], type=pa.list_(pa.string()))
    try:
        return pa.array([value])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"column {name!r}: cannot store {value!r} ({err})") from None


def _atomic_write(table: pa.Table, path: Path) -> Path:
    return write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def write_spec(root: Path, study: str, text: str) -> Path:
    """``<root>/<study>/spec.yaml``: the spec the study ran with, for its report."""
    path = Path(root) / _check_name("study", study) / "spec.yaml"
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def _folder(root: PathLike, study: str, kind: str) -> Path:
    return Path(root) / _check_name("study", study) / kind


def _reserved(row: Mapping[str, Any], column: str, value: Any) -> None:
    if column in row and row[column] != value:
        raise ValueError(f"row has {column}={row[column]!r}, but it is written as {value!r}")


def write_trial(root: Path, study: str, row: TrialRow | Mapping[str, Any]) -> Path:
    """Write (or atomically replace) ``<root>/<study>/trials/<trial_id>.parquet``.

    Nested mappings become dotted columns (``final.semseg.miou``); lists of strings stay
    list columns; ``study`` and ``schema_version`` are added. When the study has a schema
    (``<study>/schema.parquet``, written by its driver from the spec and search space) the
    file has exactly its columns, in its order, absent ones as typed nulls. Without one,
    the columns of :class:`TrialRow` take its types. Returns the file's path.
    """
    trial_id = row.get("trial_id")
    if not isinstance(trial_id, str):
        raise ValueError(f"a trial row needs a string 'trial_id', got {trial_id!r}")
    _check_name("trial_id", trial_id)
    _reserved(row, "study", study)
    _reserved(row, "schema_version", SCHEMA_VERSION)
    flat = _flatten({**row, "study": study, "schema_version": SCHEMA_VERSION})
    schema = read_schema(Path(root) / study)
    if schema is not None:
        table = conform(flat, schema, f"trial {trial_id}")
    else:
        table = pa.table(
            {name: _column(name, value, _TRIAL_TYPES.get(name)) for name, value in flat.items()}
        )
    return _atomic_write(table, _folder(root, study, TRIALS_DIR) / f"{trial_id}{PARQUET_SUFFIX}")


def _history_cell(index: int, column: str, value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy and torch scalars
        value = value.tolist()
    kind = HISTORY_COLUMNS[column]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == pa.string() and isinstance(value, str):
        return value
    if kind == pa.int64() and number and isinstance(value, int):
        return value
    if kind == pa.float64() and number:
        return float(value)
    expected = {pa.string(): "a str", pa.int64(): "an int", pa.float64(): "a float"}[kind]
    raise ValueError(f"history row {index}: {column!r} must be {expected}, got {value!r}")


def write_history(root: Path, study: str, trial_id: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write (or atomically replace) ``<root>/<study>/history/<trial_id>.parquet``.

    Each row has ``epoch`` (int), ``split``, ``task``, ``metric`` (str) and ``value``
    (float); ``trial_id`` may be left out (it must match when given).
    """
    _check_name("trial_id", trial_id)
    expected = set(HISTORY_COLUMNS)
    columns: dict[str, list[Any]] = {c: [] for c in HISTORY_COLUMNS}
    for index, given in enumerate(rows):
        row = {"trial_id": trial_id, **given}
        if set(row) != expected:
            missing, extra = sorted(expected - set(row)), sorted(set(row) - expected)
            raise ValueError(
                f"history row {index}: missing {missing}, unexpected {extra}; "
                f"expected columns {list(HISTORY_COLUMNS)}"
            )
        if row["trial_id"] != trial_id:
            raise ValueError(f"history row {index}: trial_id {row['trial_id']!r} != {trial_id!r}")
        for column in HISTORY_COLUMNS:
            columns[column].append(_history_cell(index, column, row[column]))
    count = len(columns["trial_id"])
    data = {**columns, "study": [study] * count, "schema_version": [SCHEMA_VERSION] * count}
    table = pa.table(data, schema=HISTORY_SCHEMA)
    return _atomic_write(table, _folder(root, study, HISTORY_DIR) / f"{trial_id}{PARQUET_SUFFIX}")


def _compacted_rows(folder: Path, trial_id: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of one trial in the folder's compacted files (none if it has none)."""
    from study.store._parts import list_kind

    files = sorted(p for p in folder.glob(f"*{PARQUET_SUFFIX}") if not p.name.startswith("."))
    parts = list_kind(files).parts
    if not parts:
        return pa.table({})
    dataset = ds.dataset([str(p) for p in parts], format="parquet")
    return dataset.to_table(columns=columns, filter=ds.field("trial_id") == trial_id)


def read_trial_row(root: Path, study: str, trial_id: str) -> dict[str, Any] | None:
    """The stored row of one trial, flat (dotted columns), or None if it has none; from
    its own file, or from the study's compacted file once it is merged there."""
    folder = _folder(root, study, TRIALS_DIR)
    path = folder / f"{_check_name('trial_id', trial_id)}{PARQUET_SUFFIX}"
    rows = pq.read_table(path).to_pylist() if path.is_file() else []
    if not rows:
        rows = _compacted_rows(folder, trial_id).to_pylist() if folder.is_dir() else []
    if not rows:
        return None
    return {k: v for k, v in rows[-1].items() if k not in ("study", "schema_version")}


def read_trial_history(root: Path, study: str, trial_id: str) -> list[dict[str, Any]]:
    """The history rows already stored for one trial (none if it has no file yet), as
    :func:`write_history` takes them: a resumed driver appends to them."""
    folder = _folder(root, study, HISTORY_DIR)
    path = folder / f"{_check_name('trial_id', trial_id)}{PARQUET_SUFFIX}"
    columns = [c for c in HISTORY_COLUMNS if c != "trial_id"]
    if path.is_file():
        return pq.read_table(path, columns=columns).to_pylist()
    if not folder.is_dir():
        return []
    return _compacted_rows(folder, trial_id, columns).to_pylist()
