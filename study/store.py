"""The Parquet store: one wide row per trial, tidy history rows, read back with pandas.

Layout under a results root::

    <root>/<study>/trials/<trial_id>.parquet    one row per trial (nested dicts flattened)
    <root>/<study>/history/<trial_id>.parquet   (trial_id, epoch, split, task, metric, value)

Every file is written to a hidden temporary name (``.<name>.<random>.tmp``) in its folder
and renamed over the final name, so a reader never sees half a file and a rewrite of a
trial replaces it atomically. Readers skip such temporary files.

Querying: ``where`` is a :meth:`pandas.DataFrame.query` expression applied after loading.
Flattened column names contain dots, so quote them with backticks, e.g.
``where="`final.semseg.miou` > 0.5 and method == 'dwa'"``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "HISTORY_COLUMNS",
    "SCHEMA_VERSION",
    "load_history",
    "load_trials",
    "write_history",
    "write_trial",
]

SCHEMA_VERSION: int = 1

_TRIALS = "trials"
_HISTORY = "history"
_SUFFIX = ".parquet"
_TMP_SUFFIX = ".tmp"
_READ_THREADS = 16

#: The columns of one history row, with their Arrow types.
HISTORY_COLUMNS: dict[str, pa.DataType] = {
    "trial_id": pa.string(),
    "epoch": pa.int64(),
    "split": pa.string(),
    "task": pa.string(),
    "metric": pa.string(),
    "value": pa.float64(),
}
_HISTORY_SCHEMA = pa.schema(
    [*HISTORY_COLUMNS.items(), ("study", pa.string()), ("schema_version", pa.int64())]
)

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------- writing


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


def _column(name: str, value: Any) -> pa.Array:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # An empty list too, so it unifies with the same column in other files.
        return pa.array([value], type=pa.list_(pa.string()))
    try:
        return pa.array([value])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"column {name!r}: cannot store {value!r} ({err})") from None


def _atomic_write(table: pa.Table, path: Path) -> Path:
    """Write next to ``path`` under a hidden temporary name, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _folder(root: PathLike, study: str, kind: str) -> Path:
    return Path(root) / _check_name("study", study) / kind


def _reserved(row: Mapping[str, Any], column: str, value: Any) -> None:
    if column in row and row[column] != value:
        raise ValueError(f"row has {column}={row[column]!r}, but it is written as {value!r}")


def write_trial(root: Path, study: str, row: Mapping[str, Any]) -> Path:
    """Write (or atomically replace) ``<root>/<study>/trials/<trial_id>.parquet``.

    Nested mappings become dotted columns (``final.semseg.miou``); lists of strings stay
    list columns; ``study`` and ``schema_version`` are added. Returns the file's path.
    """
    trial_id = row.get("trial_id")
    if not isinstance(trial_id, str):
        raise ValueError(f"a trial row needs a string 'trial_id', got {trial_id!r}")
    _check_name("trial_id", trial_id)
    _reserved(row, "study", study)
    _reserved(row, "schema_version", SCHEMA_VERSION)
    flat = _flatten({**row, "study": study, "schema_version": SCHEMA_VERSION})
    table = pa.table({name: _column(name, value) for name, value in flat.items()})
    return _atomic_write(table, _folder(root, study, _TRIALS) / f"{trial_id}{_SUFFIX}")


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
    table = pa.table(data, schema=_HISTORY_SCHEMA)
    return _atomic_write(table, _folder(root, study, _HISTORY) / f"{trial_id}{_SUFFIX}")


# ---------------------------------------------------------------------------- reading


def _is_result_file(path: Path) -> bool:
    # Temporary files of interrupted writes are hidden and end in .tmp; never read them.
    return path.is_file() and path.suffix == _SUFFIX and not path.name.startswith(".")


def _study_files(study_dir: Path, kind: str) -> list[Path]:
    return sorted(p for p in (study_dir / kind).glob(f"*{_SUFFIX}") if _is_result_file(p))


def _files_under(path: Path, kind: str) -> list[Path]:
    """The ``kind`` files of ``path``, a study folder or a root of study folders."""
    if (path / kind).is_dir() or (path / _TRIALS).is_dir() or (path / _HISTORY).is_dir():
        return _study_files(path, kind)
    studies = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [f for study in studies for f in _study_files(study, kind)]


def _find_files(paths: PathLike | Sequence[PathLike], kind: str) -> list[Path]:
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise ValueError("no results path given")
    found: dict[Path, None] = {}  # ordered set: the same study reached twice is read once
    for item in items:
        path = Path(item)
        expected = (
            f"expected a results folder with <study>/{kind}/*{_SUFFIX} "
            f"or a study folder with {kind}/*{_SUFFIX}"
        )
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder; {expected}")
        files = _files_under(path, kind)
        if not files:
            raise FileNotFoundError(f"{path}: no {kind} results; {expected}")
        found.update((f.resolve(), None) for f in files)
    return list(found)


def _where_names(where: str | None) -> set[str]:
    """Names an expression may refer to: `quoted` names and bare identifiers."""
    if not where:
        return set()
    quoted = set(re.findall(r"`([^`]+)`", where))
    bare = set(re.findall(r"[A-Za-z_]\w*", re.sub(r"`[^`]*`", " ", where)))
    return quoted | bare


def _read_one(path: Path, wanted: set[str] | None) -> tuple[pa.Table, list[str]]:
    """One file's table (only the ``wanted`` columns it has) and all its column names."""
    try:
        file = pq.ParquetFile(path)
        names = file.schema_arrow.names
        columns = None if wanted is None else [n for n in names if n in wanted]
        return file.read(columns=columns), names
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None


def _concat(tables: list[pa.Table], files: list[Path]) -> pa.Table:
    """One table over files whose columns differ: missing → null, int widens to float."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    seen: dict[str, tuple[pa.DataType, Path]] = {}
    for table, path in zip(tables, files, strict=True):
        for field in table.schema:
            first = seen.setdefault(field.name, (field.type, path))
            try:
                pa.unify_schemas(
                    [pa.schema([(field.name, first[0])]), pa.schema([field])],
                    promote_options="permissive",
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise ValueError(
                    f"column {field.name!r} is {first[0]} in {first[1]} but {field.type} "
                    f"in {path}; select other columns"
                ) from None
    raise ValueError(f"cannot combine the schemas of {len(files)} files")


def _unknown(requested: Iterable[str], available: set[str]) -> None:
    unknown = [c for c in requested if c not in available]
    if unknown:
        some = ", ".join(sorted(available)[:12])
        more = f", … ({len(available)} in all)" if len(available) > 12 else ""
        raise ValueError(f"unknown column(s) {unknown}; available include {some}{more}")


def _query(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    try:
        return frame.query(where)
    except Exception as err:  # pandas raises many kinds; the user wants one line
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        hint = " (quote dotted columns in backticks: `final.semseg.miou`)" if "." in where else ""
        raise ValueError(f"where {where!r}: {line}{hint}") from None


def _load(
    paths: PathLike | Sequence[PathLike],
    kind: str,
    where: str | None,
    columns: Sequence[str] | None,
) -> pd.DataFrame:
    files = _find_files(paths, kind)
    if isinstance(columns, str):
        columns = [columns]
    # Read only what is asked for, plus whatever the filter may need.
    wanted = None if columns is None else set(columns) | _where_names(where)
    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(files))) as pool:
        results = list(pool.map(lambda f: _read_one(f, wanted), files))
    available = {name for _, names in results for name in names}
    if columns is not None:
        _unknown(columns, available)
    table = _concat([t for t, _ in results], files)
    frame = table.to_pandas()
    if where:
        frame = _query(frame, where)
    if columns is not None:
        frame = frame[list(columns)]
    return frame.reset_index(drop=True)


def load_trials(
    paths: PathLike | Sequence[PathLike],
    where: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per trial from one or more results roots or study folders.

    Trials with different hyperparameters have different columns; absent ones are null.
    ``columns`` limits what is read (an unknown one is a ``ValueError``); ``where`` is a
    :meth:`pandas.DataFrame.query` expression (backticks around dotted names). A path that
    does not exist or holds no trials raises ``FileNotFoundError``.
    """
    return _load(paths, _TRIALS, where, columns)


def load_history(
    paths: PathLike | Sequence[PathLike],
    where: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Tidy rows ``(trial_id, epoch, split, task, metric, value, study, schema_version)``.

    Same paths, ``where`` and ``columns`` as :func:`load_trials`.
    """
    return _load(paths, _HISTORY, where, columns)
