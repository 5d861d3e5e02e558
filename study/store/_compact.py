"""Compaction: a study's per-trial files merged into one large file per kind.

``compact(study)`` reads every file of ``trials/`` (and of ``history/``) that is not yet
merged, writes their rows, sorted (trials by ``trial_id``; history by split, task, metric, trial
and epoch), into ``compacted-<stamp>.parquet`` under a hidden name, and renames it
into place: that rename is the commit (see :mod:`study.store._parts`). Only then are the
merged files deleted, each only if its bytes are still the ones merged: a trial that reports
again meanwhile keeps its new file, which readers prefer to the compacted rows. A rerun after
a crash finishes the deletions; a compaction with nothing new to merge changes nothing.

A study at a URI is compacted through a local mirror: the compacted file is uploaded (an
object appears whole), then the merged objects are deleted when their size and time are
still those that were pulled.

One compaction of a study runs at a time on a machine (an advisory lock in the study's
folder or mirror); a second one is refused in one line. Compactions of one study at a URI
from two machines are not guarded.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.errors import UserError
from study.store._atomic import TMP_SUFFIX
from study.store._files import KINDS, PARQUET_SUFFIX, TRIALS_DIR, PathLike, _study_files
from study.store._parts import PART_PREFIX, REPLACES_KEY, Identity, Listing, digest, list_kind
from study.store._remote import RemoteRoot, _upload, is_uri
from study.store._schema import HISTORY_SCHEMA, read_schema

__all__ = ["COMPACT_LOCK", "CompactResult", "compact"]

#: In a study folder (or a URI study's local mirror): held while a compaction runs.
COMPACT_LOCK = ".compact.lock"

#: Rows per row group: a whole study's trials in one or a few; history in groups of about
#: 1 MiB, sorted by split, task and metric, then trial and epoch, so that a filter on what
#: a history row measures (``metric == 'miou'``), or on a trial, skips groups by their
#: statistics: most queries of the history read one metric of many trials.
ROW_GROUP_ROWS = {"trials": 20_000, "history": 100_000}
_SORT = {
    "trials": ["trial_id"],
    "history": ["split", "task", "metric", "trial_id", "epoch"],
}


@dataclass
class CompactResult:
    """What one compaction did, per kind (``trials``, ``history``)."""

    study: str
    #: Files merged into a new compacted file.
    merged: dict[str, int] = field(default_factory=dict)
    #: Rows in the new compacted file (0: nothing new, no file written).
    rows: dict[str, int] = field(default_factory=dict)
    #: Merged files deleted (this run's and those an interrupted run left).
    deleted: dict[str, int] = field(default_factory=dict)
    #: Files kept because they were rewritten after they were read (newer rows).
    kept: dict[str, int] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        parts = []
        for kind in KINDS:
            text = f"{kind}: {self.merged.get(kind, 0)} files → {self.rows.get(kind, 0)} rows"
            if self.kept.get(kind):
                text += f" ({self.kept[kind]} rewritten meanwhile, kept)"
            parts.append(text)
        return f"{self.study}: " + "; ".join(parts)


# ---------------------------------------------------------------------------- where files go


class _LocalStore:
    """A study folder on this machine's filesystem."""

    def commit(self, tmp: Path, target: Path) -> None:
        os.replace(tmp, target)

    def remove(self, path: Path, expected: Identity) -> bool:
        """Delete ``path`` if its bytes are still ``expected``; False if it was rewritten.
        The file is first renamed away, so a rewrite racing the check is never deleted."""
        hidden = path.with_name(f".{path.name}.{uuid.uuid4().hex}.compact{TMP_SUFFIX}")
        try:
            os.rename(path, hidden)
        except FileNotFoundError:
            return True
        data = hidden.read_bytes()
        if (len(data), digest(data)) == expected:
            hidden.unlink()
            return True
        try:
            os.link(hidden, path)  # back, unless an even newer write took the name
        except FileExistsError:
            pass
        hidden.unlink()
        return False


@dataclass
class _RemoteStore(_LocalStore):
    """A study at a URI, through its local mirror."""

    remote: RemoteRoot
    stamps: dict[str, tuple[int, int]]

    def _key(self, path: Path) -> str:
        return path.relative_to(self.remote.local).as_posix()

    def commit(self, tmp: Path, target: Path) -> None:
        _upload(tmp, self.remote.fs, f"{self.remote.path}/{self._key(target)}")
        os.replace(tmp, target)

    def remove(self, path: Path, expected: Identity) -> bool:
        key = self._key(path)
        info = self.remote.fs.get_file_info(f"{self.remote.path}/{key}")
        if info.type == pafs.FileType.File:
            if self.stamps.get(key) != (info.size, info.mtime_ns):
                return False  # written again since the pull: newer rows
            self.remote.fs.delete_file(info.path)
        path.unlink(missing_ok=True)
        return True


# ---------------------------------------------------------------------------- merging


def _target_schema(study_dir: Path, kind: str, tables: list[pa.Table]) -> pa.Schema:
    """The study's schema (extra columns of older files after it); without one, the
    files' unified schema."""
    declared = read_schema(study_dir) if kind == TRIALS_DIR else HISTORY_SCHEMA
    schemas = [t.schema.remove_metadata() for t in tables]
    if declared is None:
        return pa.unify_schemas(schemas, promote_options="permissive")
    extra: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            if f.name not in declared.names and f.name not in extra and f.type != pa.null():
                extra[f.name] = f.type
    return pa.schema([*declared, *extra.items()])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in table.column_names:
            column = table[f.name]
            columns.append(column if column.type == f.type else column.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _merge(
    study_dir: Path, kind: str, sources: dict[Path, bytes], superseded: set[str]
) -> pa.Table:
    tables = []
    for path, data in sources.items():
        table = pq.read_table(pa.BufferReader(data))
        if path.name.startswith(PART_PREFIX) and superseded:
            # A trial rewritten since the last compaction: its own file's rows win.
            drop = pc.is_in(table["trial_id"], pa.array(sorted(superseded)))
            table = table.filter(pc.invert(drop))
        tables.append(table)
    schema = _target_schema(study_dir, kind, tables)
    try:
        merged = pa.concat_tables([_conform(t, schema) for t in tables])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # An old file's values do not fit the declared types: keep them as they are.
        schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
        merged = pa.concat_tables([_conform(t, schema) for t in tables])
    keys = [k for k in _SORT[kind] if k in merged.column_names]
    return merged.sort_by([(k, "ascending") for k in keys]) if keys else merged


def _compact_kind(study_dir: Path, kind: str, store: _LocalStore, result: CompactResult) -> None:
    listing: Listing = list_kind(_study_files(study_dir, kind))
    deleted = kept = 0
    # An interrupted compaction's leftovers first: their rows are in a compacted file.
    for path, expected in listing.covered.items():
        deleted += store.remove(path, expected)
    for part in listing.replaced_parts:
        deleted += store.remove(part, _identity(part))
    sources = [*listing.plain, *listing.parts]
    if not listing.plain and len(listing.parts) <= 1:
        result.merged[kind], result.rows[kind] = 0, 0
        result.deleted[kind], result.kept[kind] = deleted, 0
        return
    data = {path: path.read_bytes() for path in sources}  # what is merged, byte for byte
    table = _merge(study_dir, kind, data, listing.superseded)
    replaces = {p.name: [len(b), digest(b)] for p, b in data.items()}
    schema = table.schema.with_metadata({REPLACES_KEY: json.dumps(replaces).encode()})
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = study_dir / kind / f"{PART_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}{PARQUET_SUFFIX}"

    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        pq.write_table(
            table.replace_schema_metadata(schema.metadata),
            tmp,
            row_group_size=ROW_GROUP_ROWS[kind],
            compression="zstd",
        )
        store.commit(tmp, target)  # the commit: from now on readers skip the sources
    finally:
        tmp.unlink(missing_ok=True)
    for path, bytes_ in data.items():
        removed = store.remove(path, (len(bytes_), digest(bytes_)))
        deleted += removed
        kept += not removed
    result.merged[kind], result.rows[kind] = len(sources), table.num_rows
    result.deleted[kind], result.kept[kind] = deleted, kept
    result.written[kind] = str(target)


def _identity(path: Path) -> Identity:
    data = path.read_bytes()
    return len(data), digest(data)


def compact(location: PathLike) -> CompactResult:
    """Merge the per-trial files of the study at ``location`` (a study folder, or a URI
    ``s3://bucket/results/<study>``) into one compacted file per kind; see the module."""
    text = os.fspath(location)
    if is_uri(text):
        remote = RemoteRoot.open(text.rstrip("/"))
        local = remote.pull()
        stamps = {
            f.relative_to(local).as_posix(): (s.st_size, s.st_mtime_ns)
            for f in local.rglob(f"*{PARQUET_SUFFIX}")
            if (s := f.stat())
        }
        name = text.rstrip("/").rsplit("/", 1)[-1]
        return _compact_dir(local, name, _RemoteStore(remote, stamps))
    study_dir = Path(text)
    if not any((study_dir / k).is_dir() for k in KINDS):
        raise UserError(
            f"compact: {study_dir} is not a study folder; expected a folder with "
            f"trials/*{PARQUET_SUFFIX} (RESULTS/STUDY)"
        )
    return _compact_dir(study_dir, study_dir.resolve().name, _LocalStore())


def _compact_dir(study_dir: Path, name: str, store: _LocalStore) -> CompactResult:
    result = CompactResult(study=name)
    if not any((study_dir / k).is_dir() for k in KINDS):
        raise UserError(f"compact: {name} holds no trials; expected RESULTS/STUDY")
    with _only_compaction(study_dir, name):
        for kind in KINDS:
            if (study_dir / kind).is_dir():
                _compact_kind(study_dir, kind, store, result)
    return result


@contextmanager
def _only_compaction(study_dir: Path, name: str) -> Iterator[None]:
    """Hold the study's compaction lock (an advisory lock on ``.compact.lock``): two
    compactions of one study at once would both merge the same files."""
    with open(study_dir / COMPACT_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"compact: another compaction of {name} is running on this machine; "
                "run it again once that one ends"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
