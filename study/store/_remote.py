"""Results roots on an object store (``s3://bucket/results``, ``gs://…``): any filesystem
pyarrow opens from a URI.

A study's driver works on a local mirror of the root and pushes what it writes (trial and
history files, the spec, the Optuna journal) after every write, so the store holds
everything a reader or a resumed driver needs. Tune's experiments and the stages' model
files go to the URI directly: trials on other nodes write them. Readers pull the Parquet
files into the same kind of mirror and read it like a local root.

Credentials and endpoints come from the filesystem's own sources (for S3: the AWS
variables and files, ``AWS_ENDPOINT_URL`` for MinIO and other S3-compatible stores), so a
URI carries neither.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from study.errors import UserError, first_line
from study.store._atomic import TMP_SUFFIX, write_atomically
from study.store._files import KINDS, PARQUET_SUFFIX
from study.store._schema import SCHEMA_FILE

__all__ = [
    "DriverStore",
    "RemoteRoot",
    "absolute",
    "bind_driver",
    "driver_store",
    "push_driver",
    "exists",
    "holds_files",
    "is_uri",
    "join",
    "local_copy",
    "readable",
    "write_file",
]

PathLike = str | os.PathLike[str]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# What a mirror holds: the Parquet store, the spec, the study's schema and the Optuna
# journal. Tune writes its experiments to the URI itself, and trials write the stages'
# models there.
_STUDY_FILES = ("spec.yaml", "optuna.journal", SCHEMA_FILE)
_SETTLE_NS = 2_000_000_000
# Object stores have no folders to create before a write (creating one adds a marker).
_FLAT = ("s3", "gcs")


def is_uri(location: PathLike) -> bool:
    """Whether a results location is a URI (``s3://…``; ``file://`` too, opened by pyarrow
    like any other) rather than a path."""
    return _SCHEME.match(os.fspath(location)) is not None


def absolute(location: str) -> str:
    """A URI as it is; a local path made absolute (trial processes run elsewhere)."""
    return location if is_uri(location) else str(Path(location).resolve())


def join(location: str, *parts: str) -> str:
    """``location/part/…`` for a local path or a URI."""
    if is_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location).joinpath(*parts))


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    if "?" in uri or "#" in uri:
        raise UserError(
            f"results {uri}: expected a URI without a query or fragment; give the endpoint "
            "and credentials through the filesystem's own settings (e.g. AWS_ENDPOINT_URL)"
        )
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:
        raise UserError(f"results {uri}: cannot open it ({first_line(err)})") from None


def write_file(location: PathLike, write: Callable[[Path], object]) -> str:
    """Call ``write(path)`` and put the file at ``location``: renamed into place for a
    local path, uploaded whole for a URI (an object appears whole or not at all)."""
    if not is_uri(location):
        return str(write_atomically(Path(location), write))
    location = os.fspath(location)
    fs, path = _open(location)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder) / "file"
        write(tmp)
        _upload(tmp, fs, path)
    return location


def _upload(source: Path, fs: pafs.FileSystem, path: str) -> None:
    if fs.type_name not in _FLAT:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(str(source), path, destination_filesystem=fs)


def exists(location: PathLike) -> bool:
    """Whether a file is at ``location`` (a local path or a URI)."""
    if not is_uri(location):
        return Path(location).is_file()
    fs, path = _open(os.fspath(location))
    return fs.get_file_info(path).type == pafs.FileType.File


def holds_files(location: PathLike) -> bool:
    """Whether the folder at ``location`` (a local path or a URI) holds any file."""
    if not is_uri(location):
        folder = Path(location)
        return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))
    fs, path = _open(os.fspath(location))
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    return any(info.type == pafs.FileType.File for info in fs.get_file_info(selector))


@contextmanager
def local_copy(location: PathLike) -> Iterator[Path]:
    """A local path to read the file at ``location`` from (downloaded for a URI)."""
    if not is_uri(location):
        yield Path(location)
        return
    fs, path = _open(os.fspath(location))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder) / path.rsplit("/", 1)[-1]
        pafs.copy_files(path, str(tmp), source_filesystem=fs)
        yield tmp


def readable(location: PathLike) -> Path:
    """A results root or study folder to read: a local path as it is, a URI pulled into
    its local mirror first."""
    if is_uri(location):
        return RemoteRoot.open(os.fspath(location)).pull()
    return Path(location)


@dataclass(frozen=True)
class DriverStore:
    """Where this process's driver writes a study: its local root (for a root at a URI,
    the mirror) and what it calls after each write (the push)."""

    root: Path
    sync: Callable[[], object] | None = None


_DRIVERS: dict[str, DriverStore] = {}


def bind_driver(study: str, store: DriverStore) -> None:
    """Tune pickles its callbacks and searcher into the experiment; a driver that resumes
    it (maybe on another machine, with another mirror) rebinds them to ``store``."""
    _DRIVERS[study] = store


def driver_store(study: str) -> DriverStore | None:
    """The store this process's driver bound for ``study``, if any."""
    return _DRIVERS.get(study)


def push_driver(study: str) -> None:
    """Push what this process's driver of ``study`` wrote, if its root is at a URI."""
    bound = _DRIVERS.get(study)
    if bound is not None and bound.sync is not None:
        bound.sync()


def _cache_root() -> Path:
    base = os.environ.get("MTLSTUDY_CACHE") or Path.home() / ".cache" / "mtlstudy"
    return Path(base) / "stores"


@dataclass
class RemoteRoot:
    """A results root at a URI and its local mirror (under ``$MTLSTUDY_CACHE``, default
    ``~/.cache/mtlstudy``, one folder per URI)."""

    uri: str
    fs: pafs.FileSystem
    path: str
    local: Path
    #: The study a driver writes: of the other studies it needs only the trials (their
    #: single-task baselines), not their history.
    study: str | None = None
    # Each mirrored file's (size, mtime) when it was last pulled or pushed.
    _synced: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, uri: str, study: str | None = None) -> RemoteRoot:
        """The root at ``uri``; ``study`` names the study a driver writes, whose mirror
        is its own (a pull removes what the store lacks, so a reader's pull must never
        meet a driver's file that is written but not yet pushed)."""
        fs, path = _open(uri.rstrip("/"))
        digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
        mirror = "read" if study is None else f"study-{study}"
        local = _cache_root() / digest / mirror
        return cls(uri.rstrip("/"), fs, path.rstrip("/"), local, study)

    def _remote_files(self) -> dict[str, pafs.FileInfo]:
        """The root's files by their path relative to it; none if it does not exist yet."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as err:
            raise UserError(
                f"results {self.uri}: cannot list it ({first_line(err)}); expected a "
                "reachable store with the bucket created and credentials set"
            ) from None
        top = self.path.split("/")[0]
        flat = self.fs.type_name in _FLAT  # a bucket must exist; a folder is made on push
        if flat and not infos and self.fs.get_file_info(top).type == pafs.FileType.NotFound:
            raise UserError(
                f"results {self.uri}: there is no bucket {top!r}; expected an existing bucket "
                "(create it first)"
            )
        files = {}
        for info in infos:
            relative = info.path[len(self.path) :].lstrip("/")
            if info.type == pafs.FileType.File and _mirrored(relative) and self._wanted(relative):
                files[relative] = info
        return files

    def _wanted(self, relative: str) -> bool:
        parts = relative.split("/")
        return self.study is None or parts[0] == self.study or parts[-2:-1] == ["trials"]

    def pull(self) -> Path:
        """Bring the mirror up to date with the store: new and changed files are
        downloaded, files gone from the store are removed. Returns the mirror's root."""
        remote = self._remote_files()
        self.local.mkdir(parents=True, exist_ok=True)
        for relative, info in remote.items():
            target = self.local / relative
            stamp = (info.size, info.mtime_ns)
            if target.is_file() and _settled(target, stamp):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.pull{TMP_SUFFIX}")
            try:
                pafs.copy_files(info.path, str(tmp), source_filesystem=self.fs)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                raise UserError(
                    f"results {self.uri}: cannot read {relative} ({first_line(err)})"
                ) from None
            os.utime(tmp, ns=(info.mtime_ns, info.mtime_ns))  # its stamp says "as pulled"
            os.replace(tmp, target)
            self._synced[relative] = stamp
        for target in _local_files(self.local, self.local):
            relative = target.relative_to(self.local).as_posix()
            if relative not in remote:
                target.unlink()
                self._synced.pop(relative, None)
        return self.local

    def push(self, study: str) -> int:
        """Upload the files of one study's mirror that changed since they were last
        pulled or pushed; returns how many."""
        uploaded = 0
        for source in _local_files(self.local, self.local / study):
            relative = source.relative_to(self.local).as_posix()
            stamp = _stamp(source)
            if self._synced.get(relative) == stamp:
                continue
            target = f"{self.path}/{relative}"
            try:
                _upload(source, self.fs, target)
            except OSError as err:
                raise UserError(
                    f"results {self.uri}: cannot write {relative} ({first_line(err)})"
                ) from None
            self._synced[relative] = stamp
            uploaded += 1
        return uploaded


def _mirrored(relative: str) -> bool:
    *folders, name = relative.split("/")
    if name.startswith(".") or any(f.startswith(".") for f in folders):
        return False
    in_store = bool(folders) and folders[-1] in KINDS and name.endswith(PARQUET_SUFFIX)
    return in_store or name in _STUDY_FILES


def _local_files(root: Path, folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [
        p for p in folder.rglob("*") if p.is_file() and _mirrored(p.relative_to(root).as_posix())
    ]


def _settled(local: Path, stamp: tuple[int, int]) -> bool:
    """Whether a pulled copy is still the object with this (size, mtime) stamp. Object
    stores keep mtimes to the second, so a rewrite of the same size within the second
    the copy was pulled in would look unchanged: such a copy is fetched again."""
    stat = local.stat()
    pulled_ns = stat.st_ctime_ns  # set by the pull's rename, on this machine's clock
    return (stat.st_size, stat.st_mtime_ns) == stamp and pulled_ns - stamp[1] > _SETTLE_NS


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
