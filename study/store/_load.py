"""Reading the store as one pyarrow dataset, with the unified schema of its files."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.store._files import HISTORY_DIR, TRIALS_DIR, Kind, PathLike, _unknown, study_listings
from study.store._parts import Listing
from study.store._where import where_expression

__all__ = ["load", "load_history", "load_table", "load_trials"]

_SCHEMA_THREADS = 16

# ---------------------------------------------------------------------------- schemas


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None


@dataclass(frozen=True)
class _Schemas:
    """The columns of a set of files: their unified types, and the columns whose types
    cannot be unified (with the two files that disagree)."""

    types: dict[str, pa.DataType]
    conflicts: dict[str, str]

    @property
    def names(self) -> list[str]:
        return list(self.types)

    def schema(self, names: Iterable[str] | None = None) -> pa.Schema:
        wanted = self.types if names is None else set(names)
        clash = [n for n in wanted if n in self.conflicts]
        if clash:
            hint = " (leave it out with columns=...)" if names is None else ""
            raise ValueError(f"{self.conflicts[clash[0]]}{hint}")
        return pa.schema([(n, t) for n, t in self.types.items() if n in wanted])


# The unified schemas of the last few sets of files, keyed by each file's identity: the
# store never edits a file in place (a rewrite is a new file renamed over the old one), so
# a file with the same inode, size and modification time has the same footer.
_SCHEMA_CACHE: OrderedDict[tuple[tuple[str, int, int, int], ...], _Schemas] = OrderedDict()
_SCHEMA_CACHE_SIZE = 8


def _unify(files: list[Path]) -> _Schemas:
    key = tuple(
        (str(f), s.st_ino, s.st_size, s.st_mtime_ns) for f, s in ((f, f.stat()) for f in files)
    )
    cached = _SCHEMA_CACHE.get(key)
    if cached is None:
        cached = _SCHEMA_CACHE[key] = _inspect(files)
        while len(_SCHEMA_CACHE) > _SCHEMA_CACHE_SIZE:
            _SCHEMA_CACHE.popitem(last=False)
    _SCHEMA_CACHE.move_to_end(key)
    return cached


def _inspect(files: list[Path]) -> _Schemas:
    paths = [str(f) for f in files]
    try:
        # Every file's footer, unified in Arrow's C++ (several times faster than one
        # pq.read_schema per file from Python).
        factory = ds.FileSystemDatasetFactory(pafs.LocalFileSystem(), paths, ds.ParquetFileFormat())
        unified = factory.inspect(promote_options="permissive", fragments=None)
        return _Schemas({f.name: f.type for f in unified}, {})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError):
        pass  # an unreadable file, or columns whose types differ: find which, file by file
    return _unify_each(files)


def _unify_each(files: list[Path]) -> _Schemas:
    if len(files) == 1:
        schemas = [_read_schema(files[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(_SCHEMA_THREADS, len(files))) as pool:
            schemas = list(pool.map(_read_schema, files))
    distinct: dict[pa.Schema, Path] = {}  # most files of a store share a few schemas
    for schema, path in zip(schemas, files, strict=True):
        distinct.setdefault(schema.remove_metadata(), path)
    # Column by column: keep what unifies, remember what does not and where.
    types: dict[str, pa.DataType] = {}
    first: dict[str, Path] = {}
    conflicts: dict[str, str] = {}
    for schema, path in distinct.items():
        for field in schema:
            name = field.name
            if name in conflicts:
                continue
            if name not in types:
                types[name], first[name] = field.type, path
                continue
            try:
                merged = pa.unify_schemas(
                    [pa.schema([(name, types[name])]), pa.schema([field])],
                    promote_options="permissive",
                )
                types[name] = merged.field(name).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                conflicts[name] = (
                    f"column {name!r} is {types[name]} in {first[name]} but {field.type} in {path}"
                )
    return _Schemas(types, conflicts)


# ---------------------------------------------------------------------------- loading


def _scan(dataset: ds.Dataset, columns: list[str] | None, filter: pc.Expression | None) -> pa.Table:
    """The one place the store's data is read: projection and filter pushed to the scan."""
    return dataset.to_table(columns=columns, filter=filter)


_DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


_LOCAL = pafs.LocalFileSystem()


def _row_groups(path: Path, schema: pa.Schema, filter: pc.Expression) -> list[int]:
    """The row groups of ``path`` whose statistics leave room for a row that ``filter``
    keeps (all of them when the statistics cannot say)."""
    fragment = ds.ParquetFileFormat().make_fragment(str(path), filesystem=_LOCAL)
    try:
        return [group.id for group in fragment.subset(filter, schema=schema).row_groups]
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return [group.id for group in fragment.row_groups]


def _dataset(
    files: list[Path],
    schema: pa.Schema,
    filter: pc.Expression | None = None,
    large: Iterable[Path] = (),
) -> ds.Dataset:
    """The files as one dataset of ``schema``, string columns read as dictionaries.

    The store's string columns (split, task, metric, status, method, study, trial_id, …)
    repeat a few values; Parquet keeps them dictionary-encoded and reading them as Arrow
    dictionaries skips building millions of strings, most of which a filter drops.

    Arrow does not compare a dictionary column with a file's statistics, so the row groups
    of the ``large`` files (compacted ones, sorted) that ``filter`` rules out by their
    statistics are chosen here, against the plain schema, and never read.
    """
    strings = [f.name for f in schema if _is_string(f.type)]
    physical = pa.schema([(f.name, _DICTIONARY) if f.name in strings else f for f in schema])
    read = ds.ParquetReadOptions(dictionary_columns=strings)
    form = ds.ParquetFileFormat(read_options=read)
    if filter is None:
        return ds.dataset([str(f) for f in files], schema=physical, format=form)
    pruned = set(large)
    fragments = [
        form.make_fragment(
            str(f),
            filesystem=_LOCAL,
            row_groups=_row_groups(f, schema, filter) if f in pruned else None,
        )
        for f in files
    ]
    return ds.FileSystemDataset(fragments, physical, form, _LOCAL)


def _strings(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Dictionary columns of ``table`` back to the plain strings ``schema`` says they are."""
    fields = [
        schema.field(f.name) if pa.types.is_dictionary(f.type) and f.name in schema.names else f
        for f in table.schema
    ]
    target = pa.schema(fields)
    return table if target.equals(table.schema) else table.cast(target)


def _superseded(listings: dict[Path, Listing]) -> pc.Expression | None:
    """Rows of compacted files whose trial has a newer file of its own (written after the
    compaction began): those rows are not read, the newer file is."""
    terms = [
        (pc.field("study") == study.name) & pc.field("trial_id").isin(sorted(ids))
        for study, listing in listings.items()
        if (ids := listing.superseded)
    ]
    if not terms:
        return None
    either = terms[0]
    for term in terms[1:]:
        either = either | term
    return either


def load_table(
    paths: PathLike | Sequence[PathLike],
    kind: Kind = "trials",
    where: str | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """As :func:`load`, but an Arrow table (no conversion to pandas)."""
    listings = study_listings(paths, kind)
    files = [f for listing in listings.values() for f in listing.files]
    if isinstance(columns, str):
        columns = [columns]
    schemas = _unify(files)
    if columns is not None:
        columns = list(dict.fromkeys(columns))
        _unknown(columns, schemas.names)
    filter: pc.Expression | None = None
    needed: list[str] | None = None if columns is None else list(columns)
    if where is not None and where.strip():
        filter, used = where_expression(where, schemas.types)
        if needed is not None:
            needed += [c for c in used if c not in needed]
    superseded = _superseded(listings)
    if superseded is not None and needed is not None:
        needed += [c for c in ("study", "trial_id") if c not in needed]
    schema = schemas.schema(needed)
    try:
        parts = [f for listing in listings.values() for f in listing.parts]
        if superseded is None:
            table = _scan(_dataset(files, schema, filter, parts), columns, filter)
        else:
            # Per-trial files as they are; compacted files less the rows they supersede.
            plain = [f for listing in listings.values() for f in listing.plain]
            kept = ~superseded if filter is None else filter & ~superseded
            tables = [_scan(_dataset(parts, schema, filter, parts), columns, kept)]
            if plain:
                tables.append(_scan(_dataset(plain, schema, filter), columns, filter))
            table = pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"where {where!r}: {line}" if where else line) from None
    return _strings(table, schema)


def load(
    paths: PathLike | Sequence[PathLike],
    kind: Kind = "trials",
    where: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Trials (one row each) or tidy history rows from one or more results roots or
    study folders, as one DataFrame with a fresh ``RangeIndex``.

    ``columns`` limits what is read (an unknown one is a ``ValueError`` that lists some
    available ones); ``where`` filters rows during the scan (see the module's doc for the
    language; dotted names go in backticks). Columns absent from some files are null
    there; an int column that is a float elsewhere reads as float. A path that does not
    exist or holds no ``kind`` files raises ``FileNotFoundError``.
    """
    return load_table(paths, kind, where, columns).to_pandas()


def load_trials(
    paths: PathLike | Sequence[PathLike],
    where: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per trial; ``load(paths, "trials", where, columns)``."""
    return load(paths, TRIALS_DIR, where, columns)


def load_history(
    paths: PathLike | Sequence[PathLike],
    where: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Tidy rows ``(trial_id, epoch, split, task, metric, value, study, schema_version)``;
    ``load(paths, "history", where, columns)``."""
    return load(paths, HISTORY_DIR, where, columns)
